"""Ancestral sampling of mixed rows: DDPM on the numeric coordinates, multinomial diffusion on the
one-hot blocks (TabDDPM, Kotelnikov et al. 2023; Hoogeboom et al. 2021, Sec. 4), with RePaint-style
replacement of observed cells (Lugmayr et al. 2022) for imputation.

Between σ_i and σ_{i+1} the numeric part takes the DDPM ancestral step with Σ = β̃ (= Euler-ancestral,
DDIM with η = 1, in σ-space); each block draws x_s ~ C(θ_post(x_t, x̂_0)) with ᾱ_t = 1/(1 + σ_i²),
ᾱ_s = 1/(1 + σ_{i+1}²) and the one-step α = ᾱ_t/ᾱ_s (Eq. 13 of Hoogeboom et al.). Every draw comes
from the samples' own generators, so sample i depends only on (seed, i).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from undiffuse.diffusion.multinomial import (
    blocks,
    posterior_probs,
    q_probs,
    sample_categorical,
    uniform_from_normal,
)
from undiffuse.samplers.common import Generators, denoiser_output, emit, randn_like, to_d
from undiffuse.samplers.ddpm import ancestral_step

__all__ = ["sample_multinomial", "KNOWN_KEYS"]

#: cond keys the sampler reads itself (and does not pass to the denoiser): the observed cells' mask
#: ``known`` (bool [B, W]; a block counts as observed when its first column is) and values ``x_known``.
KNOWN_KEYS = ("known", "x_known")


def _alpha_bar(sigma: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.as_tensor(sigma, dtype=torch.float64) ** 2)


def _uniforms(x: torch.Tensor, n: int, generator: Generators) -> torch.Tensor:
    """[B, n] uniforms from the samples' generators (Φ of normal draws)."""
    return uniform_from_normal(randn_like(x.new_zeros(x.shape[0], n), generator))


def _step_blocks(x: torch.Tensor, den: torch.Tensor, slices: list, sigma, sigma_next, u: torch.Tensor) -> list:
    """The blocks at σ_{i+1}: draws from θ_post(x_t, x̂_0) with x̂_0 = the denoiser's probabilities."""
    ab_t, ab_s = _alpha_bar(sigma), _alpha_bar(sigma_next)
    out = []
    for j, sl in enumerate(slices):
        p0 = den[:, sl].double().clamp_min(0)  # guidance may push a mix of probabilities below 0
        p0 = p0 / p0.sum(dim=1, keepdim=True).clamp_min(1e-30)
        post = posterior_probs(x[:, sl].double(), p0, ab_t / ab_s, ab_s)
        out.append(sample_categorical(post, u[:, j]).to(x.dtype))
    return out


def _replace(x: torch.Tensor, known: dict, d: int, slices: list, sigma, generator: Generators) -> torch.Tensor:
    """RePaint's replacement: observed numbers as x_known + σ·n, observed blocks as draws of q(x_σ | x_known)."""
    if not known:
        return x
    mask, xk = known["known"].bool(), torch.nan_to_num(known["x_known"].to(x.dtype))
    noisy = xk[:, :d] + float(sigma) * randn_like(x[:, :d], generator)
    x = x.clone()
    x[:, :d] = torch.where(mask[:, :d], noisy, x[:, :d])
    u = _uniforms(x, len(slices), generator)
    for j, sl in enumerate(slices):
        draw = sample_categorical(q_probs(xk[:, sl].double(), _alpha_bar(sigma)), u[:, j]).to(x.dtype)
        x[:, sl] = torch.where(mask[:, sl.start : sl.start + 1], draw, x[:, sl])
    return x


@torch.no_grad()
def sample_multinomial(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    categories: Sequence[int] = (),
    generator: Generators = None,
    callback: Optional[Callable] = None,
    cond: Optional[dict] = None,
) -> torch.Tensor:
    """Sample rows [B, W] whose last ΣK_j columns are one-hot blocks of sizes ``categories``.

    x holds the numeric coordinates at ``sigmas[0]`` (finite); the blocks start uniform (drawn from the
    generators). ``cond`` may carry :data:`KNOWN_KEYS` (imputation); the rest goes to the denoiser.
    With no categories this is DDPM ancestral sampling with Σ = β̃ in σ-space. Returns x_0 with
    one-hot blocks.
    """
    if not torch.isfinite(sigmas[0]) or sigmas[-1] != 0:
        raise ValueError("multinomial sampling needs a finite σ_0 and a grid ending at σ = 0")
    cond = dict(cond or {})
    known = {k: cond.pop(k) for k in KNOWN_KEYS if k in cond}
    d = x.shape[1] - sum(categories)
    slices = blocks(categories, d)
    u = _uniforms(x, len(slices), generator)
    start = [torch.nn.functional.one_hot((u[:, j] * (sl.stop - sl.start)).long(), sl.stop - sl.start)
             for j, sl in enumerate(slices)]  # fmt: skip
    x = torch.cat([x[:, :d], *[s.to(x.dtype) for s in start]], dim=1)
    x = _replace(x, known, d, slices, sigmas[0], generator)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        den = denoiser_output(denoiser, x, sigma, cond).denoised
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next)
        num = x[:, :d] + to_d(x[:, :d], sigma.reshape(1), den[:, :d]) * (sigma_down - sigma)
        if sigma_next > 0:
            num = num + randn_like(num, generator) * sigma_up
        cats = _step_blocks(x, den, slices, sigma, sigma_next, _uniforms(x, len(slices), generator))
        x = _replace(torch.cat([num, *cats], dim=1), known, d, slices, sigma_next, generator)
        emit(callback, i, x, sigma, sigma_next, den)
    return x
