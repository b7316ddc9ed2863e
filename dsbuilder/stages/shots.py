"""Stage ``shots``: split every kept video into shots.

:func:`~dsbuilder.shots_detectors.video.detect_shots` works on one file (a detector from
:mod:`dsbuilder.shots_detectors`, PySceneDetect's ``AdaptiveDetector`` by default, over streamed
frames; frame-accurate times, also for variable frame rates).

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
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from dsbuilder.config import Param
from dsbuilder.manifest.io import read_table
from dsbuilder.recipe import Recipe, params_hash
# the library of one file (re-exported: older imports name them here)
from dsbuilder.shots_detectors.video import (FALLBACK_FPS, Shot, detect_shots,  # noqa: F401
                                             shots_from_cuts)
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

#: A video is ``truncated`` when it decodes fewer frames than its container declares by more than
#: this fraction and more than :data:`TRUNCATED_MIN_S` seconds of frames.
TRUNCATED_FRACTION = 0.05
TRUNCATED_MIN_S = 1.0


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
