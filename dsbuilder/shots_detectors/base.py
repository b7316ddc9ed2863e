"""The interface every shot-boundary detector implements, and an adapter for PySceneDetect's detectors.

The ``shots`` stage owns decoding: it streams frames with :func:`dsbuilder.media.iter_frames` and feeds
them, one at a time and in order, to a :class:`ShotDetector`. The detector only says *which frame
indices begin a new shot*; the stage turns those indices into start/end frames and presentation times.
So a detector never sees timestamps and never holds the whole video.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:  # annotations only: importing the registry stays light (dsbuilder --help)
    import numpy as np


def min_shot_frames(min_shot_s: float, fps: float) -> int:
    """``min_shot_s`` as a whole number of frames at ``fps``, rounded up (a shot of that many frames
    lasts at least ``min_shot_s``)."""
    if min_shot_s <= 0:
        return 0
    return max(1, math.ceil(min_shot_s * fps - 1e-6))


class ShotDetector(ABC):
    """Finds shot boundaries in a stream of frames.

    Subclasses set :attr:`name` (the registry key, written to the ``detector`` column) and
    :attr:`default_threshold` (used when ``stages.shots.threshold`` is null), and implement
    :meth:`process`. Create one instance per video: detectors keep state between frames.
    """

    #: Registry key, as written in ``stages.shots.detector`` and in the ``detector`` column.
    name: ClassVar[str]
    #: Threshold used when the recipe leaves ``threshold`` null; its meaning is the detector's own.
    default_threshold: ClassVar[float]

    def __init__(self, params: Mapping[str, Any], fps: float):
        """
        Arguments:
            params: the ``stages.shots`` parameters (see ``STAGE_PARAMS["shots"]`` in config.py).
            fps: the video's average frame rate, as the container states it. Detectors use it only to
                convert durations to frame counts; times in the output come from frame timestamps.
        """
        self.params = dict(params)
        self.fps = float(fps)
        threshold = self.params.get("threshold")
        self.threshold = float(threshold) if threshold is not None else float(self.default_threshold)
        self.min_shot_frames = min_shot_frames(float(self.params.get("min_shot_s", 0.0)), self.fps)

    @abstractmethod
    def process(self, index: int, image: np.ndarray) -> list[int]:
        """Look at frame ``index`` (BGR, uint8, H x W x 3; indices start at 0 and go up by one).

        Returns the indices of frames that begin a new shot, found so far (may be empty; may lie in
        the past, for detectors that look ahead).
        """

    def finish(self, n_frames: int) -> list[int]:
        """Called once after the last frame; returns any cuts still held back. ``n_frames`` is the
        number of frames that were processed."""
        return []


class ScenedetectDetector(ShotDetector):
    """Adapter for a ``scenedetect.SceneDetector`` (PySceneDetect 0.7).

    PySceneDetect 0.7 detectors take ``process_frame(timecode, frame_img)`` with a
    ``FrameTimecode(frame_num, fps)``; ``fps`` must be a float or Fraction (an ``int`` is refused as an
    accidental frame count). The cuts they return are ``FrameTimecode`` s of the first frame of the new
    scene; we read their ``frame_num`` back, which is exact because we built them from frame numbers.
    """

    def __init__(self, params: Mapping[str, Any], fps: float):
        super().__init__(params, fps)
        self._detector = self.make_scenedetect_detector()

    @abstractmethod
    def make_scenedetect_detector(self) -> Any:
        """Build the wrapped ``scenedetect`` detector from ``self.threshold``, ``self.min_shot_frames``
        and ``self.params``. Import ``scenedetect`` inside this method (it pulls in OpenCV)."""

    def _timecode(self, index: int) -> Any:
        from scenedetect import FrameTimecode

        return FrameTimecode(int(index), self.fps)

    def process(self, index: int, image: np.ndarray) -> list[int]:
        return [tc.frame_num for tc in self._detector.process_frame(self._timecode(index), image)]

    def finish(self, n_frames: int) -> list[int]:
        if n_frames == 0:
            return []
        return [tc.frame_num for tc in self._detector.post_process(self._timecode(n_frames - 1))]
