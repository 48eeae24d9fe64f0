"""The one error type of the data package."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A dataset is missing, empty, corrupt or unknown; the message says what to do."""
