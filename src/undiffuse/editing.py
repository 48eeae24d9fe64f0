"""Editing with any trained denoiser and any sampler: inpainting (with RePaint resampling), SDEdit
image-to-image, DDIM inversion and reconstruction, and the super-resolution condition.

Everything is written in σ-space (x = x_0 + σ·n, the state a sampler takes at ``sigmas[0]``) on top of
the pure ``sample_<name>`` functions of :mod:`undiffuse.samplers`; a sampler is given by name or as the
function itself. Inpainting edits the state between steps, so it advances the sampler one grid step at
a time (:func:`sampler_step`); a multistep sampler then runs as its first-order step, as its history
would be invalid after each edit anyway.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from undiffuse.samplers.common import Generators, denoiser_output, randn_like, to_d

__all__ = [
    "resolve_sampler",
    "sampler_step",
    "noised",
    "repaint_moves",
    "inpaint",
    "sdedit",
    "sdedit_start",
    "ddim_invert",
    "ddim_reconstruct",
    "upsample_condition",
    "downsample",
]

Sampler = Union[str, Callable]


def resolve_sampler(sampler: Sampler) -> Callable:
    """A ``sample_<name>``-like function from a name ("ddim", "ddpm", "heun", …) or the function itself.

    A name goes through ``undiffuse.samplers.registry.sample`` when that registry exists (it picks Σ_θ
    for a learned-variance model with ``ddpm``), else ``sample_<name>`` of :mod:`undiffuse.samplers`.
    """
    if callable(sampler):
        return sampler
    import undiffuse.samplers as samplers

    try:
        from undiffuse.samplers import registry  # optional; imported lazily
    except ImportError:
        registry = None
    table = getattr(registry, "SAMPLERS", {})
    if sampler in table and callable(getattr(registry, "sample", None)):
        return functools.partial(registry.sample, sampler)
    fn = getattr(samplers, f"sample_{sampler}", None)
    if fn is None:
        known = sorted(set(table) | {n[len("sample_"):] for n in dir(samplers) if n.startswith("sample_")})
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {known}")
    return fn


class _FirstStepDone(Exception):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x


def sampler_step(
    sampler: Sampler,
    denoiser: Callable,
    x: torch.Tensor,
    sigma,
    sigma_next,
    *,
    generator: Generators = None,
    cond: Optional[dict] = None,
    **sampler_kwargs,
) -> torch.Tensor:
    """One grid step σ → σ_next (σ_next < σ) of any sampler.

    The sampler runs on the grid (σ, σ_next, 0) and is stopped by its callback after the first step,
    whose ``x`` is the state at σ_next; so samplers that treat their last step specially (DDPM adds no
    noise there) still take an ordinary step. With σ_next = 0 it is the sampler's final step.
    """
    fn = resolve_sampler(sampler)
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    sigma_next = torch.as_tensor(sigma_next, dtype=torch.float64)
    if sigma_next == 0:
        grid = torch.stack([sigma, sigma_next])
        return fn(denoiser, x, grid, generator=generator, cond=cond, **sampler_kwargs)

    def stop(info: dict) -> None:
        raise _FirstStepDone(info["x"])

    grid = torch.stack([sigma, sigma_next, torch.zeros_like(sigma)])
    try:
        fn(denoiser, x, grid, generator=generator, cond=cond, callback=stop, **sampler_kwargs)
    except _FirstStepDone as done:
        return done.x
    raise RuntimeError(f"sampler {sampler!r} did not report its first step to the callback")


def noised(x0: torch.Tensor, sigma, generator: Generators = None) -> torch.Tensor:
    """A draw of x = x_0 + σ·n, n ~ N(0, I) (the σ-space forward process; Karras et al. 2022). Exactly
    x_0 at σ = 0, and n itself at σ = ∞ (the convention of the samplers)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    if sigma == 0:
        return x0.clone()
    n = randn_like(x0, generator)
    return n if torch.isinf(sigma) else x0 + sigma.to(x0.dtype) * n


def repaint_moves(n: int, resample: int = 1, jump: int = 1) -> list[tuple[int, int]]:
    """The RePaint walk over grid positions 0..n (Lugmayr et al. 2022, Sec. 4.2 and its jump schedule):
    step down one position at a time; on arriving at a position p that is a positive multiple of
    ``jump`` (p < n), go back up to p − jump, ``resample`` − 1 times in all, before moving on.
    Returns (from, to) pairs; to > from is a denoising step, to < from a re-noising jump."""
    if resample < 1 or jump < 1:
        raise ValueError(f"resample and jump must be ≥ 1, got {resample}, {jump}")
    moves, count, p = [], {}, 0
    while p < n:
        moves.append((p, p + 1))
        p += 1
        if p < n and p % jump == 0 and count.get(p, 0) < resample - 1:
            count[p] = count.get(p, 0) + 1
            moves.append((p, p - jump))
            p -= jump
    return moves


def _check_grid(sigmas: torch.Tensor) -> None:
    if sigmas.ndim != 1 or len(sigmas) < 2 or sigmas[-1] != 0 or not bool((sigmas[:-1] > sigmas[1:]).all()):
        raise ValueError("sigmas must be a decreasing 1-D grid ending with 0")


@torch.no_grad()
def inpaint(
    denoiser: Callable,
    image: torch.Tensor,
    mask: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    sampler: Sampler = "ddim",
    generator: Generators = None,
    callback: Optional[Callable] = None,
    cond: Optional[dict] = None,
    resample: int = 1,
    jump: int = 1,
    **sampler_kwargs,
) -> torch.Tensor:
    """Fill the region where ``mask`` = 1 and keep the input where ``mask`` = 0 (RePaint; Lugmayr et al.
    2022, Alg. 1; replacement as in Song et al. 2021 "Score-based generative modeling", App. I.2).

    After every step to σ_next the known region is replaced by the input noised to that level,
    x ← m ⊙ x + (1 − m) ⊙ (x_0 + σ_next·n), n fresh. With ``resample`` R > 1 the walk goes back up in
    noise R − 1 times every ``jump`` J steps, x ← x + √(σ_{p−J}² − σ_p²)·z (a draw of the forward
    process from σ_p to σ_{p−J}), so the generated region can harmonise with the known one
    (:func:`repaint_moves`). The last step pastes at σ = 0, so the known region of the output equals
    ``image`` exactly. ``mask`` broadcasts against ``image`` [B, …]; ``sampler_kwargs`` go to the sampler
    (e.g. ``eta``). ``callback`` sees each move as dict(i, x, sigma, sigma_next).
    """
    _check_grid(sigmas)
    m = mask.to(device=image.device, dtype=image.dtype)
    x = noised(image, sigmas[0], generator)
    for i, (p, q) in enumerate(repaint_moves(len(sigmas) - 1, resample, jump)):
        if q > p:  # denoise σ_p → σ_q, then paste the known region at σ_q
            x = sampler_step(sampler, denoiser, x, sigmas[p], sigmas[q], generator=generator, cond=cond,
                             **sampler_kwargs)
            x = m * x + (1 - m) * noised(image, sigmas[q], generator)
        else:  # re-noise σ_p → σ_q > σ_p
            up = torch.sqrt(sigmas[q].double() ** 2 - sigmas[p].double() ** 2)
            x = randn_like(x, generator) if torch.isinf(up) else x + up.to(x.dtype) * randn_like(x, generator)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigmas[p], "sigma_next": sigmas[q]})
    return x


def sdedit_start(sigmas: torch.Tensor, strength: float) -> int:
    """Index of SDEdit's starting point on the grid: round((1 − strength)·N) for N steps, so strength 1
    starts at ``sigmas[0]`` and strength 0 at σ = 0."""
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must lie in [0, 1], got {strength}")
    n = len(sigmas) - 1
    return n - int(round(strength * n))


@torch.no_grad()
def sdedit(
    denoiser: Callable,
    image: torch.Tensor,
    strength: float,
    sigmas: torch.Tensor,
    *,
    sampler: Sampler = "ddim",
    generator: Generators = None,
    callback: Optional[Callable] = None,
    cond: Optional[dict] = None,
    **sampler_kwargs,
) -> torch.Tensor:
    """SDEdit image-to-image (Meng et al. 2022, Alg. 1): noise the input to the grid point at fraction
    ``strength`` of the full grid ``sigmas``, x = x_0 + σ_start·n, and sample the rest of the grid.

    strength 0 returns the input; strength 1 starts at ``sigmas[0]`` — pure sampling when σ_0 = ∞, and
    otherwise up to the input's weight 1/√(1 + σ_0²) in the VP state (≈ 0.006 for DDPM's linear
    schedule). Larger strength: more realism, less faithfulness (Meng et al. 2022, Sec. 3.2).
    """
    _check_grid(sigmas)
    k = sdedit_start(sigmas, strength)
    if k == len(sigmas) - 1:
        return image.clone()
    x = noised(image, sigmas[k], generator)
    fn = resolve_sampler(sampler)
    return fn(denoiser, x, sigmas[k:], generator=generator, callback=callback, cond=cond, **sampler_kwargs)


def _ascending(sigmas: torch.Tensor) -> torch.Tensor:
    """The grid's non-zero levels, increasing (σ_min first)."""
    s = sigmas[sigmas > 0]
    if len(s) < 1 or not bool((s[:-1] > s[1:]).all()):
        raise ValueError("sigmas must be a decreasing grid with at least one non-zero level")
    return s.flip(0)


@torch.no_grad()
def ddim_invert(
    denoiser: Callable,
    x0: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    cond: Optional[dict] = None,
    callback: Optional[Callable] = None,
) -> torch.Tensor:
    """DDIM inversion (Song et al. 2021, Sec. 4.3 / Eq. 14 run backwards; Dhariwal & Nichol 2021, App. F;
    Mokady et al. 2023): DDIM with η = 0 from σ_min up to σ_max of the sampling grid ``sigmas``.

    The clean input is taken as the state at σ_min; each step uses ε̂ at the current point,
    x_next = x̂_0 + σ_next·ε̂ with ε̂ = (x − D(x; σ))/σ — an Euler step of the probability-flow ODE
    dx/dσ = ε̂ in increasing σ. At σ_next = ∞ the state becomes ε̂ itself (the samplers' convention).
    Returns the latent at ``sigmas[0]``; :func:`ddim_reconstruct` maps it back.
    """
    cond = cond or {}
    up = _ascending(sigmas)
    x = x0.clone()
    for i in range(len(up) - 1):
        sigma, sigma_next = up[i], up[i + 1]
        denoised = denoiser_output(denoiser, x, sigma, cond).denoised
        eps = to_d(x, sigma, denoised)
        x = eps if torch.isinf(sigma_next) else denoised + sigma_next.to(x.dtype) * eps
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})
    return x


def ddim_reconstruct(
    denoiser: Callable,
    latent: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    cond: Optional[dict] = None,
    callback: Optional[Callable] = None,
) -> torch.Tensor:
    """DDIM (η = 0) from ``sigmas[0]`` down to σ_min, the inverse of :func:`ddim_invert` on the same grid
    up to the Euler discretisation error (which shrinks as the grid gets finer). It stops at σ_min,
    where the inversion took the clean input to be, rather than denoising to 0."""
    from undiffuse.samplers import sample_ddim

    grid = _ascending(sigmas).flip(0)
    if len(grid) == 1:
        return latent.clone()
    return sample_ddim(denoiser, latent, grid, eta=0.0, callback=callback, cond=cond)


def upsample_condition(lowres: torch.Tensor, size: Union[int, Sequence[int]], mode: str = "bilinear") -> torch.Tensor:
    """The low-resolution image [B, C, h, w] upsampled to ``size`` — the ``x_cond`` that SR3 joins to the
    input channels (Saharia et al. 2021, Sec. 2.4: bicubic; here bilinear by default, matching the
    UNet's own resizing, or "nearest" / "bicubic")."""
    if lowres.ndim != 4:
        raise ValueError(f"lowres must be [B, C, h, w], got shape {tuple(lowres.shape)}")
    size = (size, size) if isinstance(size, int) else tuple(size)
    if mode == "nearest":
        return F.interpolate(lowres, size=size, mode="nearest")
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(lowres, size=size, mode=mode, align_corners=False)
    raise ValueError(f"unknown mode {mode!r}; choose nearest, bilinear or bicubic")


def downsample(image: torch.Tensor, size: Union[int, Sequence[int]]) -> torch.Tensor:
    """Area (box-filter) downsampling [B, C, H, W] → [B, C, *size]: how super-resolution pairs are made
    from the data (e.g. Fashion-MNIST 28×28 → 14×14)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    return F.interpolate(image, size=size, mode="area")
