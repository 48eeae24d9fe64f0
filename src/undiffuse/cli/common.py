"""Argument types and helpers shared by the commands."""

from __future__ import annotations

import argparse

import torch


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


def pick_device(name: str | None) -> torch.device:
    """The requested device, or cuda > mps > cpu."""
    from undiffuse.errors import UserError

    if name:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine — use --device cpu")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
