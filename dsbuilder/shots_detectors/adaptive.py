"""``adaptive``: PySceneDetect's :class:`~scenedetect.detectors.AdaptiveDetector` (the default).

It scores each frame by its HSV difference from the previous frame (like ``content``) and reports a cut
where that score is ``threshold`` times the mean score of the ``window_width`` frames on either side and
at least ``min_content_val``. Comparing with the neighbourhood makes it robust to fast camera motion;
the price is a look-ahead of ``window_width`` (2) frames, and gradual transitions (fades, dissolves)
whose change is spread over many frames may not stand out from their neighbours.
"""

from __future__ import annotations

from typing import Any

from dsbuilder.shots_detectors.base import ScenedetectDetector


class AdaptiveShotDetector(ScenedetectDetector):
    """``scenedetect.detectors.AdaptiveDetector`` with our threshold, ``min_content_val`` and minimum
    shot length (in frames, from ``min_shot_s``)."""

    name = "adaptive"
    default_threshold = 3.0  # AdaptiveDetector's adaptive_threshold: a ratio to the local mean

    def make_scenedetect_detector(self) -> Any:
        from scenedetect.detectors import AdaptiveDetector

        return AdaptiveDetector(
            adaptive_threshold=self.threshold,
            min_scene_len=self.min_shot_frames,
            min_content_val=float(self.params.get("min_content_val", 15.0)),
        )
