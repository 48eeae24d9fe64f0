"""Multinomial diffusion on one-hot categories (Hoogeboom et al. 2021, "Argmax Flows and Multinomial
Diffusion", Sec. 4), as TabDDPM (Kotelnikov et al. 2023) uses it for categorical columns.

A category with K values is a one-hot vector x. One step resamples it uniformly with probability β_t:

    q(x_t | x_{t−1}) = C(x_t | α_t·x_{t−1} + (1 − α_t)/K)            (Hoogeboom et al. Eq. 11)
    q(x_t | x_0)     = C(x_t | ᾱ_t·x_0 + (1 − ᾱ_t)/K)                 (Eq. 12)
    q(x_{t−1} | x_t, x_0) = C(x_{t−1} | θ_post(x_t, x_0)),
        θ_post ∝ [α_t·x_t + (1 − α_t)/K] ⊙ [ᾱ_{t−1}·x_0 + (1 − ᾱ_{t−1})/K]   (Eq. 13)

with the same α_t, ᾱ_t as the Gaussian chain. The model predicts x̂_0 (a probability vector) and
p_θ(x_{t−1} | x_t) = C(θ_post(x_t, x̂_0)); the loss is KL(q(x_{t−1}|x_t,x_0) ‖ p_θ(x_{t−1}|x_t)), which at
t = 1 (ᾱ_0 = 1, so q(x_0|x_1,x_0) = x_0) is the decoder's −log p_θ(x_0 | x_1). Between two kept steps
s < t of a respaced grid the one-step α is ᾱ_t/ᾱ_s, so the same formulas sample any subset of steps.

Blocks: a row holds several categories as consecutive one-hot blocks of sizes ``categories`` = (K_1, …);
each function here acts on one block [B, K] (``blocks`` splits a row).
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["blocks", "q_probs", "posterior_probs", "categorical_kl", "sample_categorical", "uniform_from_normal"]

_TINY = 1e-30


def blocks(categories: Sequence[int], start: int) -> list[slice]:
    """The column slices of the one-hot blocks of sizes ``categories`` that begin at column ``start``."""
    out, at = [], start
    for k in categories:
        out.append(slice(at, at + int(k)))
        at += int(k)
    return out


def q_probs(x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """θ of q(x_t | x_0) = C(ᾱ_t·x_0 + (1 − ᾱ_t)/K) (Eq. 12). x0 [B, K] one-hot or probabilities,
    alpha_bar [B] or scalar."""
    K = x0.shape[-1]
    ab = torch.as_tensor(alpha_bar, dtype=x0.dtype, device=x0.device).reshape(-1, 1)
    return ab * x0 + (1 - ab) / K


def posterior_probs(x_t: torch.Tensor, x0: torch.Tensor, alpha: torch.Tensor, alpha_bar_prev: torch.Tensor) -> torch.Tensor:
    """θ_post(x_t, x_0) of q(x_{t−1} | x_t, x_0) (Eq. 13). x_t [B, K] one-hot; x0 [B, K] one-hot or
    probabilities (x̂_0 gives p_θ); alpha = α_t = ᾱ_t/ᾱ_{t−1} and alpha_bar_prev = ᾱ_{t−1}, [B] or scalar."""
    K = x_t.shape[-1]
    a = torch.as_tensor(alpha, dtype=x_t.dtype, device=x_t.device).reshape(-1, 1)
    theta = (a * x_t + (1 - a) / K) * q_probs(x0, alpha_bar_prev)
    return theta / theta.sum(dim=-1, keepdim=True).clamp_min(_TINY)


def categorical_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(C(p) ‖ C(q)) = Σ_k p_k (log p_k − log q_k) over the last axis, with 0·log 0 = 0. [B, K] → [B]."""
    terms = p * (torch.log(p.clamp_min(_TINY)) - torch.log(q.clamp_min(_TINY)))
    return torch.where(p > 0, terms, torch.zeros_like(terms)).sum(dim=-1)


def sample_categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One-hot draws [B, K] from C(probs) by the inverse CDF at uniforms u [B] in [0, 1)."""
    cdf = probs.cumsum(dim=-1)
    cdf = cdf / cdf[:, -1:].clamp_min(_TINY)
    idx = (cdf < u.reshape(-1, 1).to(cdf.dtype)).sum(dim=-1).clamp(max=probs.shape[-1] - 1)
    return torch.nn.functional.one_hot(idx, probs.shape[-1]).to(probs.dtype)


def uniform_from_normal(n: torch.Tensor) -> torch.Tensor:
    """u = Φ(n): a standard normal draw turned into a uniform one, so the keyed Gaussian noise of a step
    also drives its categorical draws (one generator, one stream per sample)."""
    return torch.special.ndtr(n.double()).clamp(0.0, 1.0 - 1e-12)
