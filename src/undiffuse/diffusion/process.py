"""The forward process q and its posterior, in the discrete view of Ho et al. (2020).

All functions take integer steps ``t`` of shape [B] with values 1..T and look the tables up in
float64, then cast to the data's dtype.
"""

from __future__ import annotations

import torch

from undiffuse.schedules.discrete import Schedule

__all__ = ["extract", "q_step", "q_mean_variance", "q_sample", "q_posterior_mean_variance", "vp_to_ve", "ve_to_vp"]


def extract(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """table[t − 1] broadcast to ``like``'s shape [B, 1, …] in ``like``'s dtype (float64 stays float64)."""
    out = table.to(like.device)[t.to(like.device).long() - 1]
    dtype = like.dtype if like.is_floating_point() else torch.float64
    return out.to(dtype).reshape(-1, *([1] * (like.ndim - 1)))


def q_step(schedule: Schedule, x_prev: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One forward step x_t ~ q(x_t|x_{t−1}) = N(√(1−β_t)·x_{t−1}, β_t·I) (Ho et al. 2020, Eq. 2)."""
    beta = extract(schedule.betas, t, x_prev)
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise


def q_mean_variance(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean √ᾱ_t·x_0 and variance (1 − ᾱ_t) of q(x_t|x_0) (Ho et al. 2020, Eq. 4)."""
    ab = extract(schedule.alpha_bar, t, x0)
    return ab.sqrt() * x0, (1 - ab).expand_as(x0)


def q_sample(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε, a draw of q(x_t|x_0) (Ho et al. 2020, Eq. 4)."""
    ab = extract(schedule.alpha_bar, t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_posterior_mean_variance(
    schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q(x_{t−1}|x_t, x_0) = N(μ̃_t, β̃_t·I) (Ho et al. 2020, Eqs. 6–7).

    μ̃_t = √ᾱ_{t−1}β_t/(1−ᾱ_t)·x_0 + √α_t(1−ᾱ_{t−1})/(1−ᾱ_t)·x_t,  β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t.
    Returns (mean, variance, clipped log variance), each broadcast to x_t's shape.
    """
    mean = extract(schedule.posterior_mean_coef1, t, x_t) * x0 + extract(schedule.posterior_mean_coef2, t, x_t) * x_t
    var = extract(schedule.posterior_variance, t, x_t).expand_as(x_t)
    log_var = extract(schedule.posterior_log_variance_clipped, t, x_t).expand_as(x_t)
    return mean, var, log_var


def vp_to_ve(x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x = x_t/√ᾱ_t = x_0 + σ_t·n: the σ-space (variance-exploding) view of a VP state."""
    return x_t / alpha_bar.sqrt()


def ve_to_vp(x: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t·x: back from σ-space to the VP state."""
    return x * alpha_bar.sqrt()
