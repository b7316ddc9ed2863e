"""Progress bars that move inside long work: seconds of video, bytes of a download.

A stage opens a bar over everything it will do (:func:`media_bar`: the total seconds of its videos or
tracks) and tells it which item starts (:meth:`MediaBar.item`); the code deep inside that decodes
frames reports how far it got (:func:`at_time`, :func:`add_bytes`) without a callback threaded
through every signature: the active bar lives in a context variable. With no active bar, or with
bars disabled (``--no-progress`` or ``-q``), reporting costs one lookup.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

_active: contextvars.ContextVar["MediaBar | None"] = contextvars.ContextVar("dsbuilder_bar",
                                                                           default=None)

#: Set by ``dsbuilder -q``: no bar anywhere.
QUIET = False


class MediaBar:
    """A tqdm bar in seconds (or bytes) over several items; positions within the current item."""

    def __init__(self, desc: str, total: float, unit: str, enabled: bool, leave: bool = True):
        from tqdm import tqdm

        self._bar = tqdm(total=round(total, 1), desc=desc, unit=unit, disable=not enabled,
                         unit_scale=unit == "B", dynamic_ncols=True, leave=leave)
        self._base = 0.0
        self._length = 0.0
        self._pos = 0.0

    def item(self, length: float, name: str | None = None) -> None:
        """Start the next item of ``length`` (its predecessor counts as done)."""
        self._finish_item()
        self._length = max(0.0, float(length or 0.0))
        if name:
            self._bar.set_postfix_str(name, refresh=False)

    def done(self, length: float, name: str | None = None) -> None:
        """An item of ``length`` finished elsewhere (a worker process, or the cache)."""
        self.item(length, name)
        self._finish_item()

    def at(self, position: float) -> None:
        """The current item has got to ``position`` (seconds from its start, or bytes)."""
        p = min(max(0.0, float(position)), self._length) if self._length else 0.0
        if p > self._pos + 0.5 or p >= self._length:
            self._set(self._base + p)
            self._pos = p

    def _set(self, n: float) -> None:
        self._bar.n = round(n, 1)  # tenths: no float noise in the display
        self._bar.update(0)  # redraws when tqdm's interval has passed

    def transfer(self, done: float, total: float | None) -> None:
        """A byte count: ``done`` of ``total`` (None or 0 when the server did not say)."""
        if total and self._bar.total != total:
            self._bar.total = total
        if done > self._bar.n:
            self._set(done)

    def _finish_item(self) -> None:
        self._base += self._length
        self._pos = 0.0
        self._length = 0.0
        if self._bar.n < self._base:
            self._set(self._base)

    def close(self) -> None:
        self._finish_item()
        self._bar.close()


@contextlib.contextmanager
def media_bar(desc: str, total: float, *, enabled: bool = True, unit: str = "s",
              leave: bool = True) -> Iterator[MediaBar]:
    """The active bar for the block (nested bars replace the outer one inside)."""
    bar = MediaBar(desc, total, unit, enabled and not QUIET, leave)
    token = _active.set(bar)
    try:
        yield bar
    finally:
        _active.reset(token)
        bar.close()


def at_time(t: float, start: float = 0.0) -> None:
    """Report that decoding reached ``t`` seconds (``start``: the item's own start time)."""
    bar = _active.get()
    if bar is not None:
        bar.at(t - start)


def current() -> Any:
    """The active bar, or None."""
    return _active.get()


def over(items: list, desc: str, length: Any, *, enabled: bool = True) -> Iterator[Any]:
    """Iterate ``items`` under a seconds bar: ``length(item)`` seconds each; decoding inside an item
    moves the bar within it (:func:`at_time`, times from the item's start)."""
    with media_bar(desc, sum(float(length(x) or 0) for x in items), enabled=enabled) as bar:
        for x in items:
            bar.item(float(length(x) or 0))
            yield x
