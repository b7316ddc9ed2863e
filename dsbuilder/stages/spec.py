"""A stage's whole contract in one value: :class:`StageSpec`.

Every stage module defines ``SPEC`` near its top: the tables it reads and writes, its recipe
parameters (``stages.<name>``), its rejection reason codes and what they mean, its code version, its
help, and the extra options of its CLI command. Everything else reads it: recipe validation and
``dsbuilder recipe show`` (the parameters), ``dsbuilder manifest validate`` (the reason codes), the
cache keys (the code version), the CLI (help and options), the pipeline (order and options passed to
``run``) and ``docs/stages.md`` (written by ``python -m dsbuilder.stages``).

A stage module then has three parts, as the executor needs them (:mod:`dsbuilder.executors`):
``run`` lists the work items from the manifests and publishes the tables, and module-level compute
functions turn one item's payload into a cache record, in any process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dsbuilder.config import Param

#: Reasons any stage may give, because an executor gives them (:mod:`dsbuilder.executors`).
EXECUTOR_REASONS = {
    "internal_error": "the item's work raised an unexpected error (a bug; the traceback is in "
                      "logs/run.log); not cached, the next run tries again",
    "worker_lost": "the worker process computing the item died on every retry (out of memory, a "
                   "crash in a native library); not cached, the next run tries again",
}


@dataclass(frozen=True)
class CliOption:
    """An extra option of the stage's command (``dsbuilder <stage> RECIPE``).

    ``target`` says what it does: ``run`` passes it to the stage's ``run`` as a keyword (``dsbuilder
    run`` has it too), ``param`` overrides the recipe parameter of the same name, ``action`` replaces
    running the stage by ``action`` (``"module:function"``, called with the recipe, the workspace, the
    option's value and the other options).
    """

    decls: tuple[str, ...]
    help: str
    target: str = "run"
    is_flag: bool = False
    metavar: str | None = None
    kind: str = "text"  # text, file (an existing file), existing (file or folder), path (any)
    action: str | None = None

    @property
    def dest(self) -> str:
        long = next(d for d in self.decls if d.startswith("--"))
        return long[2:].replace("-", "_")


@dataclass(frozen=True)
class StageSpec:
    name: str
    help: str  # first sentence: the command's short help
    reads: tuple[str, ...]  # manifest tables read
    writes: tuple[str, ...]  # manifest tables written (and its part of ``rejections``)
    params: dict[str, Param]
    reasons: dict[str, str]  # rejection code -> what it means
    code_version: str  # bump when the output for the same inputs and parameters changes
    options: tuple[CliOption, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def all_reasons(self) -> dict[str, str]:
        """The stage's own reason codes plus those every executor may give."""
        return {**self.reasons, **EXECUTOR_REASONS}

    def run_options(self) -> tuple[str, ...]:
        """Keyword arguments of ``run`` that options of the CLI give."""
        return tuple(o.dest for o in self.options if o.target == "run")

    def markdown(self) -> str:
        """This stage as a section of ``docs/stages.md``."""
        lines = [f"## {self.name}", "", self.help, "",
                 f"- reads: {', '.join(f'`{t}`' for t in self.reads) or '(the recipe)'}",
                 f"- writes: {', '.join(f'`{t}`' for t in self.writes)}, and its part of "
                 "`rejections`", f"- code version: {self.code_version}", "",
                 "| parameter | default | allowed | meaning |", "|---|---|---|---|"]
        for k, p in self.params.items():
            lines.append(f"| `{k}` | `{p.default!r}` | {p.describe()} | "
                         f"{p.help.replace('|', '/')} |")
        lines += ["", "| rejection reason | meaning |", "|---|---|"]
        lines += [f"| `{k}` | {v} |" for k, v in self.reasons.items()]
        if self.options:
            lines += ["", "Command options: " + "; ".join(
                f"`{'/'.join(o.decls)}`: {o.help}" for o in self.options)]
        return "\n".join(lines) + "\n"
