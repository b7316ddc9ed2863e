"""Stage ``shots``: split every kept video into shots.

:func:`detect_shots` works on one file: it streams frames with our PyAV decoder
(:func:`dsbuilder.media.iter_frames`, downscaled to ``downscale_width``), feeds them to a detector from
:mod:`dsbuilder.shots_detectors` (PySceneDetect's ``AdaptiveDetector`` by default), and maps the cut
frame indices back to each frame's own presentation time. So start/end are frame-accurate in frames and
in seconds, also for variable-frame-rate video, and memory does not grow with the video's length (we
keep one float per frame).

:func:`run` is the stage: for every ``video`` row of ``sources`` with status ``ok`` it detects shots
(or takes them from the per-video cache record), and writes ``manifests/shots.parquet`` plus
``manifests/rejections/shots.parquet``. Rejections:

* ``decode_error`` / ``no_video_stream``: the video cannot be used (item_id = its source_id);
* ``decode_error`` for a damaged stretch in the middle (item_id ``<source_id>-damaged<k>``, its times in
  the detail): its packets are skipped, the rest of the video is kept, no shot spans the gap;
* ``truncated`` (item_id ``<source_id>-tail``): the file decodes clearly fewer frames than its container
  declares (more than 5 % and 1 s short, damaged stretches aside), as a download cut short with its
  index at the front does; the decoded part is kept with its real duration;
* ``too_short``: a shot shorter than ``min_shot_s`` (item_id = the shot's id). The detectors already
  refuse cuts closer than ``min_shot_s`` (converted to frames at the average frame rate); what remains
  short is typically the last shot, or a shot in a slower part of a variable-frame-rate video.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from dsbuilder.config import Param, stage_defaults
from dsbuilder.manifest.io import read_table
from dsbuilder.errors import MediaError
from dsbuilder.recipe import Recipe, params_hash
from dsbuilder.stages.base import (Rejection, StageResult, WorkItem, media_record, publish,
                                   run_items)
from dsbuilder.stages.spec import StageSpec
from dsbuilder.workspace import Workspace, item_key

if TYPE_CHECKING:
    from dsbuilder.executors import Executor

log = logging.getLogger(__name__)

STAGE = "shots"

#: The stage's contract (see :mod:`dsbuilder.stages.spec`).
SPEC = StageSpec(
    name=STAGE,
    help='Split every scraped video into shots.',
    reads=('sources',),
    writes=('shots',),
    code_version='2',
    params={
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
    reasons={
        'no_video_stream': 'the file has no video stream (e.g. audio only)',
        'decode_error': 'the video cannot be decoded; or, item <source_id>-damaged<k>, a damaged stretch whose frames are skipped',
        'too_short': 'a shot shorter than min_shot_s',
        'truncated': 'item <source_id>-tail: the file decodes clearly fewer frames than its container declares (a download cut short)',
    },
    options=(),
)

#: Frame rate assumed when the container states none (only converts ``min_shot_s`` to frames).
FALLBACK_FPS = 25.0

#: Tolerance when comparing a shot's duration with ``min_shot_s`` (timestamps are rationals as floats).
_EPS = 1e-6


@dataclass(frozen=True)
class Shot:
    """One shot of a video: frames ``[start_frame, end_frame)`` and their presentation times.

    Frame indices count decoded frames from 0. ``start_s`` is the presentation time of ``start_frame``
    and ``end_s`` that of ``end_frame``; for the last shot, the end of its last frame (that frame's
    time plus its duration, estimated as the interval since the frame before it). Times are on the
    container's timeline, as players show them (a video stream may start after 0).
    """

    index: int
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    detector: str
    too_short: bool = False  # shorter than min_shot_s: the stage records it as a rejection

    @property
    def n_frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def shot_id(self, source_id: str) -> str:
        return f"{source_id}-shot{self.index:04d}"

    def row(self, source_id: str) -> dict[str, Any]:
        """This shot as a ``shots`` table row (without the common columns ``write_table`` adds)."""
        return {
            "shot_id": self.shot_id(source_id), "source_id": source_id, "shot_index": self.index,
            "start_frame": self.start_frame, "end_frame": self.end_frame,
            "start_s": self.start_s, "end_s": self.end_s, "n_frames": self.n_frames,
            "detector": self.detector,
        }


# --- one file -------------------------------------------------------------------------------------

#: A video is ``truncated`` when it decodes fewer frames than its container declares by more than
#: this fraction and more than :data:`TRUNCATED_MIN_S` seconds of frames.
TRUNCATED_FRACTION = 0.05
TRUNCATED_MIN_S = 1.0


def detect_shots(path: str | Path, params: Mapping[str, Any] | None = None,
                 report: dict[str, Any] | None = None) -> list[Shot]:
    """Detect the shots of one video file; no workspace needed.

    ``params`` are ``stages.shots`` parameters (missing keys take their defaults from
    ``STAGE_PARAMS["shots"]``). Returns every shot in order; together they cover every decoded frame.
    A video without cuts is one shot. Shots shorter than ``min_shot_s`` are included with
    ``too_short=True``.

    Damaged stretches in the middle of the file are skipped (their frames are lost; a shot never
    spans one); a file cut short gives the shots of what decodes. ``report``, when given, receives
    ``damaged`` (``[first_t, last_t, n_packets]`` per damaged stretch), ``decoded_frames``,
    ``declared_frames`` (from the container; None when it does not say), ``decoded_end_s`` and
    ``declared_s``: :func:`_rows_from_record` turns them into rejection rows.

    Raises :class:`~dsbuilder.media.MediaError` with reason ``decode_error`` (not a readable video,
    empty, nothing decodable) or ``no_video_stream`` (e.g. an audio-only file), and
    :class:`OSError` if the file cannot be read at all (e.g. it does not exist).
    """
    from dsbuilder.media import declared_frames, iter_frames, probe
    from dsbuilder.shots_detectors import create_detector

    p = {**stage_defaults(STAGE), **(params or {})}
    path = Path(path)
    fps, width = _video_rate_and_width(path)
    detector = create_detector(p, fps)
    scale_to = p["downscale_width"] if p["downscale_width"] and width > p["downscale_width"] else None

    times: list[float] = []  # presentation time of every frame, by index
    cuts: set[int] = set()
    damage: list[list] = []
    seen_damage = 0
    for index, t, image in iter_frames(path, width=scale_to, damage=damage):
        if len(damage) > seen_damage:  # frames were lost just before this one: a cut here
            seen_damage = len(damage)
            if index:
                cuts.add(index)
        times.append(t)
        cuts.update(detector.process(index, image))
    if not times:
        raise MediaError("decode_error", "no decodable video frame")
    cuts.update(detector.finish(len(times)))
    shots = shots_from_cuts(sorted(cuts), times, fps=fps, detector=detector.name,
                            min_shot_s=float(p["min_shot_s"]))
    if report is not None:
        info = probe(path)
        report.update(damaged=damage, decoded_frames=len(times),
                      declared_frames=declared_frames(info), decoded_end_s=shots[-1].end_s,
                      declared_s=info.duration)
    return shots


def shots_from_cuts(cuts: list[int], times: list[float], *, fps: float, detector: str,
                    min_shot_s: float = 0.0) -> list[Shot]:
    """Turn cut frame indices (each the first frame of a new shot) into :class:`Shot` s.

    ``times`` holds every frame's presentation time. Cuts at 0, outside the video or repeated are
    ignored. The end of the last frame is its time plus the interval since the previous frame
    (``1 / fps`` for a one-frame video).
    """
    n = len(times)
    bounds = [0, *sorted({c for c in cuts if 0 < c < n}), n]
    if n >= 2 and times[-1] > times[-2]:
        end_of_video = times[-1] + (times[-1] - times[-2])
    else:
        end_of_video = times[-1] + 1.0 / fps
    shots = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        start_s = times[a]
        end_s = times[b] if b < n else end_of_video
        shots.append(Shot(index=i, start_frame=a, end_frame=b, start_s=start_s, end_s=end_s,
                          detector=detector, too_short=(end_s - start_s) < min_shot_s - _EPS))
    return shots


def _video_rate_and_width(path: Path) -> tuple[float, int]:
    """The container's average frame rate and the frame width, or :class:`MediaError` with a shots
    reason code."""
    from dsbuilder.media import probe

    try:
        info = probe(path)
    except MediaError as exc:  # probe says "unsupported_media"; for this stage it is undecodable
        raise MediaError("decode_error", exc.detail) from None
    if not info.has_video:
        raise MediaError("no_video_stream", "the file has no video stream")
    if not info.fps:
        log.warning("%s: no frame rate in the container; assuming %g fps for min_shot_s",
                    path, FALLBACK_FPS)
    return float(info.fps or FALLBACK_FPS), int(info.width or 0)


# --- the stage ------------------------------------------------------------------------------------

def run(recipe: Recipe, ws: Workspace, *, force: bool = False, progress: bool = True,
        executor: Executor | None = None) -> StageResult:
    """Detect shots in every kept video of the ``sources`` manifest and publish ``shots``.

    Each video's outcome (its shots, or why it was rejected) is a cache record keyed by the video's
    sha256, the stage parameters and the stage code version: a rerun with nothing changed decodes
    nothing and writes byte-identical manifests. ``force`` recomputes every video. One bad video never
    stops the run: it becomes a rejection row.
    """
    from dsbuilder.progress import media_bar

    params = recipe.stage_params(STAGE)
    phash = params_hash(params)
    result = StageResult(stage=STAGE, params_hash=phash)

    sources = read_table(ws, "sources").to_pylist()
    videos = sorted((r for r in sources if r["kind"] == "video" and r["status"] == "ok"),
                    key=lambda r: r["source_id"])
    if not sources:
        log.warning("shots: the sources manifest is empty or missing; run the scrape stage first")

    items = [WorkItem(key=item_key(src["sha256"] or src["source_id"], phash, SPEC.code_version),
                      name=src["source_id"],
                      payload=str(ws.abspath(src["local_path"])) if src["local_path"] else None,
                      weight=float(src.get("duration") or 0)) for src in videos]
    with media_bar("shots", sum(it.weight for it in items), enabled=progress) as bar:
        records = run_items(STAGE, ws, items, _compute, params, result=result, force=force,
                            executor=executor, bar=bar)
    shot_rows: list[dict[str, Any]] = []
    for src, it in zip(videos, items):
        rows, rejections = _rows_from_record(records[it.key], src["source_id"],
                                             float(params["min_shot_s"]))
        shot_rows.extend(rows)
        result.rejections.extend(rejections)
    result.rows = {"shots": shot_rows}
    return publish(ws, result)


def _compute(params: Mapping[str, Any], path: str | None) -> tuple[dict[str, Any], bool]:
    """One work item (runs in any executor): a video's cache record."""
    return _compute_record(Path(path) if path else None, params)


def _compute_record(path: Path | None, params: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Detect shots in one video and return ``(cache record, whether to cache it)``.

    A record is ``{"at": ..., "shots": [...]}`` or ``{"at": ..., "rejected": {"reason", "detail"}}``;
    ``at`` is kept so that rejection rows rebuilt from the cache are byte-identical. A file that cannot
    be read (missing, permissions) is rejected but not cached: it may be back on the next run.
    """
    def work(p: Path) -> dict[str, Any]:
        decode: dict[str, Any] = {}
        shots = detect_shots(p, params, report=decode)
        short = sum(s.too_short for s in shots)
        log.info("shots: %s: %d shots (%d too short)", p, len(shots), short)
        return {"shots": [asdict(s) for s in shots], "decode": decode}

    return media_record(STAGE, path, work, keep_reason=True)


def _rows_from_record(record: Mapping[str, Any], source_id: str, min_shot_s: float
                      ) -> tuple[list[dict[str, Any]], list[Rejection]]:
    """The ``shots`` rows and rejections of one video, from its cache record."""
    at = record["at"]
    if "rejected" in record:
        rej = record["rejected"]
        return [], [Rejection(stage=STAGE, item_id=source_id, reason=rej["reason"],
                              detail=rej["detail"], source_id=source_id, at=at)]
    rows, rejections = [], _decode_rejections(record.get("decode") or {}, source_id, at)
    for d in record["shots"]:
        shot = Shot(**d)
        if shot.too_short:
            rejections.append(Rejection(
                stage=STAGE, item_id=shot.shot_id(source_id), reason="too_short",
                detail=(f"shot {shot.index} lasts {shot.duration_s:.3f} s < min_shot_s {min_shot_s:g} "
                        f"({shot.n_frames} frames, {shot.start_s:.3f}-{shot.end_s:.3f} s)"),
                source_id=source_id, at=at))
        else:
            rows.append(shot.row(source_id))
    return rows, rejections


def _decode_rejections(decode: Mapping[str, Any], source_id: str, at: str) -> list[Rejection]:
    """What did not decode: each damaged stretch (``decode_error``, item ``<source_id>-damaged<k>``)
    and a missing tail (``truncated``, item ``<source_id>-tail``). The rest of the video is kept."""
    out = []
    for k, (t0, t1, n) in enumerate(decode.get("damaged") or []):
        span = f"{t0:.3f}-{t1:.3f} s" if t0 is not None else "at an unknown time"
        out.append(Rejection(stage=STAGE, item_id=f"{source_id}-damaged{k}", reason="decode_error",
                             detail=f"{n} damaged packet(s) {span} skipped: their frames are lost, "
                                    "no shot spans them", source_id=source_id, at=at))
    got, declared = decode.get("decoded_frames"), decode.get("declared_frames")
    end, declared_s = float(decode.get("decoded_end_s") or 0.0), decode.get("declared_s")
    if got and declared:
        fps = got / max(end, 1e-9) if got > 1 else FALLBACK_FPS
        lost = sum((t1 - t0) * fps + 1 for t0, t1, _ in decode.get("damaged") or []
                   if t0 is not None)
        missing = declared - got - lost  # frames neither decoded nor in a damaged stretch
        tail_s = (float(declared_s) - end) if declared_s else missing / fps
        if (missing > TRUNCATED_FRACTION * declared and missing / fps > TRUNCATED_MIN_S
                and tail_s > TRUNCATED_MIN_S):
            out.append(Rejection(
                stage=STAGE, item_id=f"{source_id}-tail", reason="truncated",
                detail=(f"the container declares {declared} frames"
                        + (f" ({decode['declared_s']:.2f} s)" if decode.get("declared_s") else "")
                        + f"; {got} decode, up to {float(decode['decoded_end_s']):.2f} s: the file "
                        "is cut short; shots cover the decoded part only"),
                source_id=source_id, at=at))
    return out
