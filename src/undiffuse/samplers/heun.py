"""Heun's second-order sampler with optional churn (Karras et al. 2022, "EDM", Alg. 2) in σ-space."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from undiffuse.samplers.common import Generators, denoiser_output, emit, randn_like

__all__ = ["sample_heun"]


@torch.no_grad()
def sample_heun(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    generator: Generators = None,
    callback: Optional[Callable] = None,
    cond: Optional[dict] = None,
) -> torch.Tensor:
    """EDM Algorithm 2 (Karras et al. 2022), line by line, with σ(t) = t and s(t) = 1:

        γ_i = min(S_churn/N, √2 − 1) if σ_i ∈ [S_tmin, S_tmax] else 0;   σ̂ = σ_i·(1 + γ_i)
        x̂ = x_i + √(σ̂² − σ_i²)·S_noise·z                       (churn: raise the noise level)
        d = (x̂ − D(x̂; σ̂))/σ̂;   x_{i+1} = x̂ + (σ_{i+1} − σ̂)·d                 (Euler)
        if σ_{i+1} ≠ 0: d' = (x_{i+1} − D(x_{i+1}; σ_{i+1}))/σ_{i+1};
                        x_{i+1} = x̂ + (σ_{i+1} − σ̂)·(d + d')/2         (trapezoidal correction)

    N = len(sigmas) − 1 steps; NFE = 2N − 1 when the grid ends at 0 (the last step is Euler), 2N
    otherwise. With S_churn = 0 it is deterministic and second order. A first step from σ = ∞ (zero
    terminal SNR) is the Euler/DDIM step x̂_0 + σ_1·n (the trapezoid is undefined over an infinite
    interval; NFE then one less); churn is never applied at σ = ∞.
    """
    cond = cond or {}
    n_steps = len(sigmas) - 1
    sig = [float(s) for s in sigmas]
    for i in range(n_steps):
        sigma, sigma_next = sig[i], sig[i + 1]
        if math.isinf(sigma):
            denoised = denoiser_output(denoiser, x, sigma, cond).denoised
            x = denoised + sigma_next * x  # state holds n at σ = ∞
            emit(callback, i, x, sigmas[i], sigmas[i + 1], denoised)
            continue
        gamma = min(s_churn / n_steps, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * randn_like(x, generator)
        denoised = denoiser_output(denoiser, x, sigma_hat, cond).denoised
        d = (x - denoised) / sigma_hat
        x_next = x + (sigma_next - sigma_hat) * d
        if sigma_next != 0:
            denoised_next = denoiser_output(denoiser, x_next, sigma_next, cond).denoised
            d_next = (x_next - denoised_next) / sigma_next
            x_next = x + (sigma_next - sigma_hat) * (d + d_next) / 2
        x = x_next
        emit(callback, i, x, sigmas[i], sigmas[i + 1], denoised)
    return x
