"""Typed exceptions. The library raises these; the CLI turns them into one line plus a fix hint.

Exit codes: :class:`UsageError` subclasses map to 2 (bad recipe, bad arguments), every other
:class:`DsbuilderError` to 1 (a run failed).

:class:`Rejected` is different: it is not an error of the run but the verdict on one work item (a
video, a photo, a track). Stages catch it and record a ``rejections`` row with its ``reason`` code and
``detail``; the run goes on. Its subclasses name where the verdict came from (a media file, a photo,
the active-speaker input, a fetch).
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


class Rejected(Exception):
    """One work item is dropped: ``reason`` is a rejection code (``dsbuilder.manifest.schema.REASONS``),
    ``detail`` says why in words. ``transient`` marks verdicts that may not hold on a later try (a
    timeout, a file that could not be read at all): they are retried, and never cached."""

    def __init__(self, reason: str, detail: str, *, transient: bool = False, **extra):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.transient = transient
        self.extra = extra

    def __reduce__(self):  # picklable with its keyword arguments (process and Ray workers)
        return (_rebuild_rejected, (type(self), self.reason, self.detail, self.transient,
                                    self.extra, self.__dict__))


def _rebuild_rejected(cls, reason, detail, transient, extra, state):
    exc = Exception.__new__(cls)
    Exception.__init__(exc, f"{reason}: {detail}")
    exc.__dict__.update(state)
    return exc


class MediaError(Rejected):
    """A media file cannot be used (not decodable, no video stream...)."""


class PhotoError(Rejected):
    """A photo cannot be used at all (``decode_error``)."""


class AsdInputError(Rejected):
    """A track cannot be given to the active-speaker model."""
