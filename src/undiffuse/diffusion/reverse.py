"""The reverse process p_θ(x_{t−1}|x_t) = N(μ_θ, Σ_θ) in the discrete VP view (Ho et al. 2020, Sec. 3.2).

The denoiser gives x̂_0; μ_θ is the posterior mean μ̃_t(x_t, x̂_0). For an ε-model this is the same as
μ_θ = (x_t − β_t/√(1−ᾱ_t)·ε_θ)/√α_t (Ho et al. 2020, Eq. 11; see :func:`mu_from_eps`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from undiffuse.diffusion.precond import append_dims, denoise
from undiffuse.diffusion.process import extract, q_posterior_mean_variance
from undiffuse.schedules.discrete import Schedule

__all__ = [
    "VAR_TYPES",
    "ReverseStep",
    "p_mean_variance",
    "mu_from_eps",
    "eps_from_x0",
    "x0_from_eps",
    "x0_from_v",
    "v_from_x0_eps",
    "clip_denoised",
    "dynamic_threshold",
    "model_log_variance",
]

VAR_TYPES = ("fixed_small", "fixed_large", "learned")


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x̂_0 = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t (inverse of Ho et al. 2020, Eq. 4)."""
    return (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """ε = (x_t − √ᾱ_t·x_0)/√(1−ᾱ_t)."""
    return (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x̂_0 = √ᾱ_t·x_t − √(1−ᾱ_t)·v (Salimans & Ho 2022, Sec. 4)."""
    return alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * v


def v_from_x0_eps(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 (Salimans & Ho 2022)."""
    return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0


def mu_from_eps(schedule: Schedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """μ_θ = (x_t − β_t/√(1−ᾱ_t)·ε_θ)/√α_t (Ho et al. 2020, Eq. 11).

    Note: the source article prints √(1−α_t) in the denominator; the correct factor is √(1−ᾱ_t).
    """
    beta = extract(schedule.betas, t, x_t)
    ab = extract(schedule.alpha_bar, t, x_t)
    return (x_t - beta / (1 - ab).sqrt() * eps) / (1 - beta).sqrt()


def clip_denoised(x0: torch.Tensor, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    """Clip x̂_0 to the data range (Ho et al. 2020, static thresholding)."""
    return x0.clamp(lo, hi)


def dynamic_threshold(x0: torch.Tensor, percentile: float = 0.995) -> torch.Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, Sec. 2.3): s = max(1, quantile_p(|x̂_0|)) per
    sample; clip to [−s, s] and divide by s."""
    flat = x0.reshape(x0.shape[0], -1).abs().float()
    s = torch.quantile(flat, percentile, dim=1).clamp(min=1.0).to(x0.dtype)
    s = append_dims(s, x0)
    return torch.maximum(torch.minimum(x0, s), -s) / s


def model_log_variance(
    schedule: Schedule, t: torch.Tensor, like: torch.Tensor, var_type: str, var_frac: Optional[torch.Tensor]
) -> torch.Tensor:
    """log Σ_θ: fixed-small log β̃_t, fixed-large log β_t, or learned ν·log β_t + (1 − ν)·log β̃_t
    (Nichol & Dhariwal 2021, Eq. 15).

    At t = 1 the conventions differ. Fixed-small: β̃_1 = 0, so its log is clipped to log β̃_2, as in
    DDPM's and improved-diffusion's code; this is the decoder's actual variance at t = 1. Fixed-large:
    here β_1, literally Σ_t = β_t (Ho et al. 2020, Sec. 3.2); DDPM's ``diffusion_utils_2.py`` and
    improved-diffusion instead use β̃_2 at t = 1 ("to get a better decoder log likelihood") — about β_1/2
    on the linear schedule, so their last ancestral step adds less noise (std 0.0074 vs 0.01) and their
    L_0 differs. The learned range uses log β_1 at t = 1 in both (improved-diffusion's ``max_log``)."""
    log_small = extract(schedule.posterior_log_variance_clipped, t, like).expand_as(like)
    log_large = extract(schedule.betas.log(), t, like).expand_as(like)
    if var_type == "fixed_small":
        return log_small
    if var_type == "fixed_large":
        return log_large
    if var_type == "learned":
        if var_frac is None:
            raise ValueError("var_type='learned' needs a denoiser that returns a variance (learned_variance=True)")
        return var_frac * log_large + (1 - var_frac) * log_small
    raise ValueError(f"unknown var_type {var_type!r}; choose one of {VAR_TYPES}")


@dataclass
class ReverseStep:
    """Parameters of p_θ(x_{t−1}|x_t): mean μ_θ, log variance log Σ_θ, and the x̂_0 used."""

    mean: torch.Tensor
    log_variance: torch.Tensor
    denoised: torch.Tensor


def p_mean_variance(
    denoiser: Callable,
    schedule: Schedule,
    x_t: torch.Tensor,
    t: torch.Tensor,
    var_type: str = "fixed_small",
    clip: Optional[tuple[float, float]] = None,
    threshold: Optional[float] = None,
    **cond,
) -> ReverseStep:
    """p_θ(x_{t−1}|x_t) = N(μ̃_t(x_t, x̂_0), Σ_θ) with x̂_0 = D(x_t/√ᾱ_t; σ_t) (Ho et al. 2020, Eqs. 1, 7).

    ``t`` indexes ``schedule`` (1..T of that, possibly respaced, schedule); the denoiser is called at
    σ_t, so it may belong to the original chain. ``clip=(lo, hi)`` clips x̂_0 to the data range;
    ``threshold=p`` applies dynamic thresholding at percentile p.
    """
    ab = extract(schedule.alpha_bar, t, x_t)
    sigma = schedule.sigmas.to(x_t.device)[t.long() - 1]
    x = torch.where(ab == 0, x_t, x_t / ab.sqrt())  # σ-space state (n itself at σ = ∞)
    out = denoise(denoiser, x, sigma, **cond)
    x0 = out.denoised
    if threshold is not None:
        x0 = dynamic_threshold(x0, threshold)
    if clip is not None:
        x0 = clip_denoised(x0, *clip)
    mean, _, _ = q_posterior_mean_variance(schedule, x0, x_t, t)
    log_var = model_log_variance(schedule, t, x_t, var_type, out.var_frac)
    return ReverseStep(mean, log_var, x0)
