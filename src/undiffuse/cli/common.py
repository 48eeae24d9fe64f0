"""Argument types and helpers shared by the commands."""

from __future__ import annotations

import argparse
import contextlib
from typing import Iterator, Optional, Union


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def nonneg_int(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer ≥ 0")
    return value


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers, e.g. 0,100,250."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: the best available)")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` (every command): no progress bars or status notes on stderr."""
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars or status notes on stderr (bars show only on a terminal anyway)")


AUTO = "auto"


def threads_arg(text: str) -> Union[int, str]:
    """argparse type: ``auto`` or an integer > 0."""
    return AUTO if text == AUTO else positive_int(text)


def add_threads(parser: argparse.ArgumentParser, auto: bool = True) -> None:
    """``--threads N|auto``: torch's CPU threads for the command; default ``auto`` (:func:`idle_cores`), or
    torch's own default (one per core) when ``auto`` is False."""
    if auto:
        text = ("default auto: one per idle core — the cores minus the 1-minute load average, at least 1. More threads "
                "than free cores make CPU sampling slower, not faster (README, 'Threads')")  # fmt: skip
    else:
        text = "default: torch's, one per core; 1 gives steadier timings on a CPU shared with other jobs"
    parser.add_argument("--threads", type=threads_arg, default=AUTO if auto else None, metavar="N|auto",
                        help=f"torch CPU threads ({text})")


def idle_cores(cores: Optional[int] = None, load: Optional[float] = None) -> int:
    """Threads for CPU work that shares the machine: the cores torch would use minus the busy ones (the
    1-minute load average, rounded), at least 1. Why (benchmarks/results/threads.json, README "Threads"): with
    more threads than free cores, OpenMP threads spin waiting for each other, so CPU sampling gets slower and
    costs more CPU time, while on an idle machine every core helps."""
    import os

    import torch

    cores = torch.get_num_threads() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average on this platform: use every core
            load = 0.0
    return max(1, min(cores, cores - round(load)))


@contextlib.contextmanager
def common_settings(args: argparse.Namespace) -> Iterator[None]:
    """The options above in force while a command runs (``--quiet``, ``--threads``), as they were afterwards."""
    from undiffuse.progress import set_quiet

    set_quiet(getattr(args, "quiet", False))
    threads = getattr(args, "threads", None)
    try:
        if threads is None:
            yield
        else:
            from undiffuse.rng import torch_threads

            with torch_threads(idle_cores() if threads == AUTO else threads):
                yield
    finally:
        set_quiet(False)
