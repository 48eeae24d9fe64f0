"""Samplers of the absorbing (masked) process (:mod:`undiffuse.diffusion.masked`) and of its autoregressive
baseline, over token sequences [B, L] of ids 0..V−1 with the mask id V.

``sample_masked`` — MDLM's ancestral sampler (Sahoo et al. 2024, Eq. 7) on K steps t_k = 1 − k/K, K ≤ L or not:
from t to s < t each masked position is unmasked with probability (α_s − α_t)/(1 − α_t) to a token drawn from
x_θ(z_t); unmasked positions never change; the last step (s = 0, α_0 = 1) unmasks everything. Positions given
in the starting sequence (not the mask id) are kept: that is infilling, and with a given prefix, continuation.
x_θ depends on z_t alone (no time input), so a row whose z did not change since the network last saw it reuses
that output (MDLM's caching): with K > L most steps cost no network evaluation. ``order="confidence"`` is the
greedy variant (MaskGIT, Chang et al. 2022): each step unmasks the same expected number of positions, but those
whose drawn token is most probable under x_θ, instead of random ones.

``sample_blocks`` — block diffusion (BD3-LM, Arriola et al. 2025): blocks left to right, each by ``sample_masked``
(K steps per block, the cache within a block) with x_θ reading the finished earlier blocks as clean context. Given
positions are kept; within a block they condition the block's other positions, and a block never sees given
positions of later blocks (they cannot inform earlier ones). Block j of row i draws from a generator seeded by
the j-th of the seeds that row i's generator draws first, so row i depends on its own generator alone, also when
other rows of the batch have a given block where it has none.

``sample_left_to_right`` — the autoregressive baseline: position by position, each drawn from
p_θ(x^ℓ | x^{<ℓ}); given positions are kept (it cannot look at given characters to the right of a gap).

Every random draw of row i comes from ``generators[i]``, so sample i depends only on its generator (the driver
seeds it from (seed, i)); categorical draws are Gumbel-max in float64 (float32 Gumbel noise visibly lowers the
diversity of masked-diffusion samples, Zheng et al. 2024). ``top_p`` < 1 draws from the nucleus instead (Holtzman
et al. 2020: the most probable tokens whose probabilities sum to ≥ p, renormalised), as MDLM's and ReMDM's sample
evaluations do — higher-quality, less diverse samples (report their entropy beside any perplexity).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from undiffuse.diffusion.masked import MaskingSchedule

__all__ = ["sample_masked", "sample_blocks", "sample_left_to_right", "gumbel_draw", "nucleus"]

Logits = Callable[[torch.Tensor], torch.Tensor]  # z [b, L] → logits [b, L, V]


def _rand(gens: Sequence[torch.Generator], *shape: int) -> torch.Tensor:
    """Uniforms [len(gens), *shape] (float64, CPU), row i from generator i."""
    return torch.stack([torch.rand(*shape, generator=g, dtype=torch.float64) for g in gens])


def nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """log p [..., V] (float64) renormalised on the nucleus: the fewest most probable tokens whose probabilities
    sum to ≥ ``top_p`` (the others get −inf; ``top_p`` = 1 keeps all)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    if top_p >= 1.0:
        return logp
    p, order = logp.exp().sort(dim=-1, descending=True)
    outside = (p.cumsum(dim=-1) - p) >= top_p  # the mass before a token already reaches top_p
    logp = logp.masked_fill(torch.zeros_like(outside).scatter(-1, order, outside), float("-inf"))
    return torch.log_softmax(logp, dim=-1)


def gumbel_draw(logits: torch.Tensor, u: torch.Tensor, top_p: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids argmax(log p + G), their probabilities p) for logits [..., V] and uniforms u [..., V] (float64);
    p is the :func:`nucleus` distribution for ``top_p`` < 1."""
    logp = nucleus(logits, top_p)
    g = -torch.log(-torch.log(u.clamp(1e-300, 1 - 1e-16)))
    tok = (logp + g.to(logp.device)).argmax(dim=-1)
    return tok, logp.gather(-1, tok.unsqueeze(-1)).squeeze(-1).exp()


def sample_masked(logits_fn: Logits, z: torch.Tensor, schedule: MaskingSchedule, steps: int,
                  generators: Sequence[torch.Generator], mask_id: int, order: str = "ancestral",
                  top_p: float = 1.0, context: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Sequences [b, L] from the starting ``z`` (mask id where to generate) in ``steps`` steps, and the network
    evaluations each row used [b]. A ``schedule`` with α_1 > 0 (loglinear) first draws each masked position from
    the prior ε·Uniform(V) + (1 − ε)·δ(m); ``top_p``: nucleus draws. ``context`` [b, P]: clean tokens before z
    (block diffusion); ``logits_fn`` then takes (context rows, z rows)."""
    if order not in ("ancestral", "confidence"):
        raise ValueError(f"unknown order {order!r}: ancestral or confidence")
    z = z.clone()
    b, L = z.shape
    V = mask_id
    nfe = torch.zeros(b, dtype=torch.long)
    alpha_end = schedule.alpha_end
    if alpha_end > 0:
        u, v = _rand(generators, L), _rand(generators, L)
        prior = (z == mask_id) & (u < alpha_end).to(z.device)
        z = torch.where(prior, (v * V).long().clamp(max=V - 1).to(z.device), z)
    free0 = (z == mask_id).sum(dim=1).double()
    logits: Optional[torch.Tensor] = None
    stale = torch.ones(b, dtype=torch.bool)
    times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    for k in range(steps):
        masked = z == mask_id
        if not masked.any():
            break
        need = stale & masked.any(dim=1).cpu()
        if need.any():  # the cache: rows whose z is unchanged keep their x_θ(z)
            rows = need.nonzero().squeeze(1).to(z.device)
            out = (logits_fn(z[rows]) if context is None else logits_fn(context[rows], z[rows])).double()
            logits = out.new_zeros(b, L, out.shape[-1]) if logits is None else logits
            logits[rows] = out
            nfe += need.long()
        t, s = times[k], times[k + 1]
        u, g = _rand(generators, L), _rand(generators, L, V)
        tok, conf = gumbel_draw(logits, g, top_p)
        if order == "ancestral":
            p = 1.0 if s <= 0 else float(schedule.step_weight(s, t))
            reveal = masked & (u.to(z.device) < p)
        else:  # unmask the expected number, most confident first
            a_s = float(schedule.alpha(s))
            keep = torch.round(free0 * (1.0 - a_s) / (1.0 - alpha_end)).long() if s > 0 else torch.zeros_like(free0).long()
            n_reveal = (masked.sum(dim=1) - keep.to(z.device)).clamp(min=0)
            score = torch.where(masked, conf, torch.full_like(conf, -1.0))
            rank = score.argsort(dim=1, descending=True).argsort(dim=1)
            reveal = masked & (rank < n_reveal.unsqueeze(1))
        z = torch.where(reveal, tok.to(z.device), z)
        stale = reveal.any(dim=1).cpu()
    return z, nfe


def sample_blocks(logits_after: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], z: torch.Tensor,
                  schedule: MaskingSchedule, steps: int, generators: Sequence[torch.Generator], mask_id: int,
                  block: int, order: str = "ancestral", top_p: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Sequences [b, L] from ``z`` block by block, ``steps`` steps per block; ``logits_after(prefix [b, P], zb
    [b, n]) → logits [b, n, V]`` is x_θ of the noisy block zb after the clean prefix. Returns the sequences and the
    network evaluations per row [b] (summed over blocks)."""
    z = z.clone()
    b, L = z.shape
    n_blocks = -(-L // block)
    seeds = torch.stack([torch.randint(0, 2**62, (n_blocks,), generator=g) for g in generators])  # [b, N]
    nfe = torch.zeros(b, dtype=torch.long)
    for j in range(n_blocks):
        lo, hi = j * block, min(L, (j + 1) * block)
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[:, j]]
        out, used = sample_masked(logits_after, z[:, lo:hi], schedule, steps, gens, mask_id, order, top_p, z[:, :lo])
        z[:, lo:hi] = out
        nfe += used
    return z, nfe


def sample_left_to_right(logits_fn: Logits, z: torch.Tensor, generators: Sequence[torch.Generator], mask_id: int,
                         top_p: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The autoregressive baseline: each masked position ℓ, left to right, drawn from p_θ(· | x^{<ℓ}); ``logits_fn``
    reads the start-shifted sequence itself (see :class:`undiffuse.diffusion.autoregressive.CausalLM`). Returns the
    sequences and the network evaluations per row (one per generated position; there is no key/value cache)."""
    z = z.clone()
    b, L = z.shape
    nfe = torch.zeros(b, dtype=torch.long)
    for pos in range(L):
        todo = z[:, pos] == mask_id
        if not todo.any():
            continue
        rows = todo.nonzero().squeeze(1)
        g = _rand([generators[r] for r in rows.tolist()], mask_id)  # only rows that generate ℓ draw: row i's
        logits = logits_fn(z[rows, : pos + 1])[:, pos]  # stream depends on its own given positions alone
        tok, _ = gumbel_draw(logits, g, top_p)
        z[rows, pos] = tok.to(z.device)
        nfe += todo.cpu().long()
    return z, nfe
