"""Sampling grids: decreasing σ sequences ending at 0 that samplers step along."""

from __future__ import annotations

import torch

from undiffuse.schedules.discrete import Schedule, ScheduleError

__all__ = ["SPACINGS", "discrete_steps", "discrete_sigmas", "append_zero"]

SPACINGS = ("uniform", "trailing", "leading")


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def discrete_steps(T: int, n: int, spacing: str = "uniform") -> torch.Tensor:
    """n of the training steps 1..T, increasing.

    - ``uniform``: evenly spaced from 1 to T inclusive (rounded; improved-diffusion's respacing);
    - ``trailing``: T, T − T/n, … (always starts at the last step; Lin et al. 2024, Table 2);
    - ``leading``: 1, 1 + T/n, … (DDIM's original spacing; does not reach T).
    """
    if n < 1 or n > T:
        raise ScheduleError(f"the number of sampling steps must lie in 1..{T}, got {n}")
    if spacing == "uniform":
        steps = torch.round(torch.linspace(1, T, n, dtype=torch.float64)).long()
        if n == 1:
            steps = torch.tensor([T])
    elif spacing == "trailing":
        steps = torch.round(torch.arange(T, 0, -T / n, dtype=torch.float64)).long().flip(0)
    elif spacing == "leading":
        steps = torch.arange(0, n, dtype=torch.long) * (T // n) + 1
    else:
        raise ScheduleError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    steps = torch.unique(steps.clamp(1, T))
    if len(steps) != n:
        raise ScheduleError(f"{spacing} spacing of {n} steps over T = {T} repeats steps; choose fewer steps")
    return steps


def discrete_sigmas(schedule: Schedule, n: int | None = None, spacing: str = "uniform") -> torch.Tensor:
    """Decreasing σ_t at n kept steps of ``schedule`` (all T when n is None), followed by 0 (float64)."""
    steps = torch.arange(1, schedule.T + 1) if n is None else discrete_steps(schedule.T, n, spacing)
    return append_zero(schedule.sigmas[steps - 1].flip(0))
