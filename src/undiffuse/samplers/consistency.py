"""Multistep consistency sampling (Song et al. 2023, "Consistency Models", Alg. 1).

The denoiser is a consistency function f(x, σ) (:class:`undiffuse.diffusion.consistency.ConsistencyFunction`):
one evaluation maps a noisy state straight to x̂_0. More steps alternate noising and mapping back::

    x ← f(x_{σ_0}, σ_0);  for σ_i in σ_1 > σ_2 > … > 0:  x ← f(x + √(σ_i² − σ_min²)·z, σ_i)
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from undiffuse.samplers.common import Generators, denoiser_output, emit, randn_like

__all__ = ["sample_consistency"]


@torch.no_grad()
def sample_consistency(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    sigma_min: float = 0.0,
    generator: Generators = None,
    callback: Optional[Callable] = None,
    cond: Optional[dict] = None,
) -> torch.Tensor:
    """Alg. 1 of Song et al. 2023 on the grid ``sigmas`` (x at sigmas[0], ending at 0): one evaluation per
    non-zero σ. ``sigma_min`` is ε of the paper (the noise added at σ_i is √(σ_i² − ε²)). Returns x̂_0."""
    cond = cond or {}
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if i > 0:  # re-noise x̂_0 to σ_i; at σ_0 the state already is x_{σ_0}
            x = x + math.sqrt(max(float(sigma) ** 2 - sigma_min**2, 0.0)) * randn_like(x, generator)
        x = denoiser_output(denoiser, x, sigma, cond).denoised
        emit(callback, i, x, sigma, sigma_next, x)
    return x
