"""Run a recipe's stages in order, resumably.

Each stage reads what the previous stages wrote to the workspace's manifests and caches its own per-item
work, so ``run`` after a crash, or after a parameter change, redoes only what is missing or affected.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from dsbuilder.stages import STAGES
from dsbuilder.errors import UsageError
from dsbuilder.recipe import Recipe
from dsbuilder.stages import get_spec, stage_runner
from dsbuilder.stages.base import StageResult
from dsbuilder.workspace import Workspace

if TYPE_CHECKING:
    from dsbuilder.executors import Executor, ExecutorConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """Which stages run, and which of them ignore their cache."""

    stages: tuple[str, ...]
    force: frozenset[str]


def plan(until: str | None = None, only: Iterable[str] = (), force: Iterable[str] = ()) -> Plan:
    """Resolve ``--until``, ``--only`` and ``--force`` against the stage order."""
    only = tuple(only)
    force = frozenset(force)
    for name in (*only, *force, *([until] if until else [])):
        if name not in STAGES:
            raise UsageError(f"unknown stage {name!r}", f"stages are: {', '.join(STAGES)}")
    if only and until:
        raise UsageError("--only and --until cannot be combined",
                         "use --only to run single stages, or --until to stop after one")
    if only:
        chosen = tuple(s for s in STAGES if s in only)
    elif until:
        chosen = STAGES[: STAGES.index(until) + 1]
    else:
        chosen = STAGES
    return Plan(chosen, force)


def run_stage(name: str, recipe: Recipe, ws: Workspace, *, force: bool = False,
              retry_failed: bool = False, progress: bool = True,
              executor: Executor | None = None) -> StageResult:
    runner = stage_runner(name)
    kwargs: dict = {"force": force, "progress": progress}
    if "retry_failed" in get_spec(name).run_options():
        kwargs["retry_failed"] = retry_failed
    if executor is not None and "executor" in inspect.signature(runner).parameters:
        kwargs["executor"] = executor
    log.info("stage %s: starting%s", name,
             f" ({executor.name} executor, {executor.jobs} jobs)" if executor else "")
    result = runner(recipe, ws, **kwargs)
    log.info("stage %s: %s", name, result.summary())
    return result


def run(recipe: Recipe, ws: Workspace, p: Plan | None = None, *, retry_failed: bool = False,
        progress: bool = True, executor: ExecutorConfig | None = None) -> list[StageResult]:
    """Run the plan's stages in order. ``executor`` (default: the recipe's ``run:`` section, else
    local) computes the work items of every stage; one executor serves the whole run."""
    from dsbuilder.executors import make_executor

    p = p or plan()
    with make_executor(executor or recipe.executor) as ex:
        return [run_stage(s, recipe, ws, force=s in p.force, retry_failed=retry_failed,
                          progress=progress, executor=ex) for s in p.stages]
