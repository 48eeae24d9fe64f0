"""Errors a user can fix. The CLI prints their message as one line, without a traceback, and exits
non-zero; the message names the problem and what to do about it ("problem — fix").

Other packages subclass :class:`UserError` for their own input errors (the data package's
``DataError``, for example) so that one ``except UserError`` at the edge catches them all.
"""

from __future__ import annotations

import errno
from typing import Any

__all__ = ["UserError", "ConfigError", "CheckpointError", "TrainingError", "brief", "os_error_message"]

# errno → (what happened, what to do)
_OS_ERRORS = {
    errno.ENOSPC: ("disk full (no space left on device)", "free space and run again (a training run: --resume)"),
    errno.EDQUOT: ("disk quota exceeded", "free space and run again (a training run: --resume)"),
    errno.ENOENT: ("no such file or directory", "check the path"),
    errno.ENOTDIR: ("a part of the path is a regular file, not a directory", "choose another path"),
    errno.EEXIST: ("exists and is not a directory", "choose another path"),
    errno.EISDIR: ("is a directory", "give a file path"),
    errno.EACCES: ("permission denied", "choose a path you may write, or change its permissions"),
    errno.EPERM: ("operation not permitted", "choose a path you may write, or change its permissions"),
    errno.EROFS: ("read-only file system", "choose a writable path"),
}


def os_error_message(err: OSError) -> str:
    """One line "PATH: cause — fix" for an OSError (full disk, a path under a regular file, …)."""
    what, fix = _OS_ERRORS.get(err.errno, (err.strerror or str(err), "check the path and the disk"))
    where = " → ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    return " ".join(f"{where + ': ' if where else ''}{what} — {fix}".split())


def brief(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for echoing user input in a one-line message."""
    size = len(value) if isinstance(value, (str, bytes, list, tuple, dict)) else None
    text = repr(value[: limit + 1] if isinstance(value, (str, bytes)) else value)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({size or len(text)} long)"


class UserError(Exception):
    """A problem the user can fix; ``str(err)`` is a one-line "problem — fix" message."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line


class ConfigError(UserError, ValueError):
    """An unknown configuration key, a value of the wrong type, or a value out of range."""


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, corrupt, or of another architecture."""


class TrainingError(UserError):
    """Training stopped: a NaN/inf loss, a full disk while saving, a refused run directory."""
