"""Progress bars and status notes on stderr, with one switch for the whole process.

Every long-running piece (sampling, NLL, evaluation, the bench, the trainer's end of run, classifier
training) reports through :func:`progress` and :func:`note`, so a command line's ``--quiet`` silences them
all at once (:func:`set_quiet`). A bar is drawn only when stderr is a terminal; piped or redirected
output stays clean. Notes (one line: "training a classifier …") are printed unless quiet, terminal or not,
because they explain a pause or a file written outside the working directory. Warnings are not notes:
they go through :mod:`warnings` or the caller's own stderr print, whatever ``--quiet`` says.

This module imports nothing of undiffuse (a ground-floor module).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional

__all__ = ["advance_to", "enabled", "note", "progress", "sampling_progress", "set_quiet"]

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence (True) or allow (False) every bar and note of this process."""
    global _quiet
    _quiet = bool(quiet)


def enabled() -> bool:
    """True when a bar would be drawn: not quiet, and stderr is a terminal."""
    if _quiet:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress(total: Optional[float] = None, desc: Optional[str] = None, unit: str = "it", *, show: bool = True,
             **kw: Any):  # fmt: skip
    """A tqdm bar on stderr (rate and ETA), or — when :func:`enabled` or ``show`` is False — a disabled tqdm
    whose ``update`` / ``set_postfix_str`` / ``set_description_str`` / ``close`` do nothing. Use it as a context
    manager or close it. The bar is cleared when done (``leave=True`` keeps it)."""
    from tqdm import tqdm

    kw.setdefault("leave", False)
    on = show and enabled()
    if on and not _terminal_width():  # a terminal that reports no size (a bare pty): tqdm would draw nothing
        kw.update(ncols=kw.get("ncols", 100), nrows=kw.get("nrows", 24))
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols="ncols" not in kw, disable=not on, **kw)


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


def advance_to(bar) -> Callable[[int, int], None]:
    """An ``on_batch(done, total)`` hook (as the sampling driver and ``nll`` call it) that moves ``bar`` to
    ``done``."""
    return lambda done, total: bar.update(done - bar.n)


def note(message: str) -> None:
    """One status line on stderr unless quiet (a bar in progress is kept intact)."""
    if _quiet:
        return
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


class sampling_progress:  # noqa: N801 — used like a function: ``with sampling_progress(n, steps) as cb``
    """A bar over ``n`` samples for a sampler driven in batches, advanced at every sampler step through the
    callback it yields (``api.sample(..., callback=cb)``): each step of a batch of b samples counts b/steps
    samples, so the rate is in samples/s and the ETA is right from the first batch on.

    ``then`` is an optional callback to chain (e.g. a trajectory recorder); ``show=False`` hides the bar (e.g. on
    the non-zero ranks of a distributed run).
    """

    def __init__(self, n: int, steps: int, desc: str = "sampling", then: Optional[Callable[[dict], None]] = None,
                 show: bool = True):  # fmt: skip
        self.steps, self.then = max(1, int(steps)), then
        self.bar = progress(total=n * self.steps, desc=desc, unit="sample", unit_scale=1 / self.steps, show=show,
                            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}, {rate_fmt}]")  # fmt: skip

    def __call__(self, d: dict) -> None:
        self.bar.update(len(d["x"]))
        if self.then is not None:
            self.then(d)

    def __enter__(self) -> "sampling_progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()
