"""Exponential moving average of the weights, with its decay set as a half-life in training examples.

β per optimizer step = 0.5^(B / h) for a global batch of B examples and a half-life of h examples
(Karras et al. 2022, "EDM", App. C: ``ema_halflife_kimg``), so the averaging horizon does not depend
on the batch size. ``warmup`` (EDM's ``ema_rampup_ratio``) caps the half-life at warmup × examples
seen, so early weights are forgotten quickly. The update is deterministic and uses only the
(identical) parameters, so under DDP every rank holds the same EMA.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA", "ema_beta"]


def ema_beta(batch: int, examples_seen: int, halflife_kimg: float, warmup: float = 0.0) -> float:
    """β = 0.5^(batch / h) with h = 1000·halflife_kimg, capped at warmup·examples_seen if warmup > 0.

    ``examples_seen`` counts the examples including this step's batch. A half-life of 0 gives β = 0
    (the EMA equals the current weights)."""
    h = halflife_kimg * 1000.0
    if warmup > 0:
        h = min(h, warmup * examples_seen)
    if h <= 0:
        return 0.0
    return 0.5 ** (batch / h)


class EMA:
    """An float32 EMA copy of a module (parameters averaged, buffers copied).

    ``ema.module`` is an ordinary module in eval mode: use it to sample or evaluate.
    """

    def __init__(self, model: nn.Module) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, beta: float) -> None:
        """θ_ema ← β·θ_ema + (1 − β)·θ."""
        ema_p = [p for p in self.module.parameters()]
        cur_p = [p.detach() for p in model.parameters()]
        if ema_p:
            torch._foreach_lerp_(ema_p, cur_p, 1.0 - beta)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
