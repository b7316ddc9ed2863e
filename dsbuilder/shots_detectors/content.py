"""``content``: PySceneDetect's :class:`~scenedetect.detectors.ContentDetector`.

It reports a cut where a frame's mean HSV difference from the previous frame reaches a fixed
``threshold`` (27 by default, on a 0-255 scale). Cuts closer than the minimum shot length to the
previous one are merged (PySceneDetect's ``FlashFilter`` in MERGE mode), so a flash does not split a
shot. No look-ahead: a cut is known at the frame it happens.
"""

from __future__ import annotations

from typing import Any

from dsbuilder.shots_detectors.base import ScenedetectDetector


class ContentShotDetector(ScenedetectDetector):
    """``scenedetect.detectors.ContentDetector`` with our threshold and minimum shot length (in
    frames, from ``min_shot_s``)."""

    name = "content"
    default_threshold = 27.0  # ContentDetector's threshold on the 0-255 HSV difference

    def make_scenedetect_detector(self) -> Any:
        from scenedetect.detectors import ContentDetector

        return ContentDetector(threshold=self.threshold, min_scene_len=self.min_shot_frames)
