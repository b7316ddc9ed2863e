"""Every default and allowed value, in one place.

Like PySceneDetect's ``_cli/config.py``, this module is the single map of what a recipe may say.
:mod:`dsbuilder.recipe` validates a recipe against it (unknown keys and wrong types are errors naming
the YAML line and the allowed values) and fills in defaults; ``dsbuilder recipe show`` prints the result.
Stage code reads its parameters from the validated recipe, never from literals of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dsbuilder import __version__


@dataclass(frozen=True)
class Param:
    """One recipe parameter: its type, default and allowed values."""

    type: type | tuple[type, ...]
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = False

    def describe(self) -> str:
        """Human-readable allowed values, used in error messages."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        names = self.type if isinstance(self.type, tuple) else (self.type,)
        text = " or ".join(t.__name__ for t in names)
        if self.min is not None or self.max is not None:
            lo = "-inf" if self.min is None else f"{self.min:g}"
            hi = "inf" if self.max is None else f"{self.max:g}"
            text += f" in [{lo}, {hi}]"
        if self.nullable:
            text += " or null"
        return text


USER_AGENT = (
    f"dsbuilder/{__version__} (dataset research tool; honours robots.txt; "
    "+https://github.com/dsbuilder/dsbuilder)"
)

#: Stage order. A stage depends on every stage before it.
STAGES: tuple[str, ...] = ("scrape", "shots")

#: ``limits:`` section. Applied by scrape; hashed into its params.
LIMITS: dict[str, Param] = {
    "max_duration_s": Param((int, float), 3600, "longest video to keep, seconds", min=0.1),
    "max_filesize_mb": Param((int, float), 500, "largest file (video or photo) to download, MiB",
                             min=0.001),
    "max_items_per_query": Param(int, 10, "entries taken from one playlist, channel or search",
                                 min=1),
}

#: ``licences:`` section.
LICENCES: dict[str, Param] = {
    "allow": Param(list, None, "licence codes to keep (see dsbuilder.stages.scrape.normalise_licence); "
                   "null keeps everything and records the licence", nullable=True),
    "default": Param(str, "unknown", "licence recorded for a source that declares none"),
}

#: ``stages:`` section: one map per stage.
STAGE_PARAMS: dict[str, dict[str, Param]] = {
    "scrape": {
        "video_format": Param(
            str, "best[height<=?720][acodec!=none]/best[height<=?720]",
            "yt-dlp format selector (single-file formats: no ffmpeg merge is needed)"),
        "require_audio": Param(bool, True, "reject videos without an audio stream"),
        "timeout_s": Param((int, float), 60.0, "per-item timeout: connect/read and total", min=0.1),
        "retries": Param(int, 3, "retries on timeouts and 5xx, with exponential backoff", min=0,
                         max=20),
        "backoff_s": Param((int, float), 1.0, "first backoff delay; doubles per retry", min=0.0),
        "min_interval_s": Param((int, float), 1.0, "minimum delay between requests to one host",
                                min=0.0),
        "respect_robots": Param(bool, True, "honour robots.txt for HTTP photo fetching"),
        "user_agent": Param(str, USER_AGENT, "User-Agent sent with every request"),
        "min_photo_px": Param(int, 32, "reject photos whose shorter side is smaller", min=1),
    },
    "shots": {
        # choices must match dsbuilder.shots_detectors.DETECTORS (tests/test_shots.py checks it)
        "detector": Param(str, "adaptive", "shot-boundary detector (see dsbuilder/shots_detectors)",
                          choices=("adaptive", "content")),
        "threshold": Param((int, float), None,
                           "detector threshold; null takes the detector's default "
                           "(adaptive: ratio to neighbouring frames, 3.0; content: 27.0)",
                           min=0.0, nullable=True),
        "min_content_val": Param((int, float), 15.0,
                                 "adaptive only: minimum content change for a cut", min=0.0),
        "min_shot_s": Param((int, float), 0.5, "shortest shot; shorter ones become rejections",
                            min=0.0),
        "downscale_width": Param(int, 320, "frames are resized to this width before detection "
                                 "(0 keeps full size)", min=0),
    },
}

#: Top level of a recipe.
TOP_LEVEL = ("name", "workspace", "people", "licences", "limits", "stages")

#: One ``people:`` entry.
PERSON_KEYS = ("id", "name", "photos", "videos")

#: A source entry may be a string or a mapping with these keys.
SOURCE_KEYS = ("url", "path", "licence", "note")


def stage_defaults(stage: str) -> dict[str, Any]:
    return {k: p.default for k, p in STAGE_PARAMS[stage].items()}
