"""Distillation objectives: progressive distillation's two-step target and consistency distillation's loss.

Both work in σ-space (x = x_0 + σ·n) on any denoiser D(x; σ), with one σ per example ([B] tensors):

- progressive distillation (Salimans & Ho 2022, Alg. 2): the student's one DDIM step σ → σ'' must land
  where two teacher DDIM steps σ → σ' → σ'' land; the x̂_0 that does so is the target x̃;
- consistency distillation (Song et al. 2023, Alg. 2, Eq. 7) with the improvements of iCT (Song & Dhariwal
  2023): one teacher ODE step σ_{n+1} → σ_n, the student's outputs at both ends pulled together under the
  pseudo-Huber metric, weighted by λ = 1/(σ_{n+1} − σ_n), the target network θ⁻ = stopgrad(θ).
"""

from __future__ import annotations

from typing import Callable

import torch

from undiffuse.diffusion.precond import append_dims, denoise
from undiffuse.losses.denoising import mean_flat
from undiffuse.samplers.common import to_d

__all__ = ["ddim_step", "ddim_target", "progressive_target", "progressive_loss", "pseudo_huber", "consistency_loss",
           "lognormal_pairs"]  # fmt: skip


def ddim_step(denoiser: Callable, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, cond: dict) -> torch.Tensor:
    """One DDIM(η = 0) step per example: x' = D + σ'·(x − D)/σ (Song et al. 2021, Eq. 12 in σ-space, the
    Euler step of the probability-flow ODE). ``sigma``, ``sigma_next``: [B]; σ = ∞ allowed (x holds n)."""
    D = denoise(denoiser, x, sigma, **cond).denoised
    return D + append_dims(sigma_next, x) * to_d(x, sigma, D)


def progressive_target(
    teacher: Callable, x: torch.Tensor, sigma: torch.Tensor, sigma_mid: torch.Tensor, sigma_next: torch.Tensor,
    cond: dict,
) -> torch.Tensor:  # fmt: skip
    """x̃ of Salimans & Ho 2022, Alg. 2: two teacher DDIM steps σ → σ' → σ'' give x'', and x̃ is the x̂_0
    for which one DDIM step σ → σ'' lands on x'': x'' = x̃ + (σ''/σ)(x − x̃), so

        x̃ = (x'' − (σ''/σ)·x) / (1 − σ''/σ)     (x̃ = x'' − σ''·n at σ = ∞; x̃ = x'' at σ'' = 0).

    All σ are [B] with σ > σ' > σ'' ≥ 0."""
    x_mid = ddim_step(teacher, x, sigma, sigma_mid, cond)
    return ddim_target(x, ddim_step(teacher, x_mid, sigma_mid, sigma_next, cond), sigma, sigma_next)


def ddim_target(x: torch.Tensor, x_next: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """The x̂_0 for which one DDIM step σ → σ'' from x lands on x_next: x_next = x̃ + (σ''/σ)(x − x̃), so

        x̃ = (x_next − (σ''/σ)·x) / (1 − σ''/σ)     (x̃ = x_next − σ''·n at σ = ∞, where x holds n).

    Salimans & Ho 2022, Alg. 2, for any x_next: two teacher DDIM steps (:func:`progressive_target`) or the
    teacher's own many-step ODE solution (accurate-teacher targets). ``sigma``, ``sigma_next``: [B], σ > σ''."""
    s, s2 = append_dims(sigma, x), append_dims(sigma_next, x)
    ratio = torch.where(torch.isinf(s), torch.zeros_like(s), s2 / s)
    finite = (x_next - ratio * x) / (1 - ratio)
    return torch.where(torch.isinf(s), x_next - s2 * x, finite)


def progressive_loss(student: Callable, target: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, cond: dict) -> torch.Tensor:
    """Per-example loss max(SNR, 1)·‖D_θ(x; σ) − x̃‖² with SNR = 1/σ² (Salimans & Ho 2022, Sec. 4,
    "truncated SNR" weighting)."""
    w = torch.clamp(1.0 / sigma.double() ** 2, min=1.0).to(torch.float32)
    return w * mean_flat((student(x, sigma, **cond).float() - target.float()) ** 2)


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """d(a, b) = √(‖a − b‖² + c²) − c per example (Song & Dhariwal 2023, iCT Eq. 10); c is absolute."""
    sq = ((a.float() - b.float()) ** 2).reshape(a.shape[0], -1).sum(1)
    return torch.sqrt(sq + c * c) - c


def consistency_loss(
    student: Callable, teacher: Callable, x0: torch.Tensor, noise: torch.Tensor, sigma_hi: torch.Tensor,
    sigma_lo: torch.Tensor, c: float, cond: dict,
) -> torch.Tensor:  # fmt: skip
    """Per-example consistency distillation loss (Song et al. 2023, Alg. 2, with iCT's metric and weights):

        x_{n+1} = x_0 + σ_{n+1}·z,   x̂_n = DDIM step of the teacher σ_{n+1} → σ_n,
        L = λ(σ_n)·d(f_θ(x_{n+1}, σ_{n+1}), f_θ⁻(x̂_n, σ_n)),   λ = 1/(σ_{n+1} − σ_n),  θ⁻ = stopgrad(θ),

    d the pseudo-Huber metric with constant ``c``. The teacher step and f_θ⁻ carry no gradient."""
    x_hi = x0 + append_dims(sigma_hi, x0) * noise
    with torch.no_grad():
        x_lo = ddim_step(teacher, x_hi, sigma_hi, sigma_lo, cond)
        target = student(x_lo, sigma_lo, **cond)
    weight = (1.0 / (sigma_hi.double() - sigma_lo.double())).to(torch.float32)
    return weight * pseudo_huber(student(x_hi, sigma_hi, **cond), target, c)


def lognormal_pairs(u: torch.Tensor, sigmas: torch.Tensor, p_mean: float, p_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(σ_{n+1}, σ_n) per example: the interval of the decreasing grid ``sigmas`` (no trailing 0) that holds
    σ* = exp(P_mean + P_std·Φ⁻¹(u)), iCT's log-normal noise density (Song & Dhariwal 2023, Sec. 3.5),
    clamped to the grid's ends. ``u`` [B] in (0, 1)."""
    log_sigma = p_mean + p_std * torch.special.ndtri(u.double().clamp(1e-6, 1 - 1e-6))
    grid = sigmas.double().to(u.device)
    above = (grid.log().unsqueeze(0) > log_sigma.unsqueeze(1)).sum(1)  # grid points above σ*
    n = (above - 1).clamp(0, len(grid) - 2)
    return grid[n], grid[n + 1]

