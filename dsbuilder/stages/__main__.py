"""``python -m dsbuilder.stages``: print docs/stages.md from the stages' specifications."""

from dsbuilder.stages import specs

print("# Stages\n\nWritten by `python -m dsbuilder.stages > docs/stages.md` from each stage's `SPEC` "
      "(`dsbuilder/stages/<stage>.py`); do not edit by hand. Every stage may also reject an item "
      "with `internal_error` or `worker_lost` (see `dsbuilder/executors.py`).\n")
print("\n".join(s.markdown() for s in specs()), end="")
