"""What every fetcher shares: the failure type, retries with backoff, per-host rate limits, hashing."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlsplit

from dsbuilder.errors import Rejected as ItemRejected

log = logging.getLogger(__name__)

T = TypeVar("T")


class FetchFailed(ItemRejected):
    """One item could not be fetched. ``reason`` is a rejection code (``http_error``, ``timeout``...).

    ``transient`` marks failures that may go away by themselves (timeouts, 5xx, 429, broken
    connections, truncated bodies): they are retried with backoff, and a later run with
    ``--retry-failed`` tries them again. ``content_type`` is set when the server's answer got that far.
    """

    def __init__(self, reason: str, detail: str, *, transient: bool = False,
                 content_type: str | None = None):
        super().__init__(reason, detail, transient=transient)
        self.transient = transient
        self.content_type = content_type


def with_retries(attempt: Callable[[], T], *, retries: int, backoff_s: float, what: str) -> T:
    """Call ``attempt`` until it succeeds; retry transient :class:`FetchFailed` up to ``retries`` times.

    The n-th retry waits ``backoff_s * 2**(n-1)`` seconds. Permanent failures, and the last transient
    one, are raised to the caller.
    """
    n = 0
    while True:
        try:
            return attempt()
        except FetchFailed as exc:
            if not exc.transient or n >= retries:
                raise
            delay = backoff_s * (2 ** n)
            n += 1
            log.info("%s: %s; retry %d/%d in %.2f s", what, exc, n, retries, delay)
            time.sleep(delay)


def host_of(url: str) -> str:
    """The rate-limit key of a URL: its lower-cased host[:port] (or the scheme, e.g. 'ytsearch')."""
    parts = urlsplit(url)
    return (parts.netloc or parts.scheme or url.split(":", 1)[0]).lower()


class HostRateLimiter:
    """At least ``min_interval_s`` between the starts of two requests to one host. Thread-safe.

    Each caller reserves the next free slot for its host under a lock, then sleeps outside the lock
    until that slot, so waiting for one host never blocks requests to another.
    """

    def __init__(self, min_interval_s: float):
        self.min_interval_s = float(min_interval_s)
        self._next_free: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, url: str) -> None:
        if self.min_interval_s <= 0:
            return
        host = host_of(url)
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_free.get(host, 0.0))
            self._next_free[host] = slot + self.min_interval_s
        if slot > now:
            time.sleep(slot - now)


@dataclass(frozen=True)
class Deadline:
    """A point in time after which an item's attempt gives up (``timeout``)."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def check(self, what: str, seconds: float) -> None:
        if time.monotonic() > self.at:
            raise FetchFailed("timeout", f"{what}: took longer than the per-item timeout of "
                              f"{seconds:g} s", transient=True)


def copy_hashing(src: str | Path, dst: str | Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` while hashing it; return ``(sha256 hex, bytes)``. ``dst`` is fsynced."""
    h = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(chunk):
            h.update(block)
            fout.write(block)
            size += len(block)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest(), size


def place_file(tmp: str | Path, target: str | Path, sha256: str) -> Path:
    """Move a hashed temporary file to ``target`` with ``os.replace``.

    If ``target`` already holds the same content (same size and sha256), the temporary file is
    dropped instead, so a file that is already in place is never rewritten.
    """
    from dsbuilder.workspace import sha256_file

    tmp, target = Path(tmp), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.stat().st_size == tmp.stat().st_size \
            and sha256_file(target) == sha256:
        tmp.unlink()
        return target
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    return target


def file_matches(path: Path, sha256: str, size: int | None = None) -> bool:
    """Whether ``path`` exists with this sha256 (and size, checked first because it is cheap)."""
    from dsbuilder.workspace import sha256_file

    try:
        if size is not None and path.stat().st_size != size:
            return False
        return sha256_file(path) == sha256
    except OSError:
        return False


_EXT_RE = re.compile(r"^[a-z0-9]{1,8}$")


def safe_ext(ext: str | None, fallback: str = "bin") -> str:
    """A file extension safe for our own file names: lower-case letters and digits only."""
    ext = (ext or "").lower().lstrip(".")
    return ext if _EXT_RE.match(ext) else fallback


def remove_tree(path: str | Path | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


def tool_versions() -> str:
    """JSON of the versions of the tools that fetch and read media (no heavy imports)."""
    from importlib import metadata

    from dsbuilder import __version__

    out = {"dsbuilder": __version__}
    for dist in ("yt-dlp", "requests", "av", "pillow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return json.dumps(out, sort_keys=True, separators=(",", ":"))
