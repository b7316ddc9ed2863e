"""The workspace on disk, atomic writes and the per-item work cache.

Layout::

    <workspace>/raw/<kind>s/<source_id>.<ext>   downloaded or copied media (names from hashes only)
    <workspace>/cache/<stage>/<key>.json        one record per finished work item
    <workspace>/manifests/<table>.parquet       the manifests (or a folder of parts)
    <workspace>/logs/run.log                    the log of every run

A work item's key is ``sha256(input id, stage params hash, stage code version)``: a rerun with nothing
changed finds every record and does no work; changing a stage parameter changes the keys of that stage
and, because their inputs are that stage's outputs, of what depends on it.

Every file is written to a temporary name in the same folder, fsynced, then renamed over the target,
so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from dsbuilder.errors import WorkspaceError

log = logging.getLogger(__name__)

# --- crash injection for tests ----------------------------------------------------------------
# DSBUILDER_KILL_AT="<n>" sends SIGKILL to this process at the n-th atomic write, between writing the
# temporary file and renaming it (the worst moment). "<n>:after" kills right after the rename.
# Tests use it to show that a rerun after a crash at any point gives identical manifests.
_writes = 0
_UMASK = os.umask(0)
os.umask(_UMASK)


def _maybe_die(phase: str) -> None:
    spec = os.environ.get("DSBUILDER_KILL_AT")
    if not spec:
        return
    n, _, when = spec.partition(":")
    if _writes == int(n) and (when or "before") == phase:
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success fsync it and rename it over ``target``."""
    global _writes
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        _writes += 1
        _maybe_die("before")
        os.replace(tmp_path, target)
        _maybe_die("after")
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(target: str | Path, obj: Any) -> None:
    atomic_write_bytes(target, (json.dumps(obj, sort_keys=True, indent=1, default=str) + "\n").encode())


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def item_key(input_id: str, params_hash: str, code_version: str) -> str:
    return hashlib.sha256(f"{input_id}\0{params_hash}\0{code_version}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def open(cls, root: str | Path) -> "Workspace":
        root = Path(root).resolve()
        try:
            for sub in ("raw", "cache", "manifests", "logs"):
                (root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkspaceError(f"cannot create workspace {root}: {exc.strerror}",
                                 "pass a writable folder with --workspace") from None
        ws = cls(root)
        ws.sweep_temporaries()
        return ws

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def sweep_temporaries(self) -> None:
        """Remove temporary files a crashed run left behind (they were never renamed into place):
        in every folder the stages write (media, cache, manifests, clips, models, report, logs)."""
        for sub in (self.raw, self.cache, self.manifests, self.root / "clips", self.root / "models",
                    self.root / "report", self.logs):
            if not sub.is_dir():
                continue
            for tmp in sub.rglob(".*.tmp"):
                tmp.unlink(missing_ok=True)
            for tmpdir in sub.rglob(".dl-*"):
                if tmpdir.is_dir():
                    import shutil
                    shutil.rmtree(tmpdir, ignore_errors=True)

    # --- per-item cache ---------------------------------------------------------------------
    def record_path(self, stage: str, key: str) -> Path:
        return self.cache / stage / key[:2] / f"{key}.json"

    def get_record(self, stage: str, key: str) -> dict[str, Any] | None:
        p = self.record_path(stage, key)
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:  # cannot happen with atomic writes; be safe
            log.warning("ignoring unreadable cache record %s: %s", p, exc)
            return None

    def put_record(self, stage: str, key: str, record: dict[str, Any]) -> None:
        atomic_write_json(self.record_path(stage, key), record)

    def relpath(self, path: str | Path) -> str:
        """A path stored in manifests: relative to the workspace root, with '/' separators."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    def abspath(self, rel: str) -> Path:
        """The absolute path of a workspace-relative path read from a manifest or a record. It must
        stay inside the workspace (after ``..`` and symlinks are resolved): a manifest naming
        ``../../etc/passwd`` raises :class:`~dsbuilder.errors.WorkspaceError` instead of reaching
        out of it."""
        root = self.root.resolve()
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            raise WorkspaceError(f"path {rel!r} leads out of the workspace {self.root}",
                                 "the manifests or cache records were edited or damaged; "
                                 "`dsbuilder manifest validate` lists what is wrong")
        return path
