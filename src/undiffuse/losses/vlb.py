"""The variational bound L = L_T + Σ_{t>1} L_{t−1} + L_0 as exact Gaussian KL terms (Ho et al. 2020, Eq. 5).

Units: every term is returned in *nats per example* (summed over dimensions); :func:`bits_per_dim`
converts. The decoder L_0 = −log p_θ(x_0|x_1) is a discretized Gaussian for 8-bit data in [−1, 1]
(Ho et al. 2020, Eq. 13: bits/dim in *discrete* units, ≥ 0) or a Gaussian density for continuous data
(*continuous* bits/dim, which can be negative). Reports must say which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from undiffuse.diffusion.process import extract, q_posterior_mean_variance, q_sample
from undiffuse.diffusion.reverse import p_mean_variance
from undiffuse.schedules.discrete import Schedule

__all__ = [
    "DECODERS",
    "normal_kl",
    "approx_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "gaussian_log_likelihood",
    "prior_kl",
    "vlb_term",
    "VLBResult",
    "vlb_full",
    "vlb_strata",
    "StratifiedVLB",
    "vlb_stratified",
    "bits_per_dim",
    "mean_flat_sum",
]

DECODERS = ("discrete", "continuous")
LN2 = math.log(2.0)


def mean_flat_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over all but the batch dimension."""
    return x.reshape(x.shape[0], -1).sum(1)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(μ1, e^{logvar1}) ‖ N(μ2, e^{logvar2})) elementwise, in nats:
    ½[logvar2 − logvar1 + e^{logvar1 − logvar2} + (μ1 − μ2)²·e^{−logvar2} − 1]."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ(x), written with erf (exact, not the tanh approximation)."""
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_log_likelihood(
    x0: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, bins: int = 256
) -> torch.Tensor:
    """log p(x_0) under N(mean, e^{2·log_scale}) integrated over the bin of each 8-bit value
    (Ho et al. 2020, Eq. 13). ``x0`` takes the ``bins`` levels evenly spaced in [−1, 1]; the edge bins
    extend to ±∞, so the bin probabilities sum to 1."""
    half = 1.0 / (bins - 1)
    inv_std = torch.exp(-log_scale)
    cdf_plus = approx_standard_normal_cdf(inv_std * (x0 - mean + half))
    cdf_min = approx_standard_normal_cdf(inv_std * (x0 - mean - half))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    mid = torch.log(cdf_delta.clamp(min=1e-12))
    return torch.where(x0 < -1 + 1e-3, log_cdf_plus, torch.where(x0 > 1 - 1e-3, log_one_minus_cdf_min, mid))


def gaussian_log_likelihood(x0: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(x_0; mean, e^{log_var}) elementwise (continuous decoder)."""
    return -0.5 * (math.log(2 * math.pi) + log_var + (x0 - mean) ** 2 * torch.exp(-log_var))


def prior_kl(schedule: Schedule, x0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T|x_0) ‖ N(0, I)) per example in nats (Ho et al. 2020, Eq. 5)."""
    t = torch.full((x0.shape[0],), schedule.T, device=x0.device, dtype=torch.long)
    ab = extract(schedule.alpha_bar, t, x0)
    mean, logvar = ab.sqrt() * x0, torch.log1p(-ab).expand_as(x0)
    return mean_flat_sum(normal_kl(mean, logvar, torch.zeros_like(x0), torch.zeros_like(x0)))


def vlb_term(
    denoiser: Callable,
    schedule: Schedule,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    var_type: str = "fixed_small",
    decoder: str = "discrete",
    clip: Optional[tuple[float, float]] = None,
    detach_mean: bool = False,
    **cond,
) -> torch.Tensor:
    """L_{t−1} per example in nats: KL(q(x_{t−1}|x_t, x_0) ‖ p_θ(x_{t−1}|x_t)) for t > 1 and the decoder
    −log p_θ(x_0|x_1) for t = 1 (Ho et al. 2020, Eq. 5). ``detach_mean`` stops the gradient through μ_θ,
    so only the variance learns from this term (the hybrid loss, Nichol & Dhariwal 2021, Sec. 3.1)."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
    true_mean, _, true_logvar = q_posterior_mean_variance(schedule, x0, x_t, t)
    # at t = 1 the KL is replaced by the decoder below, so q's variance β̃_1 = 0 (true_logvar, clipped) is
    # unused there; p's variance at t = 1 (fixed-small: the clipped β̃ = β̃_2) is the decoder's actual variance
    p = p_mean_variance(denoiser, schedule, x_t, t, var_type=var_type, clip=clip, **cond)
    mean = p.mean.detach() if detach_mean else p.mean
    kl = mean_flat_sum(normal_kl(true_mean, true_logvar, mean, p.log_variance))
    if decoder == "discrete":
        ll = discretized_gaussian_log_likelihood(x0, mean, 0.5 * p.log_variance)
    else:
        ll = gaussian_log_likelihood(x0, mean, p.log_variance)
    nll0 = -mean_flat_sum(ll)
    return torch.where(t.to(kl.device) == 1, nll0, kl)


@dataclass
class VLBResult:
    """The bound's parts per example, in nats: prior L_T [B], terms L_{t−1} [B, T] (column t − 1 holds
    step t; column 0 is the decoder L_0), and the total [B]."""

    prior: torch.Tensor
    terms: torch.Tensor
    total: torch.Tensor
    decoder: str

    def bits_per_dim(self, dims: int) -> dict:
        """Batch-mean bits/dim of the total and of each part, with the unit (discrete/continuous)."""
        to_bpd = lambda v: float(v.mean()) / (dims * LN2)
        return {
            "bits_per_dim": to_bpd(self.total),
            "prior_bpd": to_bpd(self.prior),
            "decoder_bpd": to_bpd(self.terms[:, 0]),
            "kl_terms_bpd": to_bpd(self.terms[:, 1:].sum(1)),
            "units": self.decoder,
        }


@torch.no_grad()
def vlb_full(
    denoiser: Callable,
    schedule: Schedule,
    x0: torch.Tensor,
    var_type: str = "fixed_small",
    decoder: str = "discrete",
    generator: Optional[torch.Generator] = None,
    clip: Optional[tuple[float, float]] = None,
    **cond,
) -> VLBResult:
    """The whole bound over all T steps for a batch: each L_{t−1} exactly (Gaussian KL) at one draw
    x_t ~ q(x_t|x_0) (improved-diffusion's ``calc_bpd_loop``)."""
    B = x0.shape[0]
    terms = torch.zeros(B, schedule.T, dtype=torch.float64, device=x0.device)
    for t_int in range(schedule.T, 0, -1):
        t = torch.full((B,), t_int, device=x0.device, dtype=torch.long)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = q_sample(schedule, x0, t, noise)
        terms[:, t_int - 1] = vlb_term(denoiser, schedule, x0, x_t, t, var_type, decoder, clip, **cond).double()
    prior = prior_kl(schedule, x0).double()
    return VLBResult(prior, terms, prior + terms.sum(1), decoder)


def bits_per_dim(nats: torch.Tensor, dims: int) -> torch.Tensor:
    """nats per example → bits per dimension."""
    return nats / (dims * LN2)


def vlb_strata(T: int, n_t: int) -> list[tuple[int, int]]:
    """Split the steps 2..T into min(n_t, T − 1) contiguous strata [lo, hi] of near-equal size."""
    m = T - 1
    k = max(1, min(n_t, m))
    edges = [2 + (j * m) // k for j in range(k + 1)]
    return [(edges[j], edges[j + 1] - 1) for j in range(k)]


@dataclass
class StratifiedVLB:
    """One stratified draw of the bound per example, in nats: prior L_T [B], decoder L_0 [B], and the
    weighted KL draw of each stratum [B, k] (their sum estimates Σ_{t=2..T} L_{t−1} without bias)."""

    prior: torch.Tensor
    decoder: torch.Tensor
    strata: torch.Tensor
    bounds: list[tuple[int, int]]

    @property
    def total(self) -> torch.Tensor:
        return self.prior + self.decoder + self.strata.sum(1)


def vlb_stratified(
    denoiser: Callable, schedule: Schedule, x0: torch.Tensor, n_t: int, generator: torch.Generator,
    var_type: str = "fixed_small", decoder: str = "discrete", **cond: Any,
) -> StratifiedVLB:  # fmt: skip
    """An unbiased stratified Monte-Carlo estimate of the VLB L = L_T + Σ_{t=2..T} L_{t−1} + L_0
    (Ho et al. 2020, Eq. 5) per example, at n_t + 1 network evaluations instead of T.

    The prior L_T is exact; L_0 and each KL term use one draw x_t ~ q(x_t|x_0). Steps 2..T are cut into
    ``n_t`` strata (:func:`vlb_strata`); one t is drawn uniformly per stratum and example and its term is
    weighted by the stratum's size, so E[Σ strata] = Σ_t L_{t−1}. ``n_t = T − 1`` is exact in t.
    ``generator`` supplies every draw (noise on its device, then moved to x0's).
    """
    dev, gdev, b = x0.device, generator.device, len(x0)

    def term(t_int: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x0.shape, generator=generator, device=gdev).to(dev)
        x_t = q_sample(schedule, x0, t_int, noise)
        return vlb_term(denoiser, schedule, x0, x_t, t_int, var_type, decoder, **cond).double()

    bounds = vlb_strata(schedule.T, n_t)
    dec = term(torch.ones(b, dtype=torch.long, device=dev))
    per_stratum = []
    for lo, hi in bounds:
        size = hi - lo + 1
        u = torch.rand(b, generator=generator, device=gdev, dtype=torch.float64).to(dev)
        per_stratum.append(size * term(lo + (u * size).long().clamp(max=size - 1)))
    return StratifiedVLB(prior_kl(schedule, x0).double(), dec, torch.stack(per_stratum, 1), bounds)
