"""Every default and allowed value, in one place.

Like PySceneDetect's ``_cli/config.py``, this module is the single map of what a recipe may say: the
sections shared by the whole recipe are here, each stage's own parameters are in its ``SPEC``
(``dsbuilder/stages/<stage>.py``) and :data:`STAGE_PARAMS` gathers them.
:mod:`dsbuilder.recipe` validates a recipe against it (unknown keys and wrong types are errors naming
the YAML line and the allowed values) and fills in defaults; ``dsbuilder recipe show`` prints the result.
Stage code reads its parameters from the validated recipe, never from literals of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dsbuilder import __version__
# Stage order and each stage's parameters live with the stages (``SPEC`` in each module); they are
# re-exported here because this is the map of everything a recipe may say.
from dsbuilder.stages import STAGE_PARAMS, STAGES  # noqa: F401 (re-exported)


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


#: ``limits:`` section. Applied by scrape; hashed into its params.
LIMITS: dict[str, Param] = {
    "max_duration_s": Param((int, float), 3600, "longest video to keep, seconds", min=0.1),
    "max_filesize_mb": Param((int, float), 500, "largest file (video or photo) to download, MiB",
                             min=0.001),
    "max_items_per_query": Param(int, 10, "entries taken from one playlist, channel or search",
                                 min=1),
}

#: ``run:`` section: who computes the work items. Not part of any stage's parameters: the
#: manifests are the same whichever executor runs (``dsbuilder run --executor/--jobs`` override it).
RUN: dict[str, Param] = {
    "executor": Param(str, "local", "local (this process), process (a pool of worker processes on "
                      "this machine) or ray (Ray tasks: a local Ray, or a cluster with ray_address)",
                      choices=("local", "process", "ray")),
    "jobs": Param(int, 1, "items computed at once (process and local ray: worker processes)",
                  min=1, max=1024),
    "ray_address": Param(str, None, "Ray cluster to join (e.g. ray://head:10001 or auto); null "
                         "starts a local Ray", nullable=True),
}

#: ``licences:`` section.
LICENCES: dict[str, Param] = {
    "allow": Param(list, None, "licence codes to keep (see dsbuilder.stages.scrape.normalise_licence); "
                   "null keeps everything and records the licence", nullable=True),
    "default": Param(str, "unknown", "licence recorded for a source that declares none"),
}







def _distil_params(epochs: int, lr: float, batch_size: int, unit: str) -> dict[str, Param]:
    """The options every distilled student has (dsbuilder.train.distil.DistilOptions)."""
    return {
        "epochs": Param(int, epochs, f"passes over the training {unit}s", min=1, max=10000),
        "lr": Param(float, lr, "Adam learning rate", min=1e-7, max=1.0),
        "batch_size": Param(int, batch_size, f"{unit}s per step", min=1, max=4096),
        "temperature": Param(float, 2.0, "distillation temperature (teacher and student)",
                             min=0.1, max=20.0),
        "seed": Param(int, 0, f"seed of the weights and of the order of the {unit}s", min=0),
    }


#: Options of the bundled trainers (``dsbuilder train ...``), per trainer.
TRAIN_PARAMS: dict[str, dict[str, Param]] = {
    "speech": {
        **_distil_params(30, 1e-3, 16, "clip"),
        "window_s": Param(float, 2.0, "audio window the student hears (a random one of each clip "
                          "per epoch), seconds", min=0.2, max=30.0),
        "speaking_only": Param(bool, True, "train on clips where the person speaks only"),
    },
    "fer": {
        **_distil_params(10, 1e-4, 64, "frame"),
        "target": Param(str, "smoothed", "the teacher's labels over time (fer_probs_smoothed) or "
                        "per frame (fer_probs)", choices=("smoothed", "frame")),
        "max_frames_per_clip": Param(int, 64, "frames used per clip, evenly spread", min=1),
    },
}

#: The label parameters the cached FER outputs depend on (others are recomputed from them).
LABEL_FER_PARAMS = ("fer_model", "crop_fraction")

#: Top level of a recipe.
TOP_LEVEL = ("name", "workspace", "people", "licences", "limits", "run", "stages")

#: One ``people:`` entry.
PERSON_KEYS = ("id", "name", "photos", "videos")

#: A source entry may be a string or a mapping with these keys.
SOURCE_KEYS = ("url", "path", "licence", "split", "note")

#: The splits of the clips table, in order (a video entry's ``split:`` names one).
SPLITS = ("train", "val", "test")


def stage_defaults(stage: str) -> dict[str, Any]:
    return {k: p.default for k, p in STAGE_PARAMS[stage].items()}
