"""Torch's intra-op thread count for one block of work, restored afterwards.

Torch keeps one process-wide thread count. Our small networks each have a best setting (measured: the
FER mini-Xception and the voice LSTM are fastest on one thread and suffer from OpenMP contention with
OpenCV's and dlib's threads; the face ResNet port gains from two), so each sets it around its own calls
instead of changing it for the whole process.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None or 0: leave the count as it is)."""
    import torch

    prev = torch.get_num_threads()
    if n and n != prev:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != prev:
            torch.set_num_threads(prev)
