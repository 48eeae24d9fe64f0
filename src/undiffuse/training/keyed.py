"""Randomness keyed to (seed, step, position): what makes resume exact and DDP equal to one process.

Nothing in training draws from a running random stream. Every random quantity is a function of the
run seed and *where it is used*:

- data order: example ``g`` of the run (g = step·B + j for global batch size B) is
  ``perm_e[g mod N]`` with ``e = g div N`` and ``perm_e`` a permutation of the N examples drawn from
  ``derive_seed(seed, "epoch", e)`` — batches may straddle epochs, nothing is dropped;
- per-example t, noise and label dropout: drawn for the whole *global* batch of a step from a
  generator seeded with ``derive_seed(seed, "step", step)``; a rank (and an accumulation
  micro-batch) takes its slice, so the draws of example j do not depend on the number of ranks (also for
  a model that asks for low-discrepancy t across the batch, :func:`stratified_uniforms`: they are spread over
  the global batch);
- dropout masks: torch's global RNG is seeded from (seed, step, rank, micro-batch) before each
  forward pass. Dropout masks therefore depend on how the global batch is split; runs with dropout
  > 0 resume exactly, but match a different number of ranks only in distribution.

Resuming at step s therefore replays exactly what an uninterrupted run does at step s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from undiffuse.rng import derive_seed
from undiffuse.rng import generator as _generator

__all__ = ["StepDraws", "draw_step", "stratified_uniforms", "example_indices", "shard_positions", "seed_dropout"]


def example_indices(seed: int, step: int, batch: int, n: int, _cache: Optional[dict] = None) -> torch.Tensor:
    """Dataset indices [batch] (int64, CPU) of the global batch of optimizer step ``step`` (0-based)."""
    g = torch.arange(step * batch, (step + 1) * batch, dtype=torch.long)
    epochs = g // n
    out = torch.empty_like(g)
    for e in torch.unique(epochs).tolist():
        perm = _cache.get(e) if _cache is not None else None
        if perm is None:
            perm = torch.randperm(n, generator=_generator(derive_seed(seed, "epoch", e)))
            if _cache is not None:
                _cache.clear()  # keep only the current epoch (batches straddle at most two)
                _cache[e] = perm
        sel = epochs == e
        out[sel] = perm[g[sel] % n]
    return out


@dataclass
class StepDraws:
    """Per-example random draws of one global batch: t [B] in 1..T, noise [B, ...], u_label [B] in [0, 1)."""

    t: torch.Tensor
    noise: torch.Tensor
    u_label: torch.Tensor

    def select(self, pos: torch.Tensor) -> "StepDraws":
        return StepDraws(self.t[pos], self.noise[pos], self.u_label[pos])


def stratified_uniforms(u: torch.Tensor, batch: int) -> torch.Tensor:
    """Low-discrepancy times of one global batch (Kingma et al. 2021, App. I; MDLM Sec. 3.5): from one uniform
    u ∈ [0, 1), the B values (u + j/B) mod 1, j = 0..B−1 — each uniform on [0, 1) (an unbiased t per example),
    together exactly one in each stratum [k/B, (k+1)/B)."""
    j = torch.arange(batch, device=u.device, dtype=torch.float64)
    return torch.remainder(u.double() + j / batch, 1.0)


def draw_step(
    seed: int, step: int, batch: int, shape: tuple[int, ...], T: int, device: torch.device | str = "cpu",
    stream: str = "step", stratified: bool = False,
) -> StepDraws:  # fmt: skip
    """The draws of the whole global batch of ``step``: t uniform on {1..T}, standard normal noise,
    label-dropout uniforms, from one generator seeded by (seed, stream, step) on ``device``. ``stratified``:
    the t of the batch are :func:`stratified_uniforms` of the generator's first uniform (the other draws, and
    the non-stratified t, are unchanged)."""
    g = _generator(derive_seed(seed, stream, step), device)
    u_t = torch.rand(batch, generator=g, device=device, dtype=torch.float64)
    if stratified:
        u_t = stratified_uniforms(u_t[0], batch)
    t = (u_t * T).long().clamp(0, T - 1) + 1
    noise = torch.randn((batch, *shape), generator=g, device=device)
    u_label = torch.rand(batch, generator=g, device=device)
    return StepDraws(t, noise, u_label)


def shard_positions(batch: int, rank: int, world: int, accum: int, micro: int) -> torch.Tensor:
    """Positions in the global batch that ``rank`` uses in accumulation micro-batch ``micro``: ranks
    take interleaved positions r, r + W, r + 2W, …, and split those into ``accum`` equal chunks."""
    if batch % (world * accum):
        raise ValueError(f"global batch {batch} is not divisible by world size {world} × grad_accum {accum}")
    mine = torch.arange(rank, batch, world)
    m = len(mine) // accum
    return mine[micro * m : (micro + 1) * m]


def seed_dropout(seed: int, step: int, rank: int, micro: int) -> None:
    """Seed torch's global RNG (CPU and CUDA), which dropout layers draw from, for one forward pass."""
    torch.manual_seed(derive_seed(seed, "dropout", step, rank, micro))
