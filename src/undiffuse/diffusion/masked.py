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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from undiffuse.diffusion.autoregressive import sequence_nll

__all__ = ["MASK_SCHEDULES", "MaskingSchedule", "mask_tokens", "masked_cross_entropy", "MaskedDenoiser",
           "elbo_continuous", "elbo_discrete", "elbo_stratified"]  # fmt: skip

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
    per sequence [B]. With the same u, the masks of s < t are nested (a token masked at s stays masked at t)."""
    a = alpha.to(u.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.where(u >= a, torch.full_like(x, mask_id), x)


def masked_cross_entropy(logits: torch.Tensor, x: torch.Tensor, z: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Σ over masked positions of −log x_θ(z)^ℓ[x^ℓ], per sequence [B] (nats; logits [B, L, V] over real tokens)."""
    return (sequence_nll(logits, x) * (z == mask_id)).sum(dim=-1)


class MaskedDenoiser(nn.Module):
    """The network ``net(z [B, L] token ids incl. the mask V) → logits [B, L, V]`` as the absorbing process's
    x_θ, with the trainer's per-example loss (:meth:`example_loss`: the continuous-time ELBO in nats per token)."""

    process = "masked"
    stratified_t = True  # the trainer draws the t of a batch low-discrepancy (MDLM Sec. 3.5; training.keyed)

    def __init__(self, net: nn.Module, schedule: MaskingSchedule, vocab: int) -> None:
        super().__init__()
        self.net, self.schedule, self.vocab = net, schedule, int(vocab)

    @property
    def mask_id(self) -> int:
        return self.vocab

    def with_net(self, net: nn.Module) -> "MaskedDenoiser":
        return MaskedDenoiser(net, self.schedule, self.vocab)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits [B, L, V] of x_θ(z)."""
        return self.net(z)

    def example_loss(self, schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, **cond) -> torch.Tensor:
        """One-sample estimate of L_∞ per token [B] (nats): :func:`elbo_continuous` at the trainer's draws — time
        (t − ½)/T, masks from the uniforms Φ(noise) (:func:`mask_tokens`)."""
        x = x0.long()
        tc = (t.double() - 0.5) / self.schedule.T
        u = torch.special.ndtr(noise.double())
        return (elbo_continuous(self.net, x, self.schedule, tc, u, self.mask_id) / x.shape[-1]).float()


Logits = Callable[[torch.Tensor], torch.Tensor]


def _term(logits: Logits, x: torch.Tensor, alpha: torch.Tensor, u: torch.Tensor, mask_id: int) -> torch.Tensor:
    z = mask_tokens(x, alpha, u, mask_id)
    return masked_cross_entropy(logits(z), x, z, mask_id).double()


def elbo_continuous(logits: Logits, x: torch.Tensor, schedule: MaskingSchedule, t: torch.Tensor,
                    u: torch.Tensor, vocab: int) -> torch.Tensor:  # fmt: skip
    """w(t)·CE(z_t) + L_prior per sequence [B] (nats): an unbiased one-time estimate of L_∞ for t ~ U(0, 1) [B]
    with masking uniforms u [B, L]."""
    ce = _term(logits, x, schedule.alpha(t).to(x.device), u, vocab)
    return schedule.weight(t).to(ce.device) * ce + schedule.prior_nats(vocab) * x.shape[-1]


def elbo_discrete(logits: Logits, x: torch.Tensor, schedule: MaskingSchedule, i: torch.Tensor, T: int,
                  u: torch.Tensor, vocab: int) -> torch.Tensor:  # fmt: skip
    """T·(step term i) + L_prior per sequence [B] (nats): an unbiased one-step estimate of L_T for i uniform on
    1..T [B] (the step term is (α_s − α_t)/(1 − α_t)·CE(z_t) at t = i/T, s = (i − 1)/T)."""
    t, s = i.double() / T, (i.double() - 1) / T
    ce = _term(logits, x, schedule.alpha(t).to(x.device), u, vocab)
    return T * schedule.step_weight(s, t).to(ce.device) * ce + schedule.prior_nats(vocab) * x.shape[-1]


def elbo_stratified(logits: Logits, x: torch.Tensor, schedule: MaskingSchedule, vocab: int, n_t: int,
                    generator: Optional[torch.Generator] = None, T: Optional[int] = None,
                    keep: Optional[torch.Tensor] = None) -> torch.Tensor:  # fmt: skip
    """A stratified-t estimate of the bound per sequence [B] (nats) for ``vocab`` = V real tokens (V is the mask
    id): the mean over n_t strata [k/n_t, (k+1)/n_t) of one draw of t each (``T`` None: L_∞) or of step indices
    i ∈ 1..T in n_t equal strata (``T``: the discrete L_T). Unbiased, with far less variance than one t per
    sequence; the standard error over sequences is then an honest (slightly conservative) error bar of the mean. ``keep`` [B, L] (True = never masked) gives the bound
    on −log p(x_free | x_keep) of the other positions (infilling); L_prior then counts only those."""
    B, L = x.shape
    total = torch.zeros(B, dtype=torch.float64, device=x.device)
    for k in range(n_t):
        r = torch.rand(B, generator=generator, dtype=torch.float64).to(x.device)
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
