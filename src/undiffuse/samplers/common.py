"""Pieces every sampler shares: noise from generators, the ODE derivative, callbacks, NFE counting."""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

from undiffuse.diffusion.precond import DenoiserOutput, DenoiserWrapper, append_dims, denoise
from undiffuse.rng import randn_from

__all__ = ["Generators", "randn_like", "to_d", "Counted", "emit", "denoiser_output"]

Generators = Optional[Union[torch.Generator, Sequence[torch.Generator]]]


def randn_like(x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """Standard normal noise shaped like x. With a list of generators (one per sample), sample i's
    noise comes from generator i alone, so it does not depend on the batch it is drawn in."""
    if generator is None or isinstance(generator, torch.Generator):
        dev = generator.device if generator is not None else x.device
        return torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    return randn_from(generator, x.shape[1:], x.device, x.dtype)


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """dx/dσ = (x − D(x; σ))/σ, the probability-flow ODE in σ-space (Karras et al. 2022, Eq. 3 with
    σ(t) = t, s(t) = 1). At σ = ∞ the state already holds n = lim (x − D)/σ."""
    s = append_dims(sigma, x)
    return torch.where(torch.isinf(s), x, (x - denoised) / s)


def emit(callback: Optional[Callable], i: int, x, sigma, sigma_next, denoised) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})


def denoiser_output(denoiser: Callable, x: torch.Tensor, sigma, cond: dict) -> DenoiserOutput:
    """Evaluate the denoiser at a scalar or per-sample σ."""
    s = torch.as_tensor(sigma, device=x.device, dtype=torch.float64)
    s = s.expand(x.shape[0]) if s.ndim == 0 else s
    return denoise(denoiser, x, s, **cond)


class Counted(DenoiserWrapper):
    """Wrap a denoiser and count its calls in ``nfe`` (network evaluations per sample: one call
    evaluates the whole batch once)."""

    def __init__(self, denoiser: Callable) -> None:
        self.denoiser = denoiser
        self.nfe = 0

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> DenoiserOutput:
        self.nfe += 1
        return denoise(self.denoiser, x, sigma, **cond)

