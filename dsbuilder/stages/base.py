"""What every stage shares: rejections as data, per-item failures, and publishing tables.

A stage is a library function ``run(recipe, ws, *, force=False) -> StageResult`` in
``dsbuilder/stages/<stage>.py``. It works item by item; each finished item (kept or rejected) is a cache
record keyed by :func:`dsbuilder.workspace.item_key`, so an interrupted run resumes where it stopped.
One bad item never stops the run: it raises :class:`ItemRejected` inside the item's work, and becomes a
``rejections`` row with the stage, a reason code and a detail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from dsbuilder.errors import Rejected
from dsbuilder.items import Rejection, now_utc  # noqa: F401 (re-exported for the stages)
from dsbuilder.manifest.io import write_table
from dsbuilder.workspace import Workspace

if TYPE_CHECKING:
    from dsbuilder.executors import Executor



#: The name stages used before :class:`dsbuilder.errors.Rejected` moved to the ground floor.
ItemRejected = Rejected


@dataclass
class StageResult:
    stage: str
    params_hash: str
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # table -> rows
    rejections: list[Rejection] = field(default_factory=list)
    computed: int = 0  # items worked on in this run
    cached: int = 0  # items taken from the cache
    tables: list[Path] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"stage": self.stage, "computed": self.computed, "cached": self.cached,
                **{t: len(r) for t, r in self.rows.items()}, "rejections": len(self.rejections)}


@dataclass(frozen=True)
class WorkItem:
    """One unit of a stage's work: its cache ``key``, a ``name`` for logs and the progress bar, the
    ``payload`` its compute function needs (ids, paths, rows: small and picklable), and its
    ``weight`` on the progress bar (seconds of media)."""

    key: str
    name: str
    payload: Any
    weight: float = 0.0


def run_items(stage: str, ws: Workspace, items: Sequence[WorkItem],
              compute: Callable[[Any, Any], tuple[dict[str, Any], bool]], context: Any, *,
              result: StageResult, force: bool = False, executor: "Executor | None" = None,
              bar: Any = None, reusable: Callable[[dict[str, Any]], bool] | None = None,
              ) -> dict[str, dict[str, Any]]:
    """The one cache loop: every item's record, by key, taken from the cache or computed.

    ``compute(context, payload) -> (record, cacheable)`` is a module-level function (it is sent to
    worker processes by reference); it must not touch the cache. A record found in the cache is reused
    unless ``force``, or unless ``reusable(record)`` says no (e.g. its clip files are gone). Computed
    records are written here, in this process, as each item ends. An item whose work failed (a bug, a
    worker that died, a transient failure retried to the end) gets ``{"at", "rejected": {"reason",
    "detail"}}``, not cached: the next run tries it again. The stage builds its rows from the records
    in its own item order, so the executor never changes the manifests.
    """
    from dsbuilder.executors import ExecutorConfig, make_executor

    executor = executor or make_executor(ExecutorConfig())
    records: dict[str, dict[str, Any]] = {}
    todo: list[WorkItem] = []
    for it in items:
        rec = None if force else ws.get_record(stage, it.key)
        if rec is not None and (reusable is None or reusable(rec)):
            records[it.key] = rec
            result.cached += 1
            if bar is not None:
                bar.done(it.weight, it.name)
        else:
            todo.append(it)
    if not todo:
        return records
    log = logging.getLogger(f"dsbuilder.stages.{stage}")
    in_order = executor.name == "local"
    if not in_order:  # longest first, so that the last item to finish is a short one
        todo.sort(key=lambda it: -it.weight)
    outcomes = executor.map(compute, context, [it.payload for it in todo])
    for k in range(len(todo)):
        if in_order and bar is not None:  # this process computes todo[k] now: the bar follows it
            bar.item(todo[k].weight, todo[k].name)
        out = next(outcomes)
        it = todo[out.index]
        if out.ok:
            rec, cacheable = out.value
            log.info("%s: %s done in %.1f s%s", stage, it.name, out.seconds or 0.0,
                     f" (attempt {out.attempts})" if out.attempts > 1 else "")
        else:
            log.error("%s: %s: %s: %s", stage, it.name, out.reason, out.detail)
            rec, cacheable = {"at": now_utc(), "rejected": {"reason": out.reason,
                                                            "detail": out.detail}}, False
        if cacheable:
            # every record names its item (a source id, or an id made from one), so that a takedown
            # finds what was derived from a source (dsbuilder.takedown.purge_records)
            rec.setdefault("item", it.name)
            ws.put_record(stage, it.key, rec)
        records[it.key] = rec
        result.computed += 1
        if bar is not None and not in_order:
            bar.done(it.weight, it.name)
    return records


def first_time(ws: Workspace, stage: str, what: str, params_hash: str, *,
               force: bool = False) -> str:
    """When the item ``what`` was first decided (kept in a tiny cache record, so that a row with no
    cache record of its own keeps its time and a rerun writes the same bytes). ``force`` takes a new
    time."""
    from dsbuilder.stages import CODE_VERSIONS
    from dsbuilder.workspace import item_key

    key = item_key(what, params_hash, CODE_VERSIONS[stage])
    record = None if force else ws.get_record(stage, key)
    if record is None:
        record = {"at": now_utc()}
        ws.put_record(stage, key, record)
    return record["at"]


def media_record(stage: str, path: Path | None, work: Callable[[Path], dict[str, Any]], *,
                 keep_reason: bool = False) -> tuple[dict[str, Any], bool]:
    """One item's cache record from work on a media file: ``({"at", **work(path)}, True)``.

    A file that cannot be decoded (:class:`~dsbuilder.media.MediaError`) gives a cached
    ``{"at", "rejected": {"reason", "detail"}}`` record: reason ``decode_error``, or the error's own
    with ``keep_reason``. A file that cannot be read at all (missing, permissions, or ``path`` None)
    gives the same record, not to be cached: it may be back on the next run. ``at`` is kept in the
    record so that rows rebuilt from it are byte-identical.
    """
    from dsbuilder.media import MediaError

    log = logging.getLogger(f"dsbuilder.stages.{stage}")
    at = now_utc()
    try:
        if path is None:
            raise FileNotFoundError("the sources row has no local_path")
        return {"at": at, **work(path)}, True
    except MediaError as exc:
        log.warning("%s: %s rejected: %s: %s", stage, path, exc.reason, exc.detail)
        reason = exc.reason if keep_reason else "decode_error"
        return {"at": at, "rejected": {"reason": reason, "detail": exc.detail}}, True
    except OSError as exc:
        log.error("%s: cannot read %s: %s", stage, path, exc)
        return {"at": at, "rejected": {"reason": "decode_error",
                                       "detail": f"cannot read file: {exc}"}}, False


def publish(ws: Workspace, result: StageResult) -> StageResult:
    """Write the stage's tables and its part of ``rejections``; every write is atomic."""
    for table, rows in result.rows.items():
        result.tables.append(write_table(ws, table, rows, result.params_hash))
    # de-duplicate by id (the same item can be rejected once per person who asked for it)
    rej = {r.rejection_id: r.row() for r in result.rejections}
    result.tables.append(write_table(ws, "rejections", rej.values(), result.params_hash,
                                     part=result.stage))
    return result
