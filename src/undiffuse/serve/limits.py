"""The server's limits and its errors: every refusal is a :class:`ServeError` (a one-line "problem — fix"
:class:`~undiffuse.errors.UserError`) with the HTTP status it answers with."""

from __future__ import annotations

from dataclasses import dataclass

from undiffuse.errors import UserError

__all__ = ["Limits", "ServeError", "Busy", "TooLarge", "TimedOut", "Cancelled"]


@dataclass(frozen=True)
class Limits:
    """What one request may ask for and how much the server holds at once.

    max_n / max_steps: per request; queue: requests waiting (beyond it: 429); max_batch: rows of one shared
    network call (dynamic batching); body_bytes: a JSON body; upload_bytes: an edit's whole multipart body
    (kept under Starlette's 1 MiB in-memory spool, so uploads never touch the disk); max_pixels: an uploaded
    image's width × height, read from its header before decoding; timeout_s: a request's time in the queue
    and the worker together (beyond it: 504); previews: x̂₀ previews per streamed request."""

    max_n: int = 64
    max_steps: int = 250
    queue: int = 32
    max_batch: int = 256
    body_bytes: int = 64 * 1024
    upload_bytes: int = 1024 * 1024
    max_pixels: int = 4096 * 4096
    timeout_s: float = 120.0
    previews: int = 8

    def __post_init__(self) -> None:
        if min(self.max_n, self.max_steps, self.queue, self.max_batch, self.previews) < 1 or self.timeout_s <= 0:
            raise UserError("server limits must be positive — check --max-n, --max-steps, --queue, --max-batch, --timeout")
        if self.max_batch < self.max_n:
            raise UserError(f"--max-batch {self.max_batch} is below --max-n {self.max_n} — raise it to at least --max-n")


class ServeError(UserError):
    """A request the server refuses; ``status`` is the HTTP status of the answer."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class Busy(ServeError):
    """The queue is full."""

    status = 429


class TooLarge(ServeError):
    """A body or upload over its limit."""

    status = 413


class TimedOut(ServeError):
    """A request that did not finish within the timeout."""

    status = 504


class Cancelled(ServeError):
    """A request whose client went away (nobody reads this answer)."""

    status = 499
