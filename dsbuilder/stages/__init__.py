"""The stages, in order. Each is a module ``dsbuilder.stages.<name>`` with a ``SPEC``
(:class:`dsbuilder.stages.spec.StageSpec`: its whole contract) and a ``run`` function.

Adding a stage: write its module (copy ``shots.py``: spec, run, compute), add its name to
:data:`STAGES` where it belongs in the order, and regenerate ``docs/stages.md``
(``python -m dsbuilder.stages > docs/stages.md``). Modules are imported on use, so the CLI stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from dsbuilder.stages.spec import StageSpec

#: Stage order. A stage may read the tables of every stage before it.
STAGES: tuple[str, ...] = ("scrape", "shots", "dictionary", "faces", "speakers", "label", "report")


def get_spec(name: str) -> "StageSpec":
    """The stage's specification (imports its module)."""
    if name not in STAGES:
        raise KeyError(name)
    return importlib.import_module(f"dsbuilder.stages.{name}").SPEC


def specs() -> list["StageSpec"]:
    return [get_spec(s) for s in STAGES]


def spec_help(name: str) -> str:
    """The stage's ``SPEC.help``, read from its source without importing it (``dsbuilder --help``
    lists every stage and must not import numpy and the models' libraries for that)."""
    import ast
    from pathlib import Path

    tree = ast.parse((Path(__file__).parent / f"{name}.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "SPEC"
                and isinstance(node.value, ast.Call)):
            for kw in node.value.keywords:
                if kw.arg == "help":
                    return ast.literal_eval(kw.value)
    return get_spec(name).help


def stage_runner(name: str) -> Callable:
    if name not in STAGES:
        raise KeyError(name)
    return importlib.import_module(f"dsbuilder.stages.{name}").run


class _FromSpecs(Mapping):
    """A read-only ``{stage: spec.<attr>}`` map, filled from the specs on first use."""

    def __init__(self, get: Callable[["StageSpec"], object]):
        self._get = get

    def __getitem__(self, name: str):
        if name not in STAGES:
            raise KeyError(name)
        return self._get(get_spec(name))

    def __iter__(self) -> Iterator[str]:
        return iter(STAGES)

    def __len__(self) -> int:
        return len(STAGES)


#: Each stage's code version (``SPEC.code_version``): part of every cache key of the stage.
CODE_VERSIONS: Mapping[str, str] = _FromSpecs(lambda s: s.code_version)

#: Each stage's recipe parameters (``SPEC.params``).
STAGE_PARAMS: Mapping = _FromSpecs(lambda s: s.params)

#: Each stage's rejection reason codes, executor reasons included (``SPEC.all_reasons()``).
REASONS: Mapping = _FromSpecs(lambda s: tuple(s.all_reasons()))
