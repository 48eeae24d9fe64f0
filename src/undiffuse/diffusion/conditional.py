"""Conditional training on observed values: CSDI (Tashiro et al. 2021, Sec. 4).

Instead of sampling an unconditional model and putting the observed values back at every noise level
(RePaint's replacement), the network learns p(x^ta | x^co) itself. Each training window x_0 gets a random
conditioning mask m (1: observed, "conditional observation" x^co; 0: to be generated, "imputation target"
x^ta); the network sees

    F(c_in·x·(1 − m), m·x_0, m; c_noise)        with x = x_0 + σ·n

and the loss is ε-prediction on the targets only (Eq. 6 of CSDI, per example the mean of ‖ε − ε̂‖² over
the positions with m = 0). The masks (:func:`conditioning_masks`) mix three strategies: none (m = 0, so
the same network samples whole windows unconditionally), a history/future split at a uniform step k
(forecasting: the first k steps observed, all channels), and CSDI's random strategy (each value observed
with probability r, r ~ U(0, 1)). At sampling the denoiser returns the observed values themselves where
m = 1, D(x; σ) = m·x^co + (1 − m)·D_θ(x; σ), so only the targets move.

The masks of a training step are a function of that step's draws of t (a generator seeded from them), so
training and the validation loss are deterministic.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from undiffuse.diffusion.precond import DenoiserOutput, Precond, append_dims
from undiffuse.schedules.discrete import Schedule

__all__ = ["MASK_SHARES", "conditioning_masks", "ObservedPrecond"]

#: Shares of the training masks: (none: unconditional, history/future split, random points).
MASK_SHARES = (1 / 3, 1 / 3, 1 / 3)


def conditioning_masks(n: int, length: int, channels: int, generator: torch.Generator,
                       shares: tuple = MASK_SHARES) -> torch.Tensor:  # fmt: skip
    """Boolean masks [n, L·C] (time-major like the windows; True = observed) drawn from ``generator``: a share
    ``shares[0]`` all False, ``shares[1]`` the first k ~ U{1, …, L − 1} steps True, the rest each value True
    with probability r ~ U(0, 1) (CSDI's random strategy)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    k = torch.randint(1, length, (n,), generator=generator)
    r = torch.rand(n, 1, generator=generator)
    points = torch.rand(n, length * channels, generator=generator) < r
    steps = torch.arange(length).repeat_interleave(channels)[None]  # the step of each coordinate
    history = steps < k[:, None]
    none_share, hist_share = shares[0], shares[0] + shares[1]
    kind = (u >= none_share).long() + (u >= hist_share).long()  # 0 none, 1 history, 2 points
    return torch.where((kind == 1)[:, None], history, torch.where((kind == 2)[:, None], points, torch.zeros_like(points)))


class ObservedPrecond(Precond):
    """:class:`Precond` for a network that reads the observed values (see the module docstring):
    ``denoise(x, σ, obs=x_obs, obs_mask=m)``; without ``obs_mask`` it is the unconditional denoiser (m = 0).
    ``length`` and ``channels`` are the window's L and C (the masks' layout)."""

    def __init__(self, net: nn.Module, length: int, channels: int, parameterization: str = "eps",
                 schedule: Schedule | None = None, sigma_data: float = 1.0) -> None:  # fmt: skip
        super().__init__(net, parameterization, schedule, False, sigma_data)
        self.length, self.channels = length, channels

    def with_net(self, net: nn.Module) -> "ObservedPrecond":
        return ObservedPrecond(net, self.length, self.channels, self.parameterization, self.schedule, self.sigma_data)

    def raw(self, x: torch.Tensor, sigma: torch.Tensor, obs: Optional[torch.Tensor] = None,
            obs_mask: Optional[torch.Tensor] = None, **cond) -> torch.Tensor:  # fmt: skip
        """F(c_in·x·(1 − m), m·x_obs, m; c_noise) — the network forms m·x_obs itself (:class:`~undiffuse.nn.seqnet.SeqNet`)."""
        x_in = self.scaled_input(x, sigma)
        if obs_mask is not None:
            x_in = torch.where(obs_mask.bool().expand_as(x), torch.zeros_like(x_in), x_in)
        return self.net(x_in, self.c_noise(sigma).to(x.dtype), obs=obs, obs_mask=obs_mask, **cond)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, obs: Optional[torch.Tensor] = None,
                obs_mask: Optional[torch.Tensor] = None, **cond) -> DenoiserOutput:  # fmt: skip
        """D = m·x_obs + (1 − m)·(c_skip·x + c_out·F)."""
        D = self.combine(x, sigma, self.raw(x, sigma, obs, obs_mask, **cond))
        if obs_mask is not None:
            D = torch.where(obs_mask.bool().expand_as(D), torch.nan_to_num(obs.to(D.dtype)).expand_as(D), D)
        return DenoiserOutput(D)

    def example_loss(self, schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                     **cond) -> torch.Tensor:  # fmt: skip
        """CSDI's loss per example [B]: the mean of (F − target)² over the positions a random mask leaves
        unobserved (ε-prediction: L_simple on the imputation targets)."""
        g = torch.Generator().manual_seed(int((t.long().cpu() * torch.arange(1, len(t) + 1)).sum()))
        m = conditioning_masks(len(x0), self.length, self.channels, g).to(x0.device)
        sigma = schedule.sigmas.to(x0.device)[t - 1]
        x = x0 + append_dims(sigma, x0).to(x0.dtype) * noise
        F = self.raw(x, sigma, obs=x0, obs_mask=m, **cond).float()
        err = (F - self.target(x0, noise, sigma).float()) ** 2
        target = (~m).float()
        return (err * target).sum(dim=1) / target.sum(dim=1).clamp_min(1.0)
