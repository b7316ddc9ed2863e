"""Stage registry: name -> module. Modules are imported on use, so the CLI stays fast."""

from __future__ import annotations

import importlib
from typing import Callable

from dsbuilder.config import STAGES

#: Bump a stage's code version when its output for the same input and parameters changes:
#: this invalidates its cache records (and, through the data, what depends on them).
CODE_VERSIONS = {
    "scrape": "1",
    "dictionary": "1",
    "shots": "2",
    "faces": "2",
    "speakers": "2",
    "label": "2",
    "report": "1",
}


def stage_runner(name: str) -> Callable:
    if name not in STAGES:
        raise KeyError(name)
    return importlib.import_module(f"dsbuilder.stages.{name}").run
