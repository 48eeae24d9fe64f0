"""Stand-ins for a run's network in the server's tests: one that fails, one that is slow without using the CPU."""

from __future__ import annotations

import time

import torch


class Exploding(torch.nn.Module):
    """A denoiser that fails: a model's failure must answer its request only."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, *args, **kwargs):
        raise RuntimeError("the network exploded")


class Slow(torch.nn.Module):
    """The run's denoiser, ``delay`` seconds slower per call: keeps the worker busy for a known time, or lets a
    browser watch previews arrive, without using the CPU."""

    def __init__(self, inner: torch.nn.Module, delay: float = 0.02) -> None:
        super().__init__()
        self.inner, self.delay = inner, delay

    def forward(self, *args, **kwargs):
        time.sleep(self.delay)
        return self.inner(*args, **kwargs)
