"""Noise-level embeddings and small layer helpers shared by the networks.

The networks never see a schedule: they get ``c_noise`` of shape [B], a float that is 1000·t/T for a
VP model (≈ 0..1000) or ln(σ)/4 for EDM preconditioning (≈ −2..2). The sinusoidal embedding of
Vaswani et al. (2017), as used by Ho et al. (2020), has frequencies from 1 down to 1/10000, so both
ranges are resolved.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TimestepEmbedding", "group_norm", "num_groups_for", "timestep_embedding", "zero_"]


def timestep_embedding(c_noise: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [sin(c·ω_k), cos(c·ω_k)] with ω_k = max_period^(−k/(half−1)).

    Implements the timestep embedding of Ho et al. (2020) (``get_timestep_embedding`` in their
    code), after the positional encoding of Vaswani et al. (2017).

    Args:
        c_noise: [B] float noise input (any dtype; computed in float32).
        dim: embedding width; an odd width is zero-padded by one.
        max_period: the longest period, 10000 as in the papers.
    Returns:
        [B, dim] float32 embedding.
    """
    if c_noise.ndim != 1:
        raise ValueError(f"c_noise must have shape [B], got {tuple(c_noise.shape)}")
    half = dim // 2
    k = torch.arange(half, device=c_noise.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * k / max(half - 1, 1))  # [half]
    args = c_noise.float()[:, None] * freqs[None]  # [B, half]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """c_noise → sinusoid(dim) → Linear → SiLU → Linear (Ho et al. 2020, ``temb`` dense0/dense1)."""

    def __init__(self, dim: int, out_dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        self.dim = dim
        self.max_period = max_period
        self.linear1 = nn.Linear(dim, out_dim)
        self.linear2 = nn.Linear(out_dim, out_dim)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(c_noise, self.dim, self.max_period).to(self.linear1.weight.dtype)
        return self.linear2(nn.functional.silu(self.linear1(emb)))


def num_groups_for(channels: int, num_groups: int) -> int:
    """The largest divisor of ``channels`` that is ≤ ``num_groups`` (so small widths still work)."""
    for g in range(min(num_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def group_norm(channels: int, num_groups: int = 32, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm with the group count clamped to a divisor of ``channels`` (eps 1e-6 as in Ho et al.)."""
    return nn.GroupNorm(num_groups_for(channels, num_groups), channels, eps=eps)


def zero_(module: nn.Module) -> nn.Module:
    """Initialise a layer's parameters to zero (Ho et al. 2020 use ``init_scale=0`` on the last layer
    of each residual branch, so every block starts as the identity). Returns the module."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module
