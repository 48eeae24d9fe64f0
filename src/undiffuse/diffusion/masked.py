"""Absorbing-state ("masked") diffusion for tokens: D3PM's absorbing kernel (Austin et al. 2021) and its
continuous-time form, MDLM (Sahoo et al. 2024; Shi et al. 2024).

Each token x^ℓ ∈ {0..V−1} of a sequence is kept with probability α_t and replaced by the mask token m = V
otherwise, independently over positions (MDLM Eq. 2):

    q(z_t^ℓ | x^ℓ) = Cat(z_t^ℓ; α_t·δ(x^ℓ) + (1 − α_t)·δ(m)),       α_0 = 1, α_1 = 0 (or ε)

and z_s ↦ z_t (s < t) only ever masks. The network x_θ(z_t) gives, at every position, a distribution over the V
real tokens (never m: MDLM's "zero masking probabilities"); unmasked tokens are carried over unchanged
("carry-over unmasking"). With this parameterisation the discrete-time bound (D3PM, MDLM Eq. 8) for T steps
t(i) = i/T is, per sequence,

    L_T = L_prior + Σ_{i=1..T} E_{z_t(i)} [ (α_s − α_t)/(1 − α_t) · Σ_{ℓ: z_t^ℓ = m} −log x_θ(z_t)^ℓ[x^ℓ] ],  s = t(i−1)

(L_0 = 0 because α_0 = 1: z_0 = x), and as T → ∞ the continuous-time ELBO (MDLM Eq. 10)

    L_∞ = L_prior + ∫_0^1 w(t) · E_{z_t} [ Σ_{ℓ: z_t^ℓ = m} −log x_θ(z_t)^ℓ[x^ℓ] ] dt,     w(t) = −α'_t / (1 − α_t),

a weighted masked-token cross-entropy. The network does not see t: for the absorbing process the mask count
already tells it (MDLM Sec. 3.2.3), and its output then depends on z_t alone, which is what lets the sampler
skip the network when a step unmasks nothing (:mod:`undiffuse.samplers.masked`).

Masking schedules α_t (``MASK_SCHEDULES``): ``linear`` α_t = 1 − t (w = 1/t); ``cosine`` α_t = cos(πt/2);
``loglinear`` (MDLM, SEDD) α_t = 1 − (1 − ε)t, total noise −log α_t, with ε = 1e-3, so a token survives to t = 1
with probability ε; its prior p(z_1) is then ε·Uniform(V) + (1 − ε)·δ(m), and L_prior = ε·log V per token
(0 for the other two). Bits per character are nats / (L · ln 2).

**Block diffusion** (BD3-LM, Arriola et al. 2025): the sequence is cut into blocks x_1..x_N of ``block`` tokens and
log p(x) = Σ_b log p(x_b | x_{<b}); each block's conditional is the masked process above with its own time t_b,
x_θ seeing the noisy block and the *clean* earlier blocks, so the bound is the sum over blocks of the block ELBOs,

    L_∞ = Σ_b ∫_0^1 w(t) · E_{z_b,t} [ Σ_{ℓ ∈ b: z^ℓ = m} −log x_θ(z_b,t, x_{<b})^ℓ[x^ℓ] ] dt      (BD3-LM Eq. 6),

a true bound on −log p(x) (each term bounds −log p(x_b | x_{<b})). One block (block ≥ L) is MDLM; block = 1 is
autoregression exactly (a single token's ELBO is ∫ w(t)(1 − α_t) dt · CE = CE). Training is one pass over
[z_t ; x] (2L inputs, positions [0..L−1, 0..L−1]) with the mask of :func:`bd3_mask`; a t per block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from undiffuse.diffusion.autoregressive import sequence_nll

__all__ = ["MASK_SCHEDULES", "MaskingSchedule", "mask_tokens", "masked_cross_entropy", "MaskedDenoiser",
           "elbo_continuous", "elbo_discrete", "elbo_stratified", "bd3_mask", "block_causal_mask"]  # fmt: skip

MASK_SCHEDULES = ("linear", "cosine", "loglinear")
LOGLINEAR_EPS = 1e-3


@dataclass(frozen=True)
class MaskingSchedule:
    """α_t on t ∈ [0, 1] (see the module docstring). ``T`` is the number of discrete training times the trainer
    draws (:func:`undiffuse.training.keyed.draw_step`: t ∈ 1..T becomes (t − ½)/T); the discrete bound's step
    count is its own argument (:func:`elbo_stratified`)."""

    name: str = "linear"
    T: int = 1000
    eps: float = LOGLINEAR_EPS

    def __post_init__(self) -> None:
        if self.name not in MASK_SCHEDULES:
            raise ValueError(f"unknown masking schedule {self.name!r}; choose one of {', '.join(MASK_SCHEDULES)}")

    @property
    def alpha_end(self) -> float:
        """α_1: the probability that a token is still unmasked at t = 1."""
        return self.eps if self.name == "loglinear" else 0.0

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """α_t, the probability that a token is not yet masked at time t."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if self.name == "cosine":
            return torch.cos(0.5 * math.pi * t)
        return 1.0 - (1.0 - self.alpha_end) * t

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        """α'_t = dα_t/dt (≤ 0)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if self.name == "cosine":
            return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)
        return torch.full_like(t, -(1.0 - self.alpha_end))

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """w(t) = −α'_t / (1 − α_t), the ELBO's weight of the masked-token cross-entropy at time t (MDLM Eq. 10)."""
        return -self.dalpha(t) / (1.0 - self.alpha(t))

    def step_weight(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(α_s − α_t)/(1 − α_t): the probability that a token masked at t was unmasked at s < t (the weight of a
        step of the discrete bound, and the unmasking probability of the ancestral sampler)."""
        return (self.alpha(s) - self.alpha(t)) / (1.0 - self.alpha(t))

    def prior_nats(self, vocab: int) -> float:
        """L_prior per token: KL(q(z_1|x) ‖ p(z_1)) = ε·log V for loglinear, 0 otherwise."""
        return self.alpha_end * math.log(vocab)


def mask_tokens(x: torch.Tensor, alpha: torch.Tensor, u: torch.Tensor, mask_id: int) -> torch.Tensor:
    """z_t ~ q(z_t | x) from uniforms ``u`` (shape of x): position ℓ is masked iff u^ℓ ≥ α_t. ``alpha`` is one α_t
    per sequence [B] (or one per position, shape of x). With the same u, the masks of s < t are nested (a token
    masked at s stays masked at t)."""
    a = alpha.to(u.dtype)
    a = a if a.shape == x.shape else a.reshape(-1, *([1] * (x.ndim - 1)))
    return torch.where(u >= a, torch.full_like(x, mask_id), x)


def masked_cross_entropy(logits: torch.Tensor, x: torch.Tensor, z: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Σ over masked positions of −log x_θ(z)^ℓ[x^ℓ], per sequence [B] (nats; logits [B, L, V] over real tokens)."""
    return (sequence_nll(logits, x) * (z == mask_id)).sum(dim=-1)


def block_ids(length: int, block: int) -> torch.Tensor:
    """The block of each position [length]: ℓ // block."""
    return torch.arange(length) // block


def block_causal_mask(length: int, block: int) -> torch.Tensor:
    """[length, length] bool: position i may attend to j iff j's block ≤ i's block (the sampler's layout
    [x_{<b} ; z_b]: clean earlier blocks attend block-causally, the noisy last block sees them and itself)."""
    ids = block_ids(length, block)
    return ids[:, None] >= ids[None, :]


def bd3_mask(length: int, block: int) -> torch.Tensor:
    """BD3-LM's training mask [2L, 2L] (bool, True = attend) for the input [z_t ; x]: a noisy token of block b
    attends to the noisy tokens of block b and the clean tokens of blocks < b; a clean token attends to the clean
    tokens of blocks ≤ its own (never to noisy ones). Query i of z_t then sees exactly what it sees in the sampler's
    layout [x_{<b} ; z_b] under :func:`block_causal_mask`."""
    ids = block_ids(length, block)
    same, before = ids[:, None] == ids[None, :], ids[:, None] > ids[None, :]
    top = torch.cat([same, before], dim=1)
    bottom = torch.cat([torch.zeros_like(same), same | before], dim=1)
    return torch.cat([top, bottom], dim=0)


def block_times(k: torch.Tensor, n_blocks: int, T: int) -> torch.Tensor:
    """Times per block [B, N] from the trainer's one discrete time k ∈ 1..T per sequence [B]: block b gets
    k_b = (k − 1 + ⌊bT/N⌋) mod T + 1 and t_b = (k_b − ½)/T — each k_b uniform on 1..T when k is (the bound stays
    unbiased), the N times of a sequence spread over [0, 1) (low-discrepancy, like the batch's times, MDLM
    Sec. 3.5), and t_b on the same midpoint grid as MDLM's t (never 0). N = 1 gives (k − ½)/T."""
    shift = (torch.arange(n_blocks, dtype=torch.long) * T) // n_blocks
    kb = torch.remainder(k.long()[:, None] - 1 + shift.to(k.device), T) + 1
    return (kb.double() - 0.5) / T


class MaskedDenoiser(nn.Module):
    """The network ``net(z [B, L] token ids incl. the mask V) → logits [B, L, V]`` as the absorbing process's
    x_θ, with the trainer's per-example loss (:meth:`example_loss`: the continuous-time ELBO in nats per token).
    ``block`` (0 or ≥ L: one block, MDLM) makes it a block-diffusion model (BD3-LM; module docstring): x_θ of a
    block then also reads the clean earlier blocks (:meth:`x_theta`, :meth:`logits_after`). ``train_range`` (low,
    high): the training loss draws t on [low, high] only (BD3-LM Sec. 5's clipped masking rates, for lower-variance
    gradients) — it then estimates the bound's integral over that range, not the bound; evaluation is unaffected."""

    process = "masked"
    stratified_t = True  # the trainer draws the t of a batch low-discrepancy (MDLM Sec. 3.5; training.keyed)

    def __init__(self, net: nn.Module, schedule: MaskingSchedule, vocab: int, block: int = 0,
                 train_range: Optional[tuple[float, float]] = None) -> None:  # fmt: skip
        super().__init__()
        self.net, self.schedule, self.vocab, self.block = net, schedule, int(vocab), int(block)
        self.train_range = None if train_range is None else (float(train_range[0]), float(train_range[1]))

    @property
    def mask_id(self) -> int:
        return self.vocab

    def with_net(self, net: nn.Module) -> "MaskedDenoiser":
        return MaskedDenoiser(net, self.schedule, self.vocab, self.block, self.train_range)

    def block_size(self, length: int) -> int:
        """The block size for sequences of ``length`` tokens (``length`` itself for MDLM)."""
        return length if self.block <= 0 or self.block >= length else self.block

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits [B, L, V] of x_θ(z) (MDLM; a block model needs the clean blocks too: :meth:`x_theta`)."""
        return self.net(z)

    def x_theta(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, L, V] of x_θ at every position of the noisy z [B, L], block b reading z's block b and x's
        blocks < b: one pass over [z ; x] with :func:`bd3_mask` (MDLM: net(z))."""
        L = z.shape[-1]
        size = self.block_size(L)
        if size == L:
            return self.net(z)
        pos = torch.arange(L, device=z.device)
        return self.net(torch.cat([z, x], dim=1), pos=torch.cat([pos, pos]), mask=bd3_mask(L, size))[:, :L]

    def logits_after(self, prefix: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
        """Logits [B, n, V] of x_θ for a noisy block zb [B, n] that follows the clean ``prefix`` [B, P] (P a
        multiple of the block size): the sampler's layout [prefix ; zb] with :func:`block_causal_mask`."""
        P, n = prefix.shape[1], zb.shape[1]
        if P == 0:
            return self.net(zb)
        size = self.block_size(P + n)
        return self.net(torch.cat([prefix, zb], dim=1), mask=block_causal_mask(P + n, size))[:, P:]

    def example_loss(self, schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, **cond) -> torch.Tensor:
        """One-sample estimate of L_∞ per token [B] (nats): :func:`elbo_continuous` at the trainer's draws — time
        (t − ½)/T (per block: :func:`block_times`), masks from the uniforms Φ(noise) (:func:`mask_tokens`)."""
        x = x0.long()
        L = x.shape[-1]
        tc = block_times(t, -(-L // self.block_size(L)), self.schedule.T)  # [B, N]; one block: (t − ½)/T
        u = torch.special.ndtr(noise.double())
        if self.train_range is not None:  # BD3-LM's clipped rates: t uniform on [low, high] (not the bound itself)
            lo, hi = self.train_range
            tc = lo + (hi - lo) * tc
        return (elbo_continuous(lambda z: self.x_theta(z, x), x, self.schedule, tc, u, self.mask_id) / L).float()


Logits = Callable[[torch.Tensor], torch.Tensor]


def _term(logits: Logits, x: torch.Tensor, alpha: torch.Tensor, u: torch.Tensor, mask_id: int) -> torch.Tensor:
    """The masked cross-entropy per sequence and block [B, N] (nats) at one α per block ``alpha`` [B, N]."""
    B, L = x.shape
    N = alpha.shape[1]
    size = -(-L // N)
    a = alpha if N == 1 else alpha.repeat_interleave(size, dim=1)[:, :L]
    z = mask_tokens(x, a.reshape(B) if N == 1 else a, u, mask_id)
    lg = logits(z)
    if N == 1:
        return masked_cross_entropy(lg, x, z, mask_id).double()[:, None]
    return torch.stack([masked_cross_entropy(lg[:, j : j + size], x[:, j : j + size], z[:, j : j + size], mask_id)
                        for j in range(0, L, size)], dim=1).double()  # fmt: skip


def _per_block(t: torch.Tensor, B: int) -> torch.Tensor:
    return t.reshape(B, -1)


def elbo_continuous(logits: Logits, x: torch.Tensor, schedule: MaskingSchedule, t: torch.Tensor,
                    u: torch.Tensor, vocab: int) -> torch.Tensor:  # fmt: skip
    """Σ_b w(t_b)·CE_b(z_t) + L_prior per sequence [B] (nats): an unbiased one-time estimate of L_∞ for times
    t ~ U(0, 1) — one per sequence [B] (MDLM), or one per block [B, N] (block diffusion; ``logits`` then reads the
    clean x itself, e.g. :meth:`MaskedDenoiser.x_theta`) — with masking uniforms u [B, L]."""
    t = _per_block(t, len(x))
    ce = _term(logits, x, schedule.alpha(t).to(x.device), u, vocab)
    return (schedule.weight(t).to(ce.device) * ce).sum(dim=1) + schedule.prior_nats(vocab) * x.shape[-1]


def elbo_discrete(logits: Logits, x: torch.Tensor, schedule: MaskingSchedule, i: torch.Tensor, T: int,
                  u: torch.Tensor, vocab: int) -> torch.Tensor:  # fmt: skip
    """Σ_b T·(step term i_b) + L_prior per sequence [B] (nats): an unbiased one-step estimate of L_T for i uniform
    on 1..T, one per sequence [B] or per block [B, N] (the step term is (α_s − α_t)/(1 − α_t)·CE(z_t) at
    t = i/T, s = (i − 1)/T)."""
    i = _per_block(i, len(x))
    t, s = i.double() / T, (i.double() - 1) / T
    ce = _term(logits, x, schedule.alpha(t).to(x.device), u, vocab)
    return (T * schedule.step_weight(s, t).to(ce.device) * ce).sum(dim=1) + schedule.prior_nats(vocab) * x.shape[-1]


def elbo_stratified(logits: Logits, x: torch.Tensor, schedule: MaskingSchedule, vocab: int, n_t: int,
                    generator: Optional[torch.Generator] = None, T: Optional[int] = None,
                    keep: Optional[torch.Tensor] = None, blocks: int = 1) -> torch.Tensor:  # fmt: skip
    """A stratified-t estimate of the bound per sequence [B] (nats) for ``vocab`` = V real tokens (V is the mask
    id): the mean over n_t strata [k/n_t, (k+1)/n_t) of one draw of t each (``T`` None: L_∞) or of step indices
    i ∈ 1..T in n_t equal strata (``T``: the discrete L_T). Unbiased, with far less variance than one t per
    sequence; the standard error over sequences is then an honest (slightly conservative) error bar of the mean. ``keep`` [B, L] (True = never masked) gives the bound
    on −log p(x_free | x_keep) of the other positions (infilling); L_prior then counts only those. ``blocks`` > 1:
    a block-diffusion model's bound, each block its own draw in each stratum (``logits`` reads the clean x)."""
    B, L = x.shape
    total = torch.zeros(B, dtype=torch.float64, device=x.device)
    for k in range(n_t):
        r = torch.rand(B, blocks, generator=generator, dtype=torch.float64).to(x.device)
        r = r[:, 0] if blocks == 1 else r
        u = torch.rand(B, L, generator=generator, dtype=torch.float64).to(x.device)
        if keep is not None:
            u = torch.where(keep.to(x.device), torch.full_like(u, -1.0), u)  # u < α_t for every t: never masked
        if T is None:
            total += elbo_continuous(logits, x, schedule, (k + r) / n_t, u, vocab)
        else:
            lo, hi = (k * T) // n_t, ((k + 1) * T) // n_t  # stratum of steps lo+1..hi
            if hi <= lo:
                continue
            i = lo + 1 + (r * (hi - lo)).long().clamp(max=hi - lo - 1)
            total += (hi - lo) / T * elbo_discrete(logits, x, schedule, i, T, u, vocab)
    if keep is not None:  # L_prior belongs to the free positions only
        total -= schedule.prior_nats(vocab) * keep.to(x.device).sum(dim=-1).double() * (n_t if T is None else 1)
    return total if T is not None else total / n_t
