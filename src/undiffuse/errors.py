"""Errors a user can fix. The CLI prints their message as one line, without a traceback, and exits
non-zero; the message names the problem and what to do about it ("problem — fix").

Other packages subclass :class:`UserError` for their own input errors (the data package's
``DataError``, for example) so that one ``except UserError`` at the edge catches them all.
"""

from __future__ import annotations

from typing import Any

__all__ = ["UserError", "ConfigError", "CheckpointError", "TrainingError", "brief"]


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
