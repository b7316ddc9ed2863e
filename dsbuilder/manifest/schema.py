"""The manifest schemas: the single source of truth for every table's columns.

``manifests/*.md`` documents each table for readers and points here. Bump :data:`SCHEMA_VERSION` on any
change a reader would notice (a column added, removed, renamed or retyped).

Every table carries ``schema_version``, its own id, the ids of its parents, ``source_id``,
``stage_params_hash`` and ``dsbuilder_version``. Times are float64 seconds plus int64 frame indices.
"""

from __future__ import annotations

SCHEMA_VERSION = 3  # 2: AU, FACS and FER/AU agreement columns in labels / label_clips (and the clips table)
# 3: Light-ASD logits in speech (asd_logit_mean) and speaking_frames (asd_logit); clips cut from
#    tracks at emotion changes and speech bounds (clip_index, crop_start/end_frame/_s, ended_by)


def _common(pa):
    return [
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("stage_params_hash", pa.string(), nullable=False),
        pa.field("dsbuilder_version", pa.string(), nullable=False),
    ]


def schemas() -> dict:
    """Table name -> (pyarrow schema, id column). Built lazily so importing this is cheap."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    sources = pa.schema([
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # photo | video
        pa.field("status", pa.string(), nullable=False),  # ok | rejected (see rejections)
        pa.field("person_ids", pa.list_(pa.string()), nullable=False),
        pa.field("request_ids", pa.list_(pa.string()), nullable=False),  # parents: recipe entries
        pa.field("request", pa.string()),  # the recipe entry that first led here
        pa.field("url", pa.string()),
        pa.field("webpage_url", pa.string()),
        pa.field("extractor", pa.string()),
        pa.field("media_id", pa.string()),
        pa.field("title", pa.string()),
        pa.field("uploader", pa.string()),
        pa.field("channel", pa.string()),
        pa.field("licence", pa.string()),
        pa.field("licence_raw", pa.string()),
        pa.field("upload_date", pa.string()),  # YYYY-MM-DD as the site states it
        pa.field("fetched_at", ts),
        pa.field("sha256", pa.string()),
        pa.field("bytes", pa.int64()),
        pa.field("duration", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("fps", pa.float64()),
        pa.field("n_frames", pa.int64()),
        pa.field("video_codec", pa.string()),
        pa.field("has_audio", pa.bool_()),
        pa.field("local_path", pa.string()),  # relative to the workspace root
        pa.field("info_json_path", pa.string()),  # yt-dlp's info.json, relative
        pa.field("tool_versions", pa.string()),  # JSON: yt-dlp, requests, PyAV ...
        *_common(pa),
    ])
    shots = pa.schema([
        pa.field("shot_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),  # parent: the video
        pa.field("shot_index", pa.int32(), nullable=False),
        pa.field("start_frame", pa.int64(), nullable=False),  # inclusive
        pa.field("end_frame", pa.int64(), nullable=False),  # exclusive
        pa.field("start_s", pa.float64(), nullable=False),  # presentation time of start_frame
        pa.field("end_s", pa.float64(), nullable=False),  # presentation time of end_frame (or EOF)
        pa.field("n_frames", pa.int64(), nullable=False),
        pa.field("detector", pa.string(), nullable=False),
        *_common(pa),
    ])
    rejections = pa.schema([
        pa.field("rejection_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),  # parent: what was dropped
        pa.field("source_id", pa.string()),  # null when no content was ever obtained
        pa.field("person_id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),  # a code, see manifests/rejections.md
        pa.field("detail", pa.string(), nullable=False),
        pa.field("at", ts, nullable=False),
        *_common(pa),
    ])
    box = pa.list_(pa.float32(), 4)  # left, top, right, bottom in source-frame pixels
    lmk = pa.list_(pa.float32(), 136)  # 68 (x, y) pairs, iBUG 300-W order, source-frame pixels
    emb = pa.list_(pa.float32(), 128)
    faces_dictionary = pa.schema([
        pa.field("face_id", pa.string(), nullable=False),
        pa.field("person_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),  # parent: the photo (or video)
        pa.field("origin", pa.string(), nullable=False),  # photo | video_bootstrap
        pa.field("t", pa.float64()),  # video_bootstrap: time of the frame
        pa.field("bbox", box, nullable=False),
        pa.field("landmarks", lmk),
        pa.field("embedding", emb),
        pa.field("det_score", pa.float32()),
        pa.field("face_px", pa.float32()),  # sqrt of the box area
        pa.field("sharpness", pa.float32()),
        pa.field("yaw", pa.float32()),
        pa.field("pitch", pa.float32()),
        pa.field("n_faces_in_photo", pa.int32()),
        pa.field("distance_to_identity", pa.float32()),  # to the kept cluster's mean
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("reason", pa.string()),  # rejection code when not kept
        *_common(pa),
    ])
    people = pa.schema([
        pa.field("person_id", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("source_id", pa.string()),  # not per source: null
        pa.field("source_ids", pa.list_(pa.string()), nullable=False),  # parents: kept photos
        pa.field("n_faces", pa.int32(), nullable=False),
        pa.field("n_kept", pa.int32(), nullable=False),
        pa.field("n_bootstrapped", pa.int32(), nullable=False),
        pa.field("threshold", pa.float32()),  # fitted match threshold (null: no kept face)
        pa.field("threshold_method", pa.string()),
        pa.field("est_far", pa.float32()),  # estimated false-accept rate at the threshold
        pa.field("est_frr", pa.float32()),  # estimated false-reject rate at the threshold
        pa.field("n_genuine_pairs", pa.int32()),
        pa.field("n_impostor_pairs", pa.int32()),
        *_common(pa),
    ])
    tracks = pa.schema([
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),  # parent: the video
        pa.field("shot_id", pa.string(), nullable=False),  # parent: the shot
        pa.field("person_id", pa.string()),  # null: nobody in the recipe
        pa.field("distance", pa.float32()),  # median identity distance to person_id's dictionary
        pa.field("threshold", pa.float32()),  # the threshold it was judged by
        pa.field("second_person_id", pa.string()),  # runner-up identity, for audits
        pa.field("second_distance", pa.float32()),
        pa.field("start_frame", pa.int64(), nullable=False),
        pa.field("end_frame", pa.int64(), nullable=False),  # exclusive
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("n_frames", pa.int64(), nullable=False),
        pa.field("n_detections", pa.int32(), nullable=False),
        pa.field("n_embeddings", pa.int32(), nullable=False),
        pa.field("mean_face_px", pa.float32(), nullable=False),
        pa.field("median_yaw", pa.float32()),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("reason", pa.string()),  # rejection code when not kept
        pa.field("crop_path", pa.string()),  # aligned face clip (mp4), relative; kept tracks only
        pa.field("crop_sha256", pa.string()),
        pa.field("audio_path", pa.string()),  # 16 kHz mono wav, same span
        pa.field("audio_sha256", pa.string()),
        *_common(pa),
    ])
    frames = pa.schema([
        pa.field("frame_id", pa.string(), nullable=False),  # <track_id>-f<frame_index>
        pa.field("track_id", pa.string(), nullable=False),  # parent
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("frame_index", pa.int64(), nullable=False),  # in the source video
        pa.field("t", pa.float64(), nullable=False),  # presentation time in the source video
        pa.field("crop_frame", pa.int64(), nullable=False),  # index in the crop clip
        pa.field("bbox", box, nullable=False),
        pa.field("landmarks", lmk, nullable=False),
        pa.field("detected", pa.bool_(), nullable=False),  # a detection (else tracked)
        pa.field("yaw", pa.float32()),
        pa.field("pitch", pa.float32()),
        pa.field("mouth_aperture", pa.float32()),  # inner-lip gap / mouth width
        *_common(pa),
    ])
    return {
        "sources": (sources, "source_id"),
        "shots": (shots, "shot_id"),
        "rejections": (rejections, "rejection_id"),
        "faces_dictionary": (faces_dictionary, "face_id"),
        "people": (people, "person_id"),
        "tracks": (tracks, "track_id"),
        "frames": (frames, "frame_id"),
        **_speakers_schemas(pa, ts),
        **_label_schemas(pa),
        **_segments_schema(pa),
        **_clips_schema(pa),
    }


#: Tables written as a folder of parts (one file per stage), the others as one file.
PARTITIONED = {"rejections"}

#: Foreign keys checked by ``dsbuilder manifest validate``: (table, column) -> referenced table.
REFERENCES = {
    ("shots", "source_id"): "sources",
    ("rejections", "source_id"): "sources",
    ("faces_dictionary", "source_id"): "sources",
    ("faces_dictionary", "person_id"): "people",
    ("tracks", "source_id"): "sources",
    ("tracks", "shot_id"): "shots",
    ("tracks", "person_id"): "people",
    ("frames", "track_id"): "tracks",
    ("frames", "source_id"): "sources",
    ("speech", "track_id"): "tracks",
    ("speech", "source_id"): "sources",
    ("speech", "person_id"): "people",
    ("speaking_frames", "speech_id"): "speech",
    ("speaking_frames", "track_id"): "tracks",
    ("speaking_frames", "frame_id"): "frames",
    ("speaking_frames", "source_id"): "sources",
    ("vad_segments", "source_id"): "sources",
    ("labels", "track_id"): "tracks",
    ("labels", "frame_id"): "frames",
    ("labels", "source_id"): "sources",
    ("label_clips", "track_id"): "tracks",
    ("label_clips", "source_id"): "sources",
    ("label_clips", "person_id"): "people",
    ("segments", "track_id"): "tracks",
    ("segments", "source_id"): "sources",
    ("segments", "person_id"): "people",
    ("clips", "track_id"): "tracks",
    ("clips", "source_id"): "sources",
    ("clips", "shot_id"): "shots",
    ("clips", "person_id"): "people",
}

#: Rejection reason codes per stage. Validation rejects any other code.
#: Allowed rejection reason codes per stage: each stage's ``SPEC.reasons`` and the executors' own
#: (``internal_error``, ``worker_lost``), read from the specs on first use.
from dsbuilder.stages import REASONS  # noqa: E402,F401


def _speakers_schemas(pa, ts) -> dict:
    """Tables of the ``speakers`` stage (manifests/speech.md)."""
    speech = pa.schema([
        pa.field("speech_id", pa.string(), nullable=False),  # <track_id>-s<segment_index>
        pa.field("track_id", pa.string(), nullable=False),  # parent: the face track
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("person_id", pa.string()),
        pa.field("segment_index", pa.int32(), nullable=False),
        pa.field("start_frame", pa.int64(), nullable=False),
        pa.field("end_frame", pa.int64(), nullable=False),  # exclusive
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("n_frames", pa.int64(), nullable=False),
        pa.field("vad_ratio", pa.float32(), nullable=False),  # speech fraction of the segment
        pa.field("av_offset_frames", pa.int32(), nullable=False),  # track level; + = audio later
        pa.field("sync_confidence", pa.float32(), nullable=False),  # track level, median - min
        pa.field("segment_confidence", pa.float32()),  # mean per-frame confidence in the segment
        pa.field("mouth_motion", pa.float32()),  # track level
        pa.field("valid_ratio", pa.float32()),  # frames with a visible mouth
        pa.field("speaking", pa.bool_(), nullable=False),
        pa.field("reason", pa.string()),  # rejection code when not speaking
        pa.field("voice_distance", pa.float32()),  # to the person's voice consensus
        pa.field("voice_model", pa.string()),
        pa.field("asd_logit_mean", pa.float32()),  # Light-ASD: mean speaking logit (null: not run)
        pa.field("scorer", pa.string(), nullable=False),  # light-asd, correlation or onnx:<file>
        pa.field("gates", pa.string(), nullable=False),  # JSON: the decision rule applied
        *_common(pa),
    ])
    speaking_frames = pa.schema([
        pa.field("frame_id", pa.string(), nullable=False),  # = frames.frame_id
        pa.field("speech_id", pa.string(), nullable=False),  # parent: the segment
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("frame_index", pa.int64(), nullable=False),
        pa.field("t", pa.float64(), nullable=False),
        pa.field("inner_gap", pa.float32()),  # inner-lip gap / face height
        pa.field("outer_height", pa.float32()),  # outer-lip height / face height
        pa.field("lip_width", pa.float32()),  # mouth width / outer-eye distance
        pa.field("mouth_visible", pa.bool_(), nullable=False),
        pa.field("turned_away", pa.bool_(), nullable=False),
        pa.field("vad", pa.bool_(), nullable=False),
        pa.field("sync_confidence", pa.float32()),  # per-frame, at the track offset
        pa.field("asd_logit", pa.float32()),  # Light-ASD's speaking logit (null: not run)
        pa.field("speaking_prob", pa.float32(), nullable=False),
        *_common(pa),
    ])
    vad_segments = pa.schema([
        pa.field("vad_segment_id", pa.string(), nullable=False),  # <source_id>-vad<index>
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("segment_index", pa.int32(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("speech", pa.bool_(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        *_common(pa),
    ])
    return {"speech": (speech, "speech_id"), "speaking_frames": (speaking_frames, "frame_id"),
            "vad_segments": (vad_segments, "vad_segment_id")}


def _label_schemas(pa) -> dict:
    """Tables of the ``label`` stage (manifests/labels.md).

    Class order of the FER probability lists: angry, disgust, fear, happy, sad, surprise, neutral
    (dsbuilder.labels.fer.FER_CLASSES); of ``aus_geom``: dsbuilder.labels.au.AU_GEOM_NAMES (AU01_geom
    ... AU45_geom: geometric proxies, not a learned AU detector); of the AU emotion scores:
    dsbuilder.labels.facs.EMOTIONS (happiness, sadness, surprise, fear, anger, disgust, contempt).
    Each labeller can be switched off in the recipe; its columns are then null."""
    probs = pa.list_(pa.float32(), 7)
    aus_geom = pa.list_(pa.float32(), 14)
    emo = pa.list_(pa.float32(), 7)
    labels = pa.schema([
        pa.field("label_id", pa.string(), nullable=False),  # = frames.frame_id
        pa.field("frame_id", pa.string(), nullable=False),  # parent: the frame
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("person_id", pa.string()),
        pa.field("frame_index", pa.int64(), nullable=False),  # in the source video
        pa.field("crop_frame", pa.int64(), nullable=False),  # in the crop clip
        pa.field("t", pa.float64(), nullable=False),
        pa.field("fer_probs", probs),  # per frame, FER_CLASSES order
        pa.field("fer_probs_smoothed", probs),  # over time (smoothing param)
        pa.field("fer_argmax", pa.string()),  # class name of max fer_probs
        pa.field("fer_confidence", pa.float32()),  # max of fer_probs
        pa.field("valence", pa.float32()),  # from fer_probs, [-1, 1]
        pa.field("arousal", pa.float32()),
        pa.field("valence_smoothed", pa.float32()),  # from fer_probs_smoothed
        pa.field("arousal_smoothed", pa.float32()),
        pa.field("fer_model", pa.string()),
        pa.field("aus_geom", aus_geom),  # 0-1 above the track's neutral baseline; NaN: bad shape
        pa.field("au_source", pa.string()),  # AUs scored below: geom | openface | pyfeat
        pa.field("aus_imported", pa.list_(pa.float32())),  # 0-1, label_clips.au_imported_names
        pa.field("au_emotion_scores", emo),  # cos of the principal angle per FACS emotion
        pa.field("au_emotion", pa.string()),  # best FACS emotion, or neutral
        *_common(pa),
    ])
    label_clips = pa.schema([
        pa.field("track_id", pa.string(), nullable=False),  # parent: the track (one row each)
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("person_id", pa.string()),
        pa.field("n_frames", pa.int64(), nullable=False),  # labelled frames
        pa.field("mean_probs", probs),  # mean of per-frame fer_probs
        pa.field("argmax", pa.string()),  # class of max mean_probs
        pa.field("argmax_prob", pa.float32()),
        pa.field("entropy", pa.float32()),  # of mean_probs / log(7), 0-1
        pa.field("agreement", pa.float32()),  # frames whose smoothed argmax = argmax
        pa.field("mean_valence", pa.float32()),  # of the smoothed per-frame V/A
        pa.field("mean_arousal", pa.float32()),
        pa.field("std_valence", pa.float32()),
        pa.field("std_arousal", pa.float32()),
        pa.field("smoothing", pa.string()),  # e.g. "ema:5"
        pa.field("fer_model", pa.string()),
        pa.field("mean_aus_geom", aus_geom),  # over the clip's frames
        pa.field("au_imported_names", pa.list_(pa.string())),  # e.g. AU01 ... (null: none)
        pa.field("mean_au_emotion_scores", emo),
        pa.field("au_emotion", pa.string()),  # most frequent per-frame au_emotion
        pa.field("au_emotion_share", pa.float32()),  # its share of the frames
        pa.field("fer_au_agreement", pa.float32()),  # frames where FER argmax = AU emotion
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("reason", pa.string()),  # rejection code when not kept
        *_common(pa),
    ])
    return {"labels": (labels, "label_id"), "label_clips": (label_clips, "track_id")}


def _segments_schema(pa) -> dict:
    """``segments``: HMM state runs of a person's AU sequences (written by the ``label`` stage, or by
    ``dsbuilder hmm fit`` for one person; manifests/segments.md). ``au_names`` gives the order of ``au_profile``."""
    segments = pa.schema([
        pa.field("segment_id", pa.string(), nullable=False),  # <track_id>-h<segment_index>
        pa.field("track_id", pa.string(), nullable=False),  # parent: the face track (clip)
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("person_id", pa.string(), nullable=False),
        pa.field("segment_index", pa.int32(), nullable=False),
        pa.field("start_frame", pa.int64(), nullable=False),
        pa.field("end_frame", pa.int64(), nullable=False),  # exclusive
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("n_frames", pa.int64(), nullable=False),
        pa.field("state", pa.int32(), nullable=False),  # HMM state (Viterbi)
        pa.field("n_states", pa.int32(), nullable=False),
        pa.field("family", pa.string(), nullable=False),  # gaussian | poisson
        pa.field("au_names", pa.list_(pa.string()), nullable=False),  # e.g. AU01_geom ...
        pa.field("au_profile", pa.list_(pa.float32()), nullable=False),  # the state's mean AUs
        pa.field("nearest_emotion", pa.string(), nullable=False),  # FACS prototypes, or neutral
        pa.field("emotion_score", pa.float32(), nullable=False),  # cos of the principal angle
        pa.field("model_path", pa.string(), nullable=False),  # models/hmm/<person>.json
        *_common(pa),
    ])
    return {"segments": (segments, "segment_id")}


def _clips_schema(pa) -> dict:
    """``clips``: the training view, one row per labelled kept track (written by the ``report``
    stage; manifests/clips.md). ``probs`` in dsbuilder.labels.fer.FER_CLASSES order."""
    clips = pa.schema([
        pa.field("clip_id", pa.string(), nullable=False),  # <track_id>-c<clip_index>
        pa.field("track_id", pa.string(), nullable=False),  # parent: the face track
        pa.field("clip_index", pa.int32(), nullable=False),  # k-th clip of the track
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("shot_id", pa.string(), nullable=False),
        pa.field("person_id", pa.string(), nullable=False),
        pa.field("video_path", pa.string(), nullable=False),  # aligned crop clip, relative
        pa.field("video_sha256", pa.string()),
        pa.field("audio_path", pa.string()),  # 16 kHz mono wav, relative (null: silent source)
        pa.field("audio_sha256", pa.string()),
        pa.field("start_frame", pa.int64(), nullable=False),  # in the source video
        pa.field("end_frame", pa.int64(), nullable=False),  # exclusive
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("n_frames", pa.int64(), nullable=False),
        pa.field("crop_start_frame", pa.int64(), nullable=False),  # the clip's frames in video_path
        pa.field("crop_end_frame", pa.int64(), nullable=False),  # exclusive
        pa.field("crop_start_s", pa.float64(), nullable=False),  # its span in video/audio_path
        pa.field("crop_end_s", pa.float64(), nullable=False),
        pa.field("ended_by", pa.string(), nullable=False),  # emotion|speech|max_length|track_end
        pa.field("probs", pa.list_(pa.float32(), 7)),  # clip mean of the FER soft labels
        pa.field("argmax", pa.string()),
        pa.field("argmax_prob", pa.float32()),
        pa.field("entropy", pa.float32()),  # of probs / log(7), 0-1
        pa.field("agreement", pa.float32()),  # frames whose smoothed argmax = argmax
        pa.field("valence", pa.float32()),
        pa.field("arousal", pa.float32()),
        pa.field("au_emotion", pa.string()),  # most frequent FACS emotion of the frames
        pa.field("fer_au_agreement", pa.float32()),
        pa.field("fer_model", pa.string()),
        pa.field("speaking", pa.bool_(), nullable=False),  # any speaking segment (speech table)
        pa.field("speaking_s", pa.float64(), nullable=False),
        pa.field("sync_confidence", pa.float32()),
        pa.field("licence", pa.string()),  # the source's, copied for filtering
        pa.field("webpage_url", pa.string()),
        pa.field("review", pa.string()),  # accepted (by the curator's review file), or null
        pa.field("split", pa.string(), nullable=False),  # train | val | test
        pa.field("split_group", pa.string(), nullable=False),  # the group kept in one split
        *_common(pa),
    ])
    return {"clips": (clips, "clip_id")}
