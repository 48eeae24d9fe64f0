"""Closed forms for the Gaussian oracle: data x_0 ~ N(m, s²·I), denoiser D*(x; σ) = m + g(σ)·(x − m),
g(σ) = s²/(s² + σ²), Var[x_0 | x] = s²σ²/(s² + σ²) (see :class:`~undiffuse.diffusion.oracles.GaussianOracle`).

With that denoiser every DDPM/DDIM step is affine in the state plus independent Gaussian noise, so a
whole sampling chain maps its start state x to ``a·x + b + N(0, c)`` per dimension. These functions
propagate (a, b, c) along the same σ grid the samplers take, and give the variational bound of the
discrete chain (prior, each L_{t−1}, continuous decoder) in closed form. They are written from the
equations, independently of the library's tables, so tests can hold the library to them.

Units: σ-space, x = x_0 + σ·n; a VP state is x_t = √ᾱ·x with ᾱ = 1/(1 + σ²). Everything is per
dimension (the dimensions are independent), in float64; VLB parts are in nats per example.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import torch

from undiffuse.schedules.discrete import Schedule

__all__ = [
    "AffineGaussian",
    "ddpm_chain",
    "ddim_chain",
    "prior_moments",
    "gaussian_expected_vlb",
    "gaussian_vlb_given_x0",
    "gaussian_nll",
    "gaussian_prior_gap",
]

Grid = Union[torch.Tensor, Sequence[float]]


@dataclass(frozen=True)
class AffineGaussian:
    """The map x ↦ a·x + b + N(0, c) from a chain's start state to its output (per dimension)."""

    a: float
    b: float
    c: float

    def then(self, a: float, b: float, c: float) -> "AffineGaussian":
        """Follow this map by x ↦ a·x + b + N(0, c)."""
        return AffineGaussian(a * self.a, a * self.b + b, a * a * self.c + c)

    def moments(self, mean: float, var: float) -> tuple[float, float]:
        """Mean and variance of the output for a start state with the given mean and variance."""
        return self.a * mean + self.b, self.a**2 * var + self.c


def _floats(sigmas: Grid) -> list[float]:
    out = [float(v) for v in (sigmas.tolist() if torch.is_tensor(sigmas) else sigmas)]
    if any(math.isinf(v) for v in out):
        raise ValueError("the closed forms need a finite σ grid (no zero terminal SNR)")
    if any(b >= a for a, b in zip(out, out[1:])):
        raise ValueError("the σ grid must be strictly decreasing")
    return out


def prior_moments(sigma_max: float) -> tuple[float, float]:
    """Mean and variance, in σ-space at σ_max, of the VP prior x_T ~ N(0, 1): x = x_T·√(1 + σ_max²)."""
    return 0.0, 1.0 + float(sigma_max) ** 2


def _gain(s: float, sigma: float) -> float:
    return s * s / (s * s + sigma * sigma)


def _post_var(s: float, sigma: float) -> float:
    return s * s * sigma * sigma / (s * s + sigma * sigma)


def _step_tables(sigma: float, sigma_next: float) -> dict:
    """β, β̃, and the posterior coefficients c1 (of x_0) and c2 (of x_t) of the chain step σ → σ_next."""
    return _step_tables_ab(1.0 / (1.0 + sigma**2), 1.0 / (1.0 + sigma_next**2))


def _step_tables_ab(ab: float, ab_prev: float) -> dict:
    """The same from ᾱ_t and ᾱ_{t−1} (Ho et al. 2020, Eqs. 6–7)."""
    beta = 1.0 - ab / ab_prev
    return {
        "ab": ab,
        "ab_prev": ab_prev,
        "beta": beta,
        "beta_tilde": (1.0 - ab_prev) / (1.0 - ab) * beta,
        "c1": math.sqrt(ab_prev) * beta / (1.0 - ab),
        "c2": math.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab),
    }


def _reverse_variance(var_type: str, tab: dict, s: float, sigma: float, beta_tilde_2: float | None) -> float:
    """Σ_θ of one reverse step: β̃ (β̃ of the step above at the last step, β there for a one-step chain),
    β, or the optimal β̃ + c1²·Var[x_0|x_t]."""
    if var_type == "fixed_small":
        if tab["beta_tilde"] > 0:
            return tab["beta_tilde"]
        return tab["beta"] if beta_tilde_2 is None else beta_tilde_2
    if var_type == "fixed_large":
        return tab["beta"]
    if var_type in ("optimal", "learned"):
        return tab["beta_tilde"] + tab["c1"] ** 2 * _post_var(s, sigma)
    raise ValueError(f"unknown var_type {var_type!r}")


def ddpm_chain(
    sigmas: Grid, m: float, s: float, var_type: str = "fixed_small", final_noise: bool = False
) -> AffineGaussian:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) with the Gaussian oracle over a σ grid ending at 0.

    Each step, in VP units x_t = √ᾱ_t·x: x̂_0 = m + g·(x − m), x_{t−1} = c1·x̂_0 + c2·x_t + Σ^½·z.
    ``var_type`` is fixed_small (β̃_t), fixed_large (β_t) or optimal (β̃_t + c1²·Var[x_0|x_t], what the
    oracle's ``optimal_variance`` gives; ``learned`` means the same). The last step adds no noise unless
    ``final_noise`` (then it is the decoder p_θ(x_0|x_1) of the bound, with the variance the bound uses).
    Returns the map from the σ-space state at ``sigmas[0]`` to the output at σ = 0.
    """
    grid = _floats(sigmas)
    if grid[-1] != 0:
        raise ValueError("the DDPM grid must end at σ = 0")
    # start in σ-space, move to VP units: x_t = √ᾱ·x
    out = AffineGaussian(1.0 / math.sqrt(1.0 + grid[0] ** 2), 0.0, 0.0)
    beta_tilde_above = None
    n = len(grid) - 1
    for i in range(n):
        sigma, sigma_next = grid[i], grid[i + 1]
        tab = _step_tables(sigma, sigma_next)
        g = _gain(s, sigma)
        # x̂_0 = g·√(1 + σ²)·x_t + (1 − g)·m
        a = tab["c1"] * g * math.sqrt(1.0 + sigma**2) + tab["c2"]
        b = tab["c1"] * (1.0 - g) * m
        last = i == n - 1
        c = _reverse_variance(var_type, tab, s, sigma, beta_tilde_above) if (final_noise or not last) else 0.0
        out = out.then(a, b, c)
        beta_tilde_above = tab["beta_tilde"]
    return out  # at σ = 0 the VP state is the σ-space state


def _ddim_sigma_up(sigma: float, sigma_next: float, eta: float) -> float:
    """DDIM's σ_t(η) = η·√((1−ᾱ_{t−1})/(1−ᾱ_t))·√(1 − ᾱ_t/ᾱ_{t−1}) (Song et al. 2021, Eq. 16) in σ-space
    (divided by √ᾱ_{t−1})."""
    tab = _step_tables(sigma, sigma_next)
    vp = eta * math.sqrt((1 - tab["ab_prev"]) / (1 - tab["ab"]) * (1 - tab["ab"] / tab["ab_prev"]))
    return vp / math.sqrt(tab["ab_prev"])


def ddim_chain(sigmas: Grid, m: float, s: float, eta: float = 0.0) -> AffineGaussian:
    """DDIM (Song et al. 2021, Eq. 12) with the Gaussian oracle, in σ-space:
    x' = x̂_0 + σ_down·(x − x̂_0)/σ + σ_up·z, σ_up from Eq. 16, σ_down = √(σ'² − σ_up²).
    Returns the map from the state at ``sigmas[0]`` to the state at ``sigmas[-1]``."""
    grid = _floats(sigmas)
    out = AffineGaussian(1.0, 0.0, 0.0)
    for sigma, sigma_next in zip(grid, grid[1:]):
        up = _ddim_sigma_up(sigma, sigma_next, eta) if sigma_next > 0 else 0.0
        r = math.sqrt(max(sigma_next**2 - up**2, 0.0)) / sigma
        g = _gain(s, sigma)
        # x̂_0 = g·x + (1 − g)·m;  x' = (1 − r)·x̂_0 + r·x + σ_up·z
        out = out.then((1 - r) * g + r, (1 - r) * (1 - g) * m, up * up)
    return out


# --- the variational bound ------------------------------------------------------------------------


def _vlb_parts(schedule: Schedule, m: float, s: float, var_type: str, sq_x0, sq_dev) -> dict:
    """The bound's parts per dimension as functions of x_0² (``sq_x0``) and (x_0 − m)² (``sq_dev``),
    each already averaged over x_{1:T} ~ q(·|x_0). Linear in both, so plugging in E[x_0²] and
    E[(x_0 − m)²] gives the expectation over the data."""
    ab = schedule.alpha_bar.tolist()
    T = len(ab)
    ab_prev = [1.0] + ab[:-1]
    sig = [math.sqrt((1 - a) / a) for a in ab]
    # L_T = KL(N(√ᾱ_T x_0, 1 − ᾱ_T) ‖ N(0, 1))
    prior = 0.5 * (-math.log1p(-ab[-1]) + (1 - ab[-1]) + ab[-1] * sq_x0 - 1)
    terms = []
    beta_tilde_2 = _step_tables_ab(ab[1], ab[0])["beta_tilde"] if T > 1 else None
    for t in range(1, T + 1):
        sigma = sig[t - 1]
        tab = _step_tables_ab(ab[t - 1], ab_prev[t - 1])
        var = _reverse_variance(var_type, tab, s, sigma, beta_tilde_2)
        g = _gain(s, sigma)
        # E[(x_0 − x̂_0(x_t))² | x_0] with x = x_0 + σn: (1 − g)²(x_0 − m)² + g²σ²
        err = (1 - g) ** 2 * sq_dev + g * g * sigma * sigma
        if t == 1:  # decoder −log N(x_0; x̂_0(x_1), Σ_1) (c1 = 1, c2 = 0 at t = 1)
            terms.append(0.5 * (math.log(2 * math.pi) + math.log(var) + err / var))
        else:  # KL(N(μ̃, β̃) ‖ N(μ_θ, Σ)), μ̃ − μ_θ = c1·(x_0 − x̂_0)
            bt = tab["beta_tilde"]
            terms.append(0.5 * (math.log(var / bt) + bt / var + tab["c1"] ** 2 * err / var - 1))
    return {"prior": prior, "terms": terms}


def _assemble(parts: dict, dims: int) -> dict:
    terms = parts["terms"]
    if torch.is_tensor(parts["prior"]):
        terms_t = torch.stack([torch.as_tensor(v, dtype=torch.float64).expand_as(parts["prior"]) for v in terms], -1)
    else:
        terms_t = torch.tensor(terms, dtype=torch.float64)
    prior = parts["prior"] * dims
    terms_t = terms_t * dims
    return {
        "prior": prior,
        "terms": terms_t,  # index t − 1 holds L_{t−1}; index 0 is the decoder L_0
        "decoder": terms_t[..., 0],
        "kl_terms": terms_t[..., 1:].sum(-1),
        "total": prior + terms_t.sum(-1),
    }


def gaussian_expected_vlb(schedule: Schedule, m: float, s: float, var_type: str, dims: int = 1) -> dict:
    """E_{x_0 ~ N(m, s²I)} of the bound L = L_T + Σ_{t>1} L_{t−1} + L_0 (continuous decoder) for the
    oracle denoiser on ``schedule``, in nats per example of ``dims`` dimensions.

    All Gaussian: μ̃_t − μ_θ = c1·(x_0 − E[x_0|x_t]), so E[(μ̃_t − μ_θ)²] = c1²·Var[x_0|x_t];
    E[L_{t−1}] = ½[log(Σ/β̃) + β̃/Σ + c1²·Var[x_0|x_t]/Σ − 1]; E[L_0] = ½[log 2πΣ_1 + Var[x_0|x_1]/Σ_1];
    E[L_T] = ½[−log(1−ᾱ_T) + (1−ᾱ_T) + ᾱ_T(m² + s²) − 1]. Returns dict(prior, terms [T], decoder,
    kl_terms, total) with floats and a float64 tensor."""
    out = _assemble(_vlb_parts(schedule, m, s, var_type, m * m + s * s, s * s), dims)
    return {k: (float(v) if k != "terms" else v) for k, v in out.items()}


def gaussian_vlb_given_x0(schedule: Schedule, m: float, s: float, var_type: str, x0: torch.Tensor) -> dict:
    """The bound for each example x0 [B, ...], averaged over x_{1:T} ~ q(·|x_0) (nats per example)."""
    x0 = x0.double().reshape(x0.shape[0], -1)
    dims = x0.shape[1]
    # the parts are linear in x_0² and (x_0 − m)²: use their per-example means over dimensions
    out = _assemble(_vlb_parts(schedule, m, s, var_type, (x0**2).mean(1), ((x0 - m) ** 2).mean(1)), dims)
    return out


def gaussian_nll(m: float, s: float, dims: int = 1) -> float:
    """The true NLL E[−log N(x_0; m, s²I)] = dims·½(log 2πs² + 1), in nats (the entropy of the data)."""
    del m  # the entropy does not depend on the mean
    return dims * 0.5 * (math.log(2 * math.pi * s * s) + 1)


def gaussian_prior_gap(schedule: Schedule, m: float, s: float, dims: int = 1) -> float:
    """KL(q(x_T) ‖ N(0, I)) with q(x_T) = N(√ᾱ_T·m, ᾱ_T·s² + 1 − ᾱ_T) per dimension, in nats: the gap
    VLB − NLL with the optimal reverse variance."""
    ab = float(schedule.alpha_bar[-1])
    v = ab * s * s + 1 - ab
    return dims * 0.5 * (v - 1 - math.log(v) + ab * m * m)
