"""The per-item vocabulary every stage shares: rejection rows and time stamps.

A stage works item by item (a video, a photo, a track). An item that cannot be used raises
:class:`dsbuilder.errors.Rejected` inside its work and ends as a :class:`Rejection`: a ``rejections``
row with the stage, the item id, a reason code and a detail. Nothing here imports a stage.

Time stamps: :func:`now_utc` is the wall clock, or ``SOURCE_DATE_EPOCH`` when that is set (the
reproducible-builds convention): two runs of the same recipe then write byte-identical manifests,
which is how the tests compare executors.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from dsbuilder.errors import Rejected  # noqa: F401 (re-exported)


def now_utc() -> str:
    """ISO 8601 UTC time, microseconds; ``SOURCE_DATE_EPOCH`` (seconds) fixes it."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        t = dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc)
    else:
        t = dt.datetime.now(dt.timezone.utc)
    return t.isoformat(timespec="microseconds")


@dataclass
class Rejection:
    """One ``rejections`` row: what was dropped, by which stage, and why."""

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
