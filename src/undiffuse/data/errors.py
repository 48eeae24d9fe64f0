"""The one error type of the data package."""

from __future__ import annotations

from undiffuse.errors import UserError

__all__ = ["DataError"]


class DataError(UserError, ValueError):
    """A dataset is missing, empty, corrupt or unknown; the message says what to do."""
