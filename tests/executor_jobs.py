"""Small compute functions for tests/test_executors.py, importable by worker processes."""

from __future__ import annotations

import os
from pathlib import Path

from dsbuilder.errors import Rejected, StageError


def square(offset: int, x: int) -> int:
    return x * x + offset


def pid(_ctx, _x) -> int:
    import time

    time.sleep(0.3)  # long enough that the pool starts its second worker
    return os.getpid()


def die_on(bad: int, x: int) -> int:
    """Kills its worker (as the OOM killer would) on every attempt of item ``bad``."""
    if x == bad:
        os.kill(os.getpid(), 9)
    return x


def buggy(_ctx, x: int) -> int:
    if x == 2:
        raise ValueError("a bug in one item")
    return x


def flaky(marker_dir: str, x: int) -> int:
    """Fails transiently on the first attempt of each item, then works."""
    marker = Path(marker_dir) / f"{x}.tried"
    if not marker.exists():
        marker.write_text("1")
        raise Rejected("timeout", "slow server", transient=True)
    return x


def always_transient(_ctx, x: int) -> int:
    raise Rejected("timeout", f"item {x} never answers", transient=True)


def cannot_run(_ctx, _x) -> int:
    raise StageError("the model is missing", "pull it")
