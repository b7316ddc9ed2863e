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

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from dsbuilder.config import Param
# the library of one video (re-exported: older imports name them here)
from dsbuilder.face.matching import Dictionary, Identity, PersonRef  # noqa: F401
from dsbuilder.face.video import (JudgedTrack, TrackFrames, TrackResult, VideoFaces,  # noqa: F401
                                  analyse, iter_shots, judge, process_video, screener)
from dsbuilder.manifest.io import read_table
from dsbuilder.recipe import Recipe, params_hash
from dsbuilder.stages.base import (Rejection, StageResult, WorkItem, media_record, publish,
                                   run_items)
from dsbuilder.stages.spec import CliOption, StageSpec
from dsbuilder.workspace import Workspace, item_key

if TYPE_CHECKING:
    from dsbuilder.executors import Executor

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
