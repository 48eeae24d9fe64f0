"""Sampling grids: decreasing σ sequences ending at 0 that samplers step along.

Two families: step spacings of a discrete chain (``uniform``, ``trailing``, ``leading``: a subset of
the training steps t, so the grid's σ are table values σ_t) and continuous grids between σ_min and
σ_max (``karras``: ρ-warped, Karras et al. 2022, Eq. 5; ``logsnr``: uniform in log-SNR = −2 log σ).
:func:`make_sigmas` is the single entry point.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from undiffuse.schedules.discrete import Schedule, ScheduleError

__all__ = [
    "GRIDS",
    "SPACINGS",
    "append_zero",
    "discrete_sigmas",
    "discrete_steps",
    "karras_sigmas",
    "logsnr_sigmas",
    "make_sigmas",
]

SPACINGS = ("uniform", "trailing", "leading")
GRIDS = SPACINGS + ("karras", "logsnr")


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
        raise ScheduleError(f"unknown spacing {spacing!r} — choose one of {', '.join(SPACINGS)}")
    steps = torch.unique(steps.clamp(1, T))
    if len(steps) != n:
        raise ScheduleError(f"{spacing} spacing of {n} steps over T = {T} repeats steps; choose fewer steps")
    return steps


def discrete_sigmas(schedule: Schedule, n: int | None = None, spacing: str = "uniform") -> torch.Tensor:
    """Decreasing σ_t at n kept steps of ``schedule`` (all T when n is None), followed by 0 (float64)."""
    steps = torch.arange(1, schedule.T + 1) if n is None else discrete_steps(schedule.T, n, spacing)
    return append_zero(schedule.sigmas[steps - 1].flip(0))


def _check_range(n: int, sigma_min: float, sigma_max: float) -> None:
    if not isinstance(n, int) or n < 1:
        raise ScheduleError(f"the number of sampling steps must be an integer ≥ 1, got {n!r}")
    if not (0 < sigma_min <= sigma_max < math.inf):
        raise ScheduleError(f"a σ grid needs 0 < σ_min ≤ σ_max < ∞, got σ_min={sigma_min}, σ_max={sigma_max}")


def karras_sigmas(
    n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> torch.Tensor:
    """σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, i = 0..n−1, then 0 (float64, n + 1 values).

    Implements Eq. 5 of Karras et al. 2022 ("EDM"); ρ = 7 spends more steps at small σ.
    """
    _check_range(n, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    sigmas[0], sigmas[-1] = sigma_max, (sigma_min if n > 1 else sigma_max)  # exact endpoints
    return append_zero(sigmas)


def logsnr_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0) -> torch.Tensor:
    """n σ's uniform in log-SNR (= −2 log σ) from σ_max down to σ_min, then 0 (float64, n + 1 values).

    The steps h = λ_{i+1} − λ_i of λ = −log σ are all equal, the natural grid of the exponential
    integrators (DPM-Solver, Lu et al. 2022, Sec. 3.4 "logSNR" spacing; k-diffusion's "exponential").
    """
    _check_range(n, sigma_min, sigma_max)
    if n == 1:
        return append_zero(torch.tensor([sigma_max], dtype=torch.float64))
    log_s = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64)
    sigmas = log_s.exp()
    sigmas[0], sigmas[-1] = sigma_max, sigma_min
    return append_zero(sigmas)


def _schedule_range(schedule: Schedule) -> tuple[float, float]:
    """(σ_1, largest finite σ_t): the range a continuous grid may cover on a discrete schedule."""
    finite = schedule.sigmas[torch.isfinite(schedule.sigmas)]
    if finite.numel() == 0:
        raise ScheduleError("the schedule has no finite σ_t to build a grid on")
    return float(finite[0]), float(finite[-1])


def make_sigmas(
    schedule: Optional[Schedule],
    n: int,
    grid: str = "uniform",
    sigma_min: Optional[float] = None,
    sigma_max: Optional[float] = None,
    rho: float = 7.0,
) -> torch.Tensor:
    """A decreasing σ grid of ``n`` sampling steps (n + 1 values, the last 0), float64.

    - ``uniform`` / ``trailing`` / ``leading``: n of the schedule's training steps (see
      :func:`discrete_steps`); ``trailing`` starts at σ_T (∞ for a zero-terminal-SNR schedule).
      These need a discrete ``schedule``.
    - ``karras`` (ρ-warped, ``rho``) / ``logsnr``: continuous grids between ``sigma_min`` and
      ``sigma_max``. Without a schedule both bounds are required (e.g. EDM's 0.002 and 80). With a
      discrete schedule they default to its range [σ_1, σ_T] and are clamped into it, since the
      network was only trained there; for a zero-terminal-SNR schedule (σ_T = ∞) the range ends at
      the largest finite σ_{T−1} (use ``trailing`` to start at σ = ∞).
    """
    if grid in SPACINGS:
        if schedule is None:
            raise ScheduleError(
                f"grid {grid!r} picks steps of a discrete schedule; pass one, or use karras/logsnr"
            )
        return discrete_sigmas(schedule, n, grid)
    if grid not in ("karras", "logsnr"):
        raise ScheduleError(f"unknown grid {grid!r}; choose one of {', '.join(GRIDS)}")
    if schedule is not None:
        lo, hi = _schedule_range(schedule)
        sigma_min = lo if sigma_min is None else min(max(float(sigma_min), lo), hi)
        sigma_max = hi if sigma_max is None else min(max(float(sigma_max), lo), hi)
    elif sigma_min is None or sigma_max is None:
        raise ScheduleError(f"grid {grid!r} without a schedule needs sigma_min and sigma_max")
    if grid == "karras":
        return karras_sigmas(n, float(sigma_min), float(sigma_max), rho)
    return logsnr_sigmas(n, float(sigma_min), float(sigma_max))
