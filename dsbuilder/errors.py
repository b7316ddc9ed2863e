"""Typed exceptions. The library raises these; the CLI turns them into one line plus a fix hint.

Exit codes: :class:`UsageError` subclasses map to 2 (bad recipe, bad arguments), every other
:class:`DsbuilderError` to 1 (a run failed).
"""

from __future__ import annotations


class DsbuilderError(Exception):
    """Base class. ``hint`` tells the user how to fix the problem."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(DsbuilderError):
    exit_code = 2


class RecipeError(UsageError):
    """The recipe file is missing, malformed or invalid. ``line`` is 1-based when known."""

    def __init__(self, message: str, hint: str | None = None, *, path: str | None = None,
                 line: int | None = None):
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(where + message, hint)
        self.path = path
        self.line = line


class WorkspaceError(DsbuilderError):
    """The workspace is missing, unwritable, or inconsistent."""


class ManifestError(DsbuilderError):
    """A manifest failed validation."""


class StageError(DsbuilderError):
    """A stage could not run at all (as opposed to one item failing, which is a rejection row)."""


class PeopleLostError(DsbuilderError):
    """The run finished, but some recipe person has no kept reference face, so nothing of them can
    be found in the videos. Exit status 3 (the manifests are written; the other people are done)."""

    exit_code = 3
