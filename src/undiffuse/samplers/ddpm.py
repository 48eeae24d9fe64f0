"""DDPM ancestral sampling (Ho et al. 2020, Alg. 2) and DDIM (Song et al. 2021, Eq. 12) as pure functions.

Both take the σ-space state x = x_t/√ᾱ_t at ``sigmas[0]`` and a decreasing grid ``sigmas`` ending at 0
(any subset of the training steps: respacing keeps ᾱ at the kept steps, ᾱ = 1/(1 + σ²)).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from undiffuse.diffusion.precond import append_dims
from undiffuse.diffusion.process import q_posterior_mean_variance
from undiffuse.diffusion.reverse import model_log_variance
from undiffuse.samplers.common import Generators, denoiser_output, emit, randn_like, to_d
from undiffuse.schedules.discrete import Schedule

__all__ = ["sample_ddpm", "sample_ddim", "ancestral_step", "schedule_from_sigmas"]


def schedule_from_sigmas(sigmas: torch.Tensor, allow_zero_terminal_snr: bool = True) -> Schedule:
    """The discrete chain whose ᾱ_k = 1/(1 + σ_k²) at the grid's non-zero σ (ascending = t order)."""
    s = sigmas[sigmas > 0].double().flip(0).cpu()
    ab = 1 / (1 + s**2)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    return Schedule(1 - ab / prev, allow_zero_terminal_snr=allow_zero_terminal_snr)


def _vp(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ·x with ᾱ = 1/(1 + σ²); at σ = ∞ the state is n = x_t."""
    s = append_dims(sigma, x)
    return torch.where(torch.isinf(s), x, x / torch.sqrt(1 + s**2))


@torch.no_grad()
def sample_ddpm(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    var_type: str = "fixed_small",
    generator: Generators = None,
    callback: Optional[Callable] = None,
    cond: Optional[dict] = None,
) -> torch.Tensor:
    """Ancestral sampling x_{t−1} = μ_θ(x_t, t) + Σ_θ^½·z, z ~ N(0, I), no noise at the last step
    (Ho et al. 2020, Alg. 2). Works in the VP view on the chain defined by ``sigmas`` so the fixed-large
    (β_t) and learned variances use that chain's β. Returns x_0."""
    cond = cond or {}
    if sigmas[-1] != 0 or (sigmas[:-1] == 0).any():
        raise ValueError("DDPM ancestral sampling needs a grid that ends at σ = 0 (and only there)")
    schedule = schedule_from_sigmas(sigmas)
    n = len(sigmas) - 1
    x_t = _vp(x, sigmas[0])
    for i in range(n):
        t = torch.full((x.shape[0],), n - i, dtype=torch.long, device=x.device)
        out = denoiser_output(denoiser, x_t if torch.isinf(sigmas[i]) else x_t * (1 + sigmas[i] ** 2).sqrt(),
                              sigmas[i], cond)
        mean, _, _ = q_posterior_mean_variance(schedule, out.denoised, x_t, t)
        if i < n - 1:
            log_var = model_log_variance(schedule, t, x_t, var_type, out.var_frac)
            x_t = mean + torch.exp(0.5 * log_var) * randn_like(x_t, generator)
        else:
            x_t = mean
        emit(callback, i, x_t * (1 + sigmas[i + 1] ** 2).sqrt(), sigmas[i], sigmas[i + 1], out.denoised)
    return x_t


def ancestral_step(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float = 1.0) -> tuple:
    """(σ_down, σ_up) with σ_down² + σ_up² = σ_next² and σ_up = η·σ_next·√(1 − σ_next²/σ²):
    DDIM's σ_t(η) of Song et al. 2021, Eq. 16, written in σ-space."""
    if sigma_next == 0 or eta == 0:
        return sigma_next, torch.zeros_like(torch.as_tensor(sigma_next))
    ratio = 0.0 if torch.isinf(torch.as_tensor(sigma)) else (sigma_next / sigma) ** 2
    sigma_up = torch.clamp(eta * sigma_next * torch.sqrt(torch.as_tensor(1 - ratio)), max=sigma_next)
    return torch.sqrt(sigma_next**2 - sigma_up**2), sigma_up


@torch.no_grad()
def sample_ddim(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    eta: float = 0.0,
    generator: Generators = None,
    callback: Optional[Callable] = None,
    cond: Optional[dict] = None,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, Eq. 12) in σ-space: x_next = x̂_0 + σ_down·ε̂ + σ_up·z with ε̂ = (x − x̂_0)/σ.

    η = 0 is deterministic and is exactly an Euler step of the probability-flow ODE dx/dσ = ε̂;
    η = 1 on the full grid is DDPM ancestral sampling with Σ = β̃_t. For η > 0 this is also the
    Euler-ancestral sampler. Returns x at ``sigmas[-1]``."""
    cond = cond or {}
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser_output(denoiser, x, sigma, cond).denoised
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        x = denoised + sigma_down * to_d(x, sigma, denoised)
        if sigma_up > 0:
            x = x + sigma_up * randn_like(x, generator)
        emit(callback, i, x, sigma, sigma_next, denoised)
    return x
