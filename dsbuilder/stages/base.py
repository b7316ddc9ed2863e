"""What every stage shares: rejections as data, per-item failures, and publishing tables.

A stage is a library function ``run(recipe, ws, *, force=False) -> StageResult`` in
``dsbuilder/stages/<stage>.py``. It works item by item; each finished item (kept or rejected) is a cache
record keyed by :func:`dsbuilder.workspace.item_key`, so an interrupted run resumes where it stopped.
One bad item never stops the run: it raises :class:`ItemRejected` inside the item's work, and becomes a
``rejections`` row with the stage, a reason code and a detail.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from dsbuilder.manifest.io import write_table
from dsbuilder.workspace import Workspace


class ItemRejected(Exception):
    """Raised inside one item's work: the item is dropped with ``reason`` (a code) and ``detail``."""

    def __init__(self, reason: str, detail: str, **extra: Any):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.extra = extra


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


@dataclass
class Rejection:
    stage: str
    item_id: str
    reason: str
    detail: str
    source_id: str | None = None
    person_id: str | None = None
    at: str = field(default_factory=now_utc)

    @property
    def rejection_id(self) -> str:
        key = f"{self.stage}\0{self.item_id}\0{self.reason}\0{self.source_id}\0{self.person_id}"
        return "rej-" + hashlib.sha256(key.encode()).hexdigest()[:16]

    def row(self) -> dict[str, Any]:
        return {"rejection_id": self.rejection_id, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Rejection":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


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
