"""Argument types and helpers shared by the commands."""

from __future__ import annotations

import argparse
from typing import Optional


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


#: torch threads for CPU sampling of the CLI's small networks: measured in benchmarks/threads.py (README, "Speed")
SAMPLING_THREADS = 1


def add_threads(parser: argparse.ArgumentParser, default: Optional[int] = SAMPLING_THREADS) -> None:
    """``--threads N``: torch's CPU threads for the command (None: torch's own default)."""
    shown = "torch's default, one per core" if default is None else f"{default}: the fastest per core on a shared or busy CPU, see README"
    parser.add_argument("--threads", type=positive_int, default=default,
                        help=f"torch CPU threads (default {shown}); more helps only on an idle machine with free cores")


def apply_common(args: argparse.Namespace) -> None:
    """Process-wide settings of the options above, before the command runs."""
    from undiffuse.progress import set_quiet

    set_quiet(getattr(args, "quiet", False))
    threads = getattr(args, "threads", None)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
