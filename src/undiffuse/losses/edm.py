"""EDM training (Karras et al. 2022, Sec. 5 and Table 1): continuous σ with a log-normal density.

ln σ ~ N(P_mean, P_std²) with P_mean = −1.2, P_std = 1.2, and the loss λ(σ)·‖D(x_0 + σ·n; σ) − x_0‖²,
λ(σ) = (σ² + σ_d²)/(σ·σ_d)² (Eq. 8), which is :func:`denoising_loss` with ``weighting="edm"``; with
``Precond(parameterization="edm")`` that weight makes the raw network's target unit-variance. The
same denoiser then runs every sampler, typically on a ``karras`` grid.
"""

from __future__ import annotations

import math

import torch

from undiffuse.diffusion.precond import Precond
from undiffuse.losses.denoising import denoising_loss

__all__ = ["P_MEAN", "P_STD", "edm_sigma", "edm_loss"]

P_MEAN, P_STD = -1.2, 1.2


def edm_sigma(u: torch.Tensor, p_mean: float = P_MEAN, p_std: float = P_STD) -> torch.Tensor:
    """σ = exp(P_mean + P_std·Φ⁻¹(u)) from uniforms u ∈ (0, 1) (log-normal by inverse CDF, so draws keyed
    to the example are reproducible as in :func:`sample_t`)."""
    u = u.double().clamp(1e-12, 1 - 1e-12)
    return torch.exp(p_mean + p_std * math.sqrt(2) * torch.erfinv(2 * u - 1))


def edm_loss(
    precond: Precond,
    x0: torch.Tensor,
    noise: torch.Tensor,
    u: torch.Tensor,
    p_mean: float = P_MEAN,
    p_std: float = P_STD,
    **cond,
) -> torch.Tensor:
    """Per-example EDM loss [B]: λ(σ)·mean‖D(x_0 + σ·noise; σ) − x_0‖² at σ = :func:`edm_sigma` (u)."""
    sigma = edm_sigma(u, p_mean, p_std).to(x0.device)
    loss, _, _ = denoising_loss(precond, x0, sigma, noise, weighting="edm", **cond)
    return loss
