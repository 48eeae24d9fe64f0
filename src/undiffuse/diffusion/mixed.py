"""One denoiser for mixed rows: Gaussian diffusion on numeric coordinates, multinomial diffusion on
one-hot blocks (TabDDPM, Kotelnikov et al. 2023, Sec. 3).

A row x [W] holds ``W − ΣK_j`` numeric coordinates, then one one-hot block per categorical column
(sizes ``categories``). The numeric part lives in σ-space like every other model here (x = x_0 + σ·n);
a block holds the current category x_t itself (a one-hot vector, not a noisy float). One network
F(x_in, c_noise) sees c_in·x_num and the blocks, and outputs ε̂ (or the parameterization's target) for
the numbers and logits for the blocks, so

    D(x; σ) = [c_skip·x_num + c_out·F_num,  softmax(F_block_1), …]

with, per block, the x̂_0 of Hoogeboom et al.'s p_θ(x_{t−1} | x_t) = C(θ_post(x_t, x̂_0)), a probability
vector learned through the KL below (the exact reverse step has x̂_0 ∝ p(x_0 | x_t)/q(x_t | x_0), not
E[x_0 | x_t]). Samplers of this family (:func:`undiffuse.samplers.mixed.sample_multinomial`) read the
blocks as such probabilities.

The training loss per example is TabDDPM's L = L_simple(numeric) + (1/C)·Σ_j KL_j (Eq. 4 of TabDDPM;
the KL is that of :mod:`undiffuse.diffusion.multinomial`); missing cells (NaN in x_0) add nothing.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from undiffuse.diffusion.multinomial import (
    blocks,
    categorical_kl,
    posterior_probs,
    q_probs,
    sample_categorical,
    uniform_from_normal,
)
from undiffuse.diffusion.precond import Precond, append_dims
from undiffuse.schedules.discrete import Schedule

__all__ = ["MixedPrecond", "noisy_blocks"]


def noisy_blocks(x0: torch.Tensor, noise: torch.Tensor, categories: Sequence[int], alpha_bar: torch.Tensor,
                 start: int) -> torch.Tensor:  # fmt: skip
    """x_t ~ q(x_t | x_0) of every block (Eq. 12 of Hoogeboom et al.), one-hot [B, ΣK]: the uniform of
    block j is Φ of the noise at its first column. A missing block (NaN) starts from the uniform x_0."""
    out = []
    for sl in blocks(categories, start):
        b = x0[:, sl]
        b = torch.where(b.isnan().any(dim=1, keepdim=True), torch.full_like(b, 1.0 / b.shape[1]), b)
        out.append(sample_categorical(q_probs(b.double(), alpha_bar), uniform_from_normal(noise[:, sl.start])))
    return torch.cat(out, dim=1).to(x0.dtype) if out else x0[:, start:start]


class MixedPrecond(Precond):
    """:class:`Precond` for rows of numbers and categories (see the module docstring).

    Args:
        net: the network F [B, W] → [B, W] (e.g. the residual MLP).
        categories: the block sizes K_j; the numeric coordinates are the first W − ΣK_j.
        parameterization, schedule, sigma_data: as for :class:`Precond` (no learned variance).
    """

    process = "mixed"

    def __init__(self, net: nn.Module, categories: Sequence[int], parameterization: str = "eps",
                 schedule: Schedule | None = None, sigma_data: float = 1.0) -> None:  # fmt: skip
        super().__init__(net, parameterization, schedule, False, sigma_data)
        self.categories = tuple(int(k) for k in categories)

    def with_net(self, net: nn.Module) -> "MixedPrecond":
        return MixedPrecond(net, self.categories, self.parameterization, self.schedule, self.sigma_data)

    def numeric(self, x: torch.Tensor) -> int:
        """How many numeric coordinates a row of ``x`` has."""
        return x.shape[1] - sum(self.categories)

    def scaled_input(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        d = self.numeric(x)
        return torch.cat([super().scaled_input(x[:, :d], sigma), x[:, d:]], dim=1)

    def combine(self, x: torch.Tensor, sigma: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
        d = self.numeric(x)
        parts = [super().combine(x[:, :d], sigma, F[:, :d])]
        parts += [torch.softmax(F[:, sl].to(x.dtype), dim=1) for sl in blocks(self.categories, d)]
        return torch.cat(parts, dim=1)

    def example_loss(self, schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                     **cond) -> torch.Tensor:  # fmt: skip
        """TabDDPM's per-example loss [B] at integer steps t [B] (1..T) with Gaussian ``noise`` [B, W]
        (its value at a block's first column also draws that block's x_t)."""
        d = self.numeric(x0)
        sigma = schedule.sigmas.to(x0.device)[t - 1]
        ab = schedule.alpha_bar.to(x0.device)[t - 1]
        obs = ~x0[:, :d].isnan()
        x0_num = torch.nan_to_num(x0[:, :d])
        x_num = x0_num + append_dims(sigma, x0_num).to(x0.dtype) * noise[:, :d]
        x_t = torch.cat([x_num, noisy_blocks(x0, noise, self.categories, ab, d)], dim=1)
        F = self.raw(x_t, sigma, **cond).float()
        err = (F[:, :d] - self.target(x0_num, noise[:, :d], sigma).float()) ** 2
        loss = (err * obs).sum(dim=1) / max(d, 1)
        if not self.categories:
            return loss
        alpha = schedule.alphas.to(x0.device)[t - 1]
        ab_prev = schedule.alpha_bar_prev.to(x0.device)[t - 1]
        kl = torch.zeros_like(loss)
        for sl in blocks(self.categories, d):
            true_x0, xt = x0[:, sl].double(), x_t[:, sl].double()
            seen = ~true_x0.isnan().any(dim=1)
            q = posterior_probs(xt, torch.nan_to_num(true_x0), alpha, ab_prev)
            p = posterior_probs(xt, torch.softmax(F[:, sl].double(), dim=1), alpha, ab_prev)
            kl = kl + torch.where(seen, categorical_kl(q, p), torch.zeros_like(q[:, 0])).float()
        return loss + kl / len(self.categories)
