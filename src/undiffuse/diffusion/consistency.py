"""The consistency function f_θ(x, σ) built from a denoiser, with the boundary condition f(x, σ_min) = x.

A consistency model (Song et al. 2023, "Consistency Models", Eq. 5) maps any point x_σ of a
probability-flow ODE trajectory to its origin. It is parameterized so that the boundary condition holds
exactly, whatever the network::

    f_θ(x, σ) = c_skip(σ)·x + c_out(σ)·D_θ(x, σ),   c_skip(σ_min) = 1,  c_out(σ_min) = 0.

Here D_θ is the run's own preconditioned denoiser (ε / x0 / v / EDM), so a student initialised from the
teacher's weights starts as the teacher's one-step x̂_0; with c_out = 1 − c_skip the map is affine in
(x, D_θ) and c_skip(σ) = s²/((σ − σ_min)² + s²) falls from 1 at σ_min to ≈ 0 a few s above it (s = σ_min
by default: the skip scale of EDM's c_skip with σ_data replaced by s, as latent consistency models scale
the time input). At σ = ∞ (the state holds n) c_skip = 0 and f = D_θ.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from undiffuse.diffusion.precond import DenoiserOutput, append_dims

__all__ = ["consistency_coefficients", "ConsistencyFunction"]


def consistency_coefficients(sigma: torch.Tensor, sigma_min: float, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) of Song et al. 2023 Eq. 5 with c_skip = s²/((σ − σ_min)² + s²), c_out = 1 − c_skip.

    Args:
        sigma: noise levels [B] (σ ≥ σ_min; ∞ allowed).
        sigma_min: ε of the paper, the smallest σ of the discretization: c_skip(σ_min) = 1, c_out(σ_min) = 0.
        scale: s, the width over which the skip connection fades.
    """
    d = (sigma.double() - sigma_min).clamp(min=0.0)
    c_skip = scale**2 / (d**2 + scale**2)
    return c_skip, 1.0 - c_skip


class ConsistencyFunction(nn.Module):
    """f_θ(x, σ) = c_skip(σ)·x + c_out(σ)·D_θ(x, σ) around a :class:`~undiffuse.diffusion.precond.Precond`.

    It is a denoiser (samplers call it as D(x, σ)) and exposes the wrapped Precond's ``net``, ``schedule``
    and ``with_net`` so training, EMA and checkpoints treat it like any run's denoiser."""

    def __init__(self, precond: nn.Module, sigma_min: float, scale: Optional[float] = None) -> None:
        super().__init__()
        self.precond = precond
        self.sigma_min = float(sigma_min)
        self.scale = float(scale if scale is not None else sigma_min)

    @property
    def net(self) -> nn.Module:
        return self.precond.net

    @property
    def schedule(self):
        return self.precond.schedule

    @property
    def parameterization(self) -> str:
        return self.precond.parameterization

    @property
    def learned_variance(self) -> bool:
        return False

    def with_net(self, net: nn.Module) -> "ConsistencyFunction":
        """The same consistency function around another network (the EMA copy, a DDP-wrapped one)."""
        return ConsistencyFunction(self.precond.with_net(net), self.sigma_min, self.scale)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> DenoiserOutput:
        denoised = self.precond.denoise(x, sigma, **cond).denoised
        c_skip, c_out = consistency_coefficients(sigma, self.sigma_min, self.scale)
        skip = torch.where(append_dims(torch.isinf(sigma), x), torch.zeros_like(x), append_dims(c_skip, x) * x)
        return DenoiserOutput(skip + append_dims(c_out, x) * denoised)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        return self.denoise(x, sigma, **cond).denoised
