"""Stage ``faces``: find the recipe people's faces in every kept video; write aligned clips of them.

Per video, in two passes over the file (see ``manifests/tracks.md`` for the outputs):

1. **Detect, track, identify** (:func:`dsbuilder.face.tracker.track_video`, streaming): faces are
   detected a few times a second, tracked in between by their landmarks, and every track is cut at
   shot boundaries. When a track ends it is judged at once, cheapest test first:
   ``track_too_short`` (shorter than ``min_track_s``), ``face_too_small`` (median face below
   ``min_face_px`` source pixels), ``profile_pose`` (|median yaw| above ``max_yaw_deg``), and only
   then identified: up to ``embed_samples`` face chips spread over the track (the largest and most
   frontal per time bin) are embedded, and the median distance to each person's kept dictionary
   embeddings is compared with that person's fitted threshold (``people.threshold``, or
   ``match_threshold`` when set). The nearest person is assigned if within their threshold; anyone
   else is ``not_target``. After a track is judged only its boxes and landmarks are kept, and for a
   rejected track not even those.
2. **Write** (:func:`dsbuilder.face.crops.write_crops`): only the spans of kept tracks are decoded
   again (seeking), and each kept track gets ``clips/<track_id>.mp4`` (aligned, stabilised face,
   H.264, with AAC audio) and ``clips/<track_id>.wav`` (mono ``audio_rate`` Hz, cut to the track's
   frames). A rejected track's pixels are never written anywhere.

Why two passes: identity is known only when a track ends, which may be minutes after it began, and
holding its frames until then would make memory grow with the track's length. Decoding again costs
far less than detection (about 1 ms a frame at 360p, and only kept spans are decoded).

:func:`process_video` does one video without a workspace. :func:`run` is the stage: one cache record
per video, keyed by the video's sha256, its shots, the dictionary's content (embeddings and
thresholds), the parameters and the code version; a rerun with nothing changed decodes nothing and
writes byte-identical manifests, and a changed dictionary recomputes. Clips no longer referenced by
the manifest (e.g. a track that is not a target any more) are deleted at the end of a run.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from dsbuilder.config import Param
from dsbuilder.face.matching import Dictionary, Identity, PersonRef  # noqa: F401 (re-exported)
from dsbuilder.face.tracker import (FacesParams, RawTrack, ShotSpan, landmark_face_px,
                                    moving_average,
                                    smoothing_window)
from dsbuilder.manifest.io import read_table
from dsbuilder.recipe import Recipe, params_hash
from dsbuilder.stages.base import (Rejection, StageResult, WorkItem, media_record, publish,
                                   run_items)
from dsbuilder.stages.spec import CliOption, StageSpec
from dsbuilder.workspace import Workspace, item_key

if TYPE_CHECKING:  # annotations only: crops imports PyAV and OpenCV
    from dsbuilder.executors import Executor
    from dsbuilder.face.crops import CropJob

log = logging.getLogger(__name__)

STAGE = "faces"

#: The stage's contract (see :mod:`dsbuilder.stages.spec`).
SPEC = StageSpec(
    name=STAGE,
    help='Detect, track and recognise faces; write aligned crops of the targets only.',
    reads=('sources', 'shots', 'faces_dictionary', 'people'),
    writes=('tracks', 'frames'),
    code_version='2',
    params={
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
},
    reasons={
        'not_target': 'the track is nobody in the recipe (or screened out early as a stranger); its pixels are never stored',
        'track_too_short': 'the track is shorter than min_track_s',
        'face_too_small': "the track's median face is smaller than min_face_px",
        'profile_pose': "the track's median yaw is larger than max_yaw_deg",
        'decode_error': 'the video cannot be decoded or read',
        'no_video_stream': 'the file has no video stream',
        'no_dictionary': 'no recipe person has a kept dictionary face, so nothing can be recognised',
    },
    options=(
        CliOption(("--show",), "Instead of running the stage, write a preview of VIDEO with boxes, "
                  "names and distances drawn (non-targets pixelated), using the workspace's "
                  "dictionary.", target="action", metavar="VIDEO", kind="file",
                  action="dsbuilder.face.preview:cli_show"),
        CliOption(("-o", "--output"), "--show: output file; default <workspace>/previews/.",
                  target="action", kind="path"),
    ),
)

#: Folder of the workspace that holds the clips.
CLIPS_DIR = "clips"

#: Tolerance for comparing durations with ``min_track_s`` (times are rationals as floats).
_EPS = 1e-6


# --- results -------------------------------------------------------------------------------------

def _pack(a: np.ndarray, dtype: str) -> str:
    """A numeric array as base64 of its little-endian bytes (compact and exact in a JSON record)."""
    return base64.b64encode(np.ascontiguousarray(a, dtype).tobytes()).decode("ascii")


def _unpack(s: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype).reshape(shape)


@dataclass
class TrackFrames:
    """Per-frame values of a kept track, as columns (the ``frames`` table, one row per frame)."""

    frame_index: np.ndarray  # (n,) int64
    t: np.ndarray  # (n,) float64
    bbox: np.ndarray  # (n, 4) float32, smoothed
    landmarks: np.ndarray  # (n, 136) float32, as the predictor found them
    detected: np.ndarray  # (n,) bool
    yaw: np.ndarray  # (n,) float32
    pitch: np.ndarray  # (n,) float32
    mouth_aperture: np.ndarray  # (n,) float32

    _DTYPES = {"frame_index": "<i8", "t": "<f8", "bbox": "<f4", "landmarks": "<f4", "detected": "|b1",
               "yaw": "<f4", "pitch": "<f4", "mouth_aperture": "<f4"}
    _WIDTH = {"bbox": 4, "landmarks": 136}

    def __len__(self) -> int:
        return len(self.frame_index)

    def to_record(self) -> dict[str, Any]:
        return {"n": len(self), **{k: _pack(getattr(self, k), dt) for k, dt in self._DTYPES.items()}}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> "TrackFrames":
        n = int(rec["n"])
        return cls(**{k: _unpack(rec[k], dt, (n, cls._WIDTH[k]) if k in cls._WIDTH else (n,))
                      for k, dt in cls._DTYPES.items()})

    def rows(self, track_id: str, source_id: str) -> list[dict[str, Any]]:
        return [{
            "frame_id": f"{track_id}-f{int(self.frame_index[i])}", "track_id": track_id,
            "source_id": source_id, "frame_index": int(self.frame_index[i]), "t": float(self.t[i]),
            "crop_frame": i, "bbox": self.bbox[i], "landmarks": self.landmarks[i],
            "detected": bool(self.detected[i]), "yaw": float(self.yaw[i]),
            "pitch": float(self.pitch[i]), "mouth_aperture": float(self.mouth_aperture[i]),
        } for i in range(len(self))]


@dataclass
class TrackSpan:
    """What a finished track covers and how it was judged (shared by :class:`JudgedTrack` and
    :class:`TrackResult`)."""

    shot_id: str
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    n_frames: int
    n_detections: int
    n_embeddings: int
    mean_face_px: float
    median_yaw: float | None
    kept: bool
    reason: str | None  # rejection code
    detail: str | None  # of the rejection

    def span(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(TrackSpan)}


@dataclass
class TrackResult(TrackSpan):
    """One track: its ``tracks`` row, why it was rejected, and (kept tracks) its frames and files."""

    track_id: str
    source_id: str
    person_id: str | None = None
    distance: float | None = None
    threshold: float | None = None
    second_person_id: str | None = None
    second_distance: float | None = None
    crop_path: str | None = None  # relative to the workspace (stage) or absolute (process_video)
    crop_sha256: str | None = None
    audio_path: str | None = None
    audio_sha256: str | None = None
    frames: TrackFrames | None = None

    _NOT_IN_ROW = ("detail", "frames")

    def row(self) -> dict[str, Any]:
        """The ``tracks`` row (without the columns every table has)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in self._NOT_IN_ROW}

    def to_record(self) -> dict[str, Any]:
        rec = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "frames"}
        rec["frames"] = self.frames.to_record() if self.frames is not None else None
        return rec

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> "TrackResult":
        frames = TrackFrames.from_record(rec["frames"]) if rec.get("frames") else None
        return cls(**{**{k: rec[k] for k in cls.__dataclass_fields__ if k != "frames"},
                      "frames": frames})


@dataclass
class VideoFaces:
    """Every track of one video (kept and rejected), in track-id order."""

    source_id: str
    tracks: list[TrackResult] = field(default_factory=list)

    @property
    def kept(self) -> list[TrackResult]:
        return [t for t in self.tracks if t.kept]


# --- one video -----------------------------------------------------------------------------------

@dataclass
class JudgedTrack(TrackSpan):
    """A finished track after judging: geometry is kept only for kept tracks (or for the preview)."""

    raw: RawTrack | None
    first_left: float
    identity: Identity
    yaw_pitch: np.ndarray | None  # (n, 2) for kept tracks


def judge(raw: RawTrack, dictionary: Dictionary, p: FacesParams, *, keep_geometry: bool = False
          ) -> JudgedTrack:
    """Filter and identify one finished track (cheapest test first); drop its chips."""
    from dsbuilder.face import api

    sizes = landmark_face_px(raw.landmarks)
    reason = detail = None
    if raw.screened is not None and raw.duration_s >= float(p.min_track_s) - _EPS:
        v = raw.screened
        raw.samples = []
        return JudgedTrack(
            raw=raw if keep_geometry else None, shot_id=raw.shot.shot_id,
            first_left=float(raw.boxes[0, 0]), start_frame=raw.start_frame,
            end_frame=raw.end_frame, start_s=raw.start_s, end_s=raw.end_s, n_frames=raw.n_frames,
            n_detections=raw.n_detections, mean_face_px=float(sizes.mean()), median_yaw=None,
            kept=False, reason="not_target", detail=v["detail"], n_embeddings=v["n_embeddings"],
            identity=Identity(None, v["distance"], v["threshold"], v["nearest"], v["distance"]),
            yaw_pitch=None)
    yaw_pitch = None
    median_yaw = None
    identity = Identity(None, None, None, None, None)
    n_emb = 0
    if raw.duration_s < float(p.min_track_s) - _EPS:
        reason = "track_too_short"
        detail = f"{raw.duration_s:.3f} s < min_track_s {float(p.min_track_s):g}"
    elif float(np.median(sizes)) < int(p.min_face_px):
        reason = "face_too_small"
        detail = f"median face {float(np.median(sizes)):.1f} px < min_face_px {int(p.min_face_px)}"
    else:
        yaw_pitch = np.array([api.yaw_pitch(lm) for lm in raw.landmarks], np.float64)
        median_yaw = float(np.median(yaw_pitch[:, 0]))
        if abs(median_yaw) > float(p.max_yaw_deg):
            reason = "profile_pose"
            detail = f"|median yaw| {abs(median_yaw):.1f} deg > max_yaw_deg {float(p.max_yaw_deg):g}"
        else:
            embeddings = list(api.embed_many([(s.chip, s.box) for s in raw.samples]))
            n_emb = len(embeddings)
            identity = dictionary.identify(embeddings, p.match_threshold)
            if identity.person_id is None:
                reason = "not_target"
                if identity.distance is None:
                    detail = "no person in the dictionary has a match threshold"
                else:
                    detail = (f"nearest person {identity.second_person_id} at median distance "
                              f"{identity.distance:.3f} > threshold {identity.threshold:.3f} "
                              f"({n_emb} embeddings)")
    raw.samples = []  # the chips are not needed any more
    kept = reason is None
    return JudgedTrack(
        raw=raw if kept or keep_geometry else None, shot_id=raw.shot.shot_id,
        first_left=float(raw.boxes[0, 0]), start_frame=raw.start_frame, end_frame=raw.end_frame,
        start_s=raw.start_s, end_s=raw.end_s, n_frames=raw.n_frames,
        n_detections=raw.n_detections, mean_face_px=float(sizes.mean()), median_yaw=median_yaw,
        kept=kept, reason=reason, detail=detail, n_embeddings=n_emb, identity=identity,
        yaw_pitch=yaw_pitch if kept else None)


#: A track is screened out early (followed by its detections only, then ``not_target``) when its
#: first samples' median distance exceeds every person's threshold by this much: a clear stranger.
SCREEN_MARGIN = 0.05


def screener(dictionary: Dictionary, p: FacesParams):
    """The tracker's early identity check (:data:`dsbuilder.face.tracker.Screen`): a detail string
    for a track whose samples are clearly nobody in the dictionary, else None. With
    ``match_threshold`` set (an override), or no dictionary, nothing is screened."""
    from dsbuilder.face import api

    if not len(dictionary) or p.match_threshold is not None:
        return None

    people = [q for q in dictionary.people if q.threshold is not None and len(q.embeddings)]

    def screen(samples) -> dict | None:
        if not people:
            return None
        embeddings = list(api.embed_many([(s.chip, s.box) for s in samples]))
        gaps = sorted((api.median_distance(embeddings, q.embeddings) - q.threshold, q.person_id,
                       q.threshold) for q in people)
        gap, nearest, thr = gaps[0]  # the person it comes closest to matching
        if gap <= SCREEN_MARGIN:
            return None
        return {"nearest": nearest, "distance": gap + thr, "threshold": thr,
                "n_embeddings": len(embeddings),
                "detail": f"nearest person {nearest} at median distance {gap + thr:.3f} > "
                          f"threshold {thr:.3f} + margin {SCREEN_MARGIN:g} on its first "
                          f"{len(embeddings)} embeddings: screened out early, followed by its "
                          "detections only"}

    return screen


def iter_shots(path: str | Path, spans: Sequence[ShotSpan], dictionary: Dictionary, p: FacesParams,
               *, keep_geometry: bool = False) -> Iterator[list[tuple[str, JudgedTrack]]]:
    """Pass 1 and the decisions, shot by shot: each shot's ``(track_id, judged track)`` list, in id
    order, as soon as pass 1 has left the shot (tracks end at cuts, so a shot is complete then)."""
    from dsbuilder.face.tracker import track_video

    def numbered(group: list[JudgedTrack]) -> list[tuple[str, JudgedTrack]]:
        # deterministic ids: by start frame, then left edge of the first box
        ordered = sorted(group, key=lambda j: (j.start_frame, j.first_left, j.end_frame))
        return [(f"{j.shot_id}-trk{k:03d}", j) for k, j in enumerate(ordered)]

    group: list[JudgedTrack] = []
    for raw in track_video(path, spans, p, screen=screener(dictionary, p)):
        judged = judge(raw, dictionary, p, keep_geometry=keep_geometry)
        if group and group[-1].shot_id != judged.shot_id:
            yield numbered(group)
            group = []
        group.append(judged)
    if group:
        yield numbered(group)


def analyse(path: str | Path, spans: Sequence[ShotSpan], dictionary: Dictionary, p: FacesParams,
            *, keep_geometry: bool = False) -> list[tuple[str, JudgedTrack]]:
    """Pass 1 and the decisions for the whole video: ``(track_id, judged track)`` in id order."""
    return [t for shot in iter_shots(path, spans, dictionary, p, keep_geometry=keep_geometry)
            for t in shot]


def _track_frames(raw: RawTrack, yaw_pitch: np.ndarray, p: FacesParams) -> TrackFrames:
    from dsbuilder.face import api

    window = smoothing_window(raw.times, float(p.smooth_s))
    return TrackFrames(
        frame_index=raw.frames.astype(np.int64), t=raw.times.astype(np.float64),
        bbox=moving_average(raw.boxes, window).astype(np.float32),
        landmarks=raw.landmarks.reshape(len(raw.frames), 136).astype(np.float32),
        detected=raw.detected.astype(bool), yaw=yaw_pitch[:, 0].astype(np.float32),
        pitch=yaw_pitch[:, 1].astype(np.float32),
        mouth_aperture=np.array([api.mouth_aperture(lm) for lm in raw.landmarks], np.float32))


def _kept_track(track_id: str, j: JudgedTrack, p: FacesParams, out_dir: Path
                ) -> tuple[TrackFrames, "CropJob"]:
    """A kept track's ``frames`` columns and the job that writes its clip; drops its raw geometry."""
    from dsbuilder.face.crops import CropJob, alignment

    raw = j.raw
    smooth_lm = moving_average(raw.landmarks, smoothing_window(raw.times, float(p.smooth_s)))
    job = CropJob(track_id=track_id, times=raw.times, start_s=j.start_s, end_s=j.end_s,
                  transforms=alignment(smooth_lm, int(p.crop_size), float(p.crop_padding)),
                  video_path=out_dir / f"{track_id}.mp4", audio_path=out_dir / f"{track_id}.wav")
    frames = _track_frames(raw, j.yaw_pitch, p)
    j.raw = None
    return frames, job


def process_video(path: str | Path, shots: Sequence[Any], dictionary: Dictionary,
                  params: Mapping[str, Any] | FacesParams | None, out_dir: str | Path, *,
                  source_id: str | None = None) -> VideoFaces:
    """Track, identify and crop the faces of one video; no workspace needed.

    ``shots``: rows of the ``shots`` table (mappings with shot_id, start_frame, end_frame, start_s,
    end_s) or :class:`dsbuilder.stages.shots.Shot` s (their ids are made from ``source_id``, which
    defaults to the file's stem). ``params``: ``stages.faces`` parameters (defaults fill the rest).
    Clips of kept tracks go to ``out_dir/<track_id>.mp4`` and ``.wav``; their paths in the result are
    absolute. Raises :class:`~dsbuilder.media.MediaError` (``decode_error``) for an unreadable video;
    clips it had already written are removed then.
    """
    from dsbuilder.face.crops import CropJob, write_crops

    p = FacesParams.from_mapping(params)
    path, out_dir = Path(path), Path(out_dir)
    source_id = source_id or path.stem
    spans = [ShotSpan.of(s, source_id) for s in shots if not getattr(s, "too_short", False)]
    result = VideoFaces(source_id)
    if not spans:
        return result
    # Pass 1 for the whole video, then pass 2 for the kept tracks. (Writing a shot's clips in a
    # background thread while pass 1 goes on was measured no faster: both hold the GIL most of the
    # time.)
    judged = analyse(path, spans, dictionary, p)
    frames: dict[str, TrackFrames] = {}
    jobs: list[CropJob] = []
    for track_id, j in judged:
        if j.kept:
            frames[track_id], job = _kept_track(track_id, j, p, out_dir)
            jobs.append(job)
    try:
        files = {f.track_id: f for f in write_crops(path, jobs, size=int(p.crop_size),
                                                     rate=int(p.audio_rate))}
    except BaseException:  # no half-finished video leaves clips behind
        for job in jobs:
            job.video_path.unlink(missing_ok=True)
            job.audio_path.unlink(missing_ok=True)
        raise
    for track_id, j in judged:
        f = files.get(track_id)
        ident = j.identity
        result.tracks.append(TrackResult(
            **j.span(), track_id=track_id, source_id=source_id, person_id=ident.person_id,
            distance=ident.distance, threshold=ident.threshold,
            second_person_id=ident.second_person_id, second_distance=ident.second_distance,
            crop_path=str(f.video_path) if f else None, crop_sha256=f.video_sha256 if f else None,
            audio_path=str(f.audio_path) if f and f.audio_path else None,
            audio_sha256=f.audio_sha256 if f else None, frames=frames.get(track_id)))
    n_kept = len(result.kept)
    log.info("faces: %s: %d tracks, %d kept", path.name, len(result.tracks), n_kept)
    return result


# --- the stage -----------------------------------------------------------------------------------

def run(recipe: Recipe, ws: Workspace, *, force: bool = False, progress: bool = True,
        executor: Executor | None = None) -> StageResult:
    """Track and identify faces in every kept video; write clips of kept tracks; publish ``tracks``
    and ``frames`` (and the stage's rejections). One bad video never stops the run."""
    from dsbuilder.progress import media_bar

    params = recipe.stage_params(STAGE)
    phash = params_hash(params)
    result = StageResult(stage=STAGE, params_hash=phash)
    clips = ws.root / CLIPS_DIR

    sources = read_table(ws, "sources").to_pylist()
    videos = sorted((r for r in sources if r["kind"] == "video" and r["status"] == "ok"),
                    key=lambda r: r["source_id"])
    shots_by_video: dict[str, list[dict[str, Any]]] = {}
    for row in read_table(ws, "shots").to_pylist():
        shots_by_video.setdefault(row["source_id"], []).append(row)
    dictionary = Dictionary.from_workspace(ws)
    dict_hash = dictionary.content_hash()
    if not len(dictionary):
        log.warning("faces: the dictionary is empty; run the dictionary stage first")

    items: list[WorkItem] = []
    for src in videos:
        source_id = src["source_id"]
        if not len(dictionary):
            result.rejections.append(Rejection(
                stage=STAGE, item_id=source_id, reason="no_dictionary",
                detail="no recipe person has a kept dictionary face", source_id=source_id))
            continue
        shots = sorted(shots_by_video.get(source_id, []), key=lambda r: r["start_frame"])
        if not shots:
            log.info("faces: %s has no kept shots; skipped", source_id)
            continue
        key = item_key(f"{src['sha256'] or source_id}\0{dict_hash}\0{_shots_hash(shots)}", phash,
                       SPEC.code_version)
        path = str(ws.abspath(src["local_path"])) if src["local_path"] else None
        items.append(WorkItem(key, source_id, (path, source_id, shots),
                              float(src.get("duration") or 0)))

    context = (str(ws.root), dictionary, params)
    with media_bar("faces", sum(it.weight for it in items), enabled=progress) as bar:
        records = run_items(STAGE, ws, items, _compute, context, result=result, force=force,
                            executor=executor, bar=bar,
                            reusable=lambda rec: _files_present(ws, rec))

    track_rows: list[dict[str, Any]] = []
    frame_rows: list[dict[str, Any]] = []
    for it in items:
        tracks, frames, rejections = _rows_from_record(records[it.key], it.name)
        track_rows.extend(tracks)
        frame_rows.extend(frames)
        result.rejections.extend(rejections)

    _remove_unreferenced_clips(ws, clips, track_rows)
    result.rows = {"tracks": track_rows, "frames": frame_rows}
    return publish(ws, result)


def _compute(context: tuple[str, Dictionary, Mapping[str, Any]],
             payload: tuple[str | None, str, list[dict[str, Any]]]) -> tuple[dict[str, Any], bool]:
    """One work item (runs in any executor): a video's tracks, its target clips written to the
    workspace's ``clips/`` folder."""
    root, dictionary, params = context
    path, source_id, shots = payload
    try:
        return _compute_record(Workspace(Path(root)), Path(path) if path else None, source_id,
                               shots, dictionary, params)
    finally:
        _return_freed_memory()


def _return_freed_memory() -> None:
    """Hand the memory freed after a video (decoders, encoders, chips) back to the OS.

    glibc keeps freed heap pages for reuse; after a 5-minute video about 20 MiB of them, and writing
    the manifests then adds its own peak on top (benchmarks/RESULTS.md ``## faces``). Without glibc
    this does nothing. The garbage collection is of the young generations only: a full one walks
    every object of the loaded models (torch: 0.06-0.14 s a video) and frees nothing more here.
    """
    import ctypes
    import gc

    gc.collect(1)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _shots_hash(shots: Sequence[Mapping[str, Any]]) -> str:
    blob = "\n".join(f"{s['shot_id']} {s['start_frame']} {s['end_frame']} {s['start_s']!r} "
                     f"{s['end_s']!r}" for s in shots)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _files_present(ws: Workspace, record: Mapping[str, Any]) -> bool:
    """Are the clips a cached record names still on disk? (If not, the video is done again.)"""
    for t in record.get("tracks", []):
        for key in ("crop_path", "audio_path"):
            if t.get(key) and not ws.abspath(t[key]).is_file():
                return False
    return True


def _compute_record(ws: Workspace, path: Path | None, source_id: str,
                    shots: Sequence[Mapping[str, Any]], dictionary: Dictionary,
                    params: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Process one video; return ``(cache record, whether to cache it)``.

    A record is ``{"at", "tracks": [...]}`` or ``{"at", "rejected": {"reason", "detail"}}``. A file
    that cannot be read at all (missing, permissions) is rejected but not cached.
    """
    def work(p: Path) -> dict[str, Any]:
        faces = process_video(p, shots, dictionary, params, ws.root / CLIPS_DIR,
                              source_id=source_id)
        for t in faces.tracks:
            t.crop_path = ws.relpath(t.crop_path) if t.crop_path else None
            t.audio_path = ws.relpath(t.audio_path) if t.audio_path else None
        return {"tracks": [t.to_record() for t in faces.tracks]}

    return media_record(STAGE, path, work)


def _rows_from_record(record: Mapping[str, Any], source_id: str
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Rejection]]:
    """The ``tracks`` and ``frames`` rows and the rejections of one video, from its cache record."""
    at = record["at"]
    if "rejected" in record:
        rej = record["rejected"]
        return [], [], [Rejection(stage=STAGE, item_id=source_id, reason=rej["reason"],
                                  detail=rej["detail"], source_id=source_id, at=at)]
    tracks, frames, rejections = [], [], []
    for rec in record["tracks"]:
        t = TrackResult.from_record(rec)
        tracks.append(t.row())
        if t.kept and t.frames is not None:
            frames.extend(t.frames.rows(t.track_id, source_id))
        elif not t.kept:
            rejections.append(Rejection(stage=STAGE, item_id=t.track_id, reason=t.reason,
                                        detail=t.detail or "", source_id=source_id, at=at))
    return tracks, frames, rejections


def _remove_unreferenced_clips(ws: Workspace, clips: Path, track_rows: Sequence[Mapping]) -> None:
    """Delete clips (and leftover temporaries) that no ``tracks`` row names any more: a track that
    stopped being a target must not keep its pixels on disk."""
    if not clips.is_dir():
        return
    keep = {ws.abspath(r[k]) for r in track_rows for k in ("crop_path", "audio_path") if r.get(k)}
    for f in clips.iterdir():
        if f.is_file() and f not in keep and (f.suffix in (".mp4", ".wav") or f.name.endswith(".tmp")):
            log.info("faces: removing %s (no longer in the tracks manifest)", f.name)
            f.unlink(missing_ok=True)
