"""The variational bound against the Gaussian oracle, where everything is known in closed form.

Data x_0 ~ N(m, s²I); the oracle denoiser is the exact E[x_0|x_t]. The expected bound per part
(undiffuse.diffusion.analytic.gaussian_expected_vlb) is compared with the true NLL, with its exact gap
under the optimal variance, with the library's Monte Carlo bound (losses.vlb.vlb_full), and per
sample with the model's own exact marginal p_θ(x_0) (the DDPM chain is linear-Gaussian).
Units: nats per example, continuous decoder.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import within

from undiffuse.diffusion.analytic import (
    ddpm_chain,
    gaussian_expected_vlb,
    gaussian_nll,
    gaussian_prior_gap,
    gaussian_vlb_given_x0,
    prior_moments,
)
from undiffuse.diffusion.oracles import GaussianOracle
from undiffuse.losses import vlb_full
from undiffuse.schedules import discrete_sigmas, make_schedule

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
VAR_TYPES = ("fixed_small", "fixed_large", "optimal")

SCHEDULES = {
    "linear1000": lambda: make_schedule("linear", 1000),
    "linear100_scaled": lambda: make_schedule("linear", 100, scale_to_T=True),
    "cosine200": lambda: make_schedule("cosine", 200),
    "short10": lambda: make_schedule("linear", 10, beta_start=1e-3, beta_end=0.3),
    "T2": lambda: make_schedule("betas", betas=[0.05, 0.6]),
}
DATA = [(0.3, 0.5), (0.0, 1.0), (-1.2, 2.0), (0.5, 0.05)]


def oracle_for(sch, m, s, var_type):
    optimal = var_type == "optimal"
    return GaussianOracle(m, s, schedule=sch if optimal else None, optimal_variance=optimal), (
        "learned" if optimal else var_type)


def model_marginal(sch, m, s, var_type) -> tuple[float, float]:
    """p_θ(x_0) = N(mean, var): the DDPM chain over all T steps from x_T ~ N(0, 1), with the decoder's
    noise at the last step (the model the bound is a bound of)."""
    sigmas = discrete_sigmas(sch)
    return ddpm_chain(sigmas, m, s, var_type, final_noise=True).moments(*prior_moments(float(sigmas[0])))


# --- closed form ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("m, s", DATA)
@pytest.mark.parametrize("sch_name", list(SCHEDULES))
def test_expected_vlb_is_never_below_the_true_nll(sch_name, m, s):
    sch = SCHEDULES[sch_name]()
    nll = gaussian_nll(m, s)
    vlb = {vt: gaussian_expected_vlb(sch, m, s, vt) for vt in VAR_TYPES}
    for vt, parts in vlb.items():
        assert parts["total"] >= nll - 1e-12, vt
        assert parts["total"] == pytest.approx(parts["prior"] + parts["kl_terms"] + parts["decoder"], rel=1e-12)
        # and never below the model's own expected NLL, which is never below the data entropy
        mean, var = model_marginal(sch, m, s, vt)
        model_nll = 0.5 * math.log(2 * math.pi * var) + (s * s + (m - mean) ** 2) / (2 * var)
        assert nll - 1e-12 <= model_nll <= parts["total"] + 1e-9, vt
    # the optimal variance minimises every term, so its bound is the tightest
    assert vlb["optimal"]["total"] <= min(vlb["fixed_small"]["total"], vlb["fixed_large"]["total"]) + 1e-12


@pytest.mark.parametrize("m, s", DATA)
@pytest.mark.parametrize("sch_name", list(SCHEDULES))
def test_optimal_variance_gap_is_exactly_the_prior_kl(sch_name, m, s):
    """E[L] − H(q(x_0)) = KL(q(x_T) ‖ N(0, I)) when every reverse step is the true q(x_{t−1}|x_t): the
    per-step terms (each > 0) must sum to the marginal prior mismatch."""
    sch = SCHEDULES[sch_name]()
    gap = gaussian_expected_vlb(sch, m, s, "optimal")["total"] - gaussian_nll(m, s)
    ab = float(sch.alpha_bar[-1])
    v = ab * s * s + 1 - ab  # q(x_T) = N(√ᾱ_T·m, v)
    kl = 0.5 * (v - 1 - math.log(v) + ab * m * m)
    assert gap == pytest.approx(kl, rel=1e-7, abs=1e-12)
    assert gaussian_prior_gap(sch, m, s) == pytest.approx(kl, rel=1e-12, abs=1e-15)
    # the model then draws x_0 from the true q(x_0|x_T) with x_T ~ N(0, 1) in place of q(x_T):
    # E[x_0|x_T] = m + A·(x_T − √ᾱ_T·m), A = √ᾱ_T·s²/v, Var[x_0|x_T] = s² − A²·v
    mean, var = model_marginal(sch, m, s, "optimal")
    A = math.sqrt(ab) * s * s / v
    assert mean == pytest.approx(m - A * math.sqrt(ab) * m, rel=1e-9, abs=1e-12)
    assert var == pytest.approx(s * s - A * A * v + A * A, rel=1e-9)


@pytest.mark.parametrize("m", [0.0, 0.7])
@pytest.mark.parametrize("sch_name", ["linear1000", "cosine200", "short10", "T2"])
def test_fixed_large_is_exact_for_unit_variance_data(sch_name, m):
    """With s = 1 every marginal has unit variance, the chain is reversible and q(x_{t−1}|x_t) has
    variance β_t: fixed-large is the true reverse variance and the gap is the prior mismatch alone."""
    sch = SCHEDULES[sch_name]()
    vlb = gaussian_expected_vlb(sch, m, 1.0, "fixed_large")["total"]
    gap = vlb - gaussian_nll(m, 1.0)
    assert gap == pytest.approx(0.5 * float(sch.alpha_bar[-1]) * m * m, rel=1e-7, abs=1e-12)
    assert vlb == pytest.approx(gaussian_expected_vlb(sch, m, 1.0, "optimal")["total"], rel=1e-10)
    # while fixed-small is not exact
    assert gaussian_expected_vlb(sch, m, 1.0, "fixed_small")["total"] > vlb + 1e-6


def test_expected_vlb_scales_with_dims_and_terms_layout():
    sch = SCHEDULES["short10"]()
    one = gaussian_expected_vlb(sch, 0.3, 0.5, "fixed_small")
    three = gaussian_expected_vlb(sch, 0.3, 0.5, "fixed_small", dims=3)
    assert three["total"] == pytest.approx(3 * one["total"], rel=1e-12)
    assert one["terms"].shape == (10,) and one["decoder"] == pytest.approx(float(one["terms"][0]))
    assert gaussian_nll(0.3, 0.5, dims=3) == pytest.approx(3 * 0.5 * (math.log(2 * math.pi * 0.25) + 1))


# --- Monte Carlo bound of the library vs the closed form ------------------------------------------------


@pytest.mark.parametrize("var_type", VAR_TYPES)
@pytest.mark.parametrize("sch_name, m, s", [("linear100_scaled", 0.3, 0.5), ("short10", -1.2, 2.0)])
def test_vlb_full_agrees_with_the_closed_form(gen, sch_name, m, s, var_type):
    sch = SCHEDULES[sch_name]()
    N, D = 20_000, 2
    x0 = m + s * torch.randn(N, D, generator=gen(0), dtype=F64)
    oracle, vt = oracle_for(sch, m, s, var_type)
    res = vlb_full(oracle, sch, x0, var_type=vt, decoder="continuous", generator=gen(1))
    exact = gaussian_expected_vlb(sch, m, s, var_type, dims=D)
    parts = {
        "total": res.total,
        "prior": res.prior,
        "decoder": res.terms[:, 0],
        "kl_terms": res.terms[:, 1:].sum(1),
    }
    for name, v in parts.items():
        assert within(v.mean(), exact[name], v.std() / math.sqrt(N) + 1e-12), (name, v.mean().item(), exact[name])
    # each step's term, too (a few, with their own standard errors)
    for t in (2, sch.T // 2, sch.T):
        v = res.terms[:, t - 1]
        assert within(v.mean(), exact["terms"][t - 1], v.std() / math.sqrt(N) + 1e-12), t
    # the gap estimated against the data's own log-density
    gap = res.total + oracle.log_density(x0)
    assert within(gap.mean(), exact["total"] - gaussian_nll(m, s, D), gap.std() / math.sqrt(N) + 1e-12)


# --- per sample, against the model's exact marginal -----------------------------------------------------


@pytest.mark.parametrize("var_type", VAR_TYPES)
@pytest.mark.parametrize("sch_name, m, s", [("linear100_scaled", 0.3, 0.5), ("short10", -1.2, 2.0),
                                            ("cosine200", 0.0, 1.0)])
def test_per_sample_bound_holds_against_the_model_marginal(sch_name, m, s, var_type):
    sch = SCHEDULES[sch_name]()
    mean, var = model_marginal(sch, m, s, var_type)
    x0 = (m + s * torch.linspace(-6, 6, 241, dtype=F64))[:, None]
    neg_log_p = 0.5 * (math.log(2 * math.pi * var) + (x0[:, 0] - mean) ** 2 / var)
    bound = gaussian_vlb_given_x0(sch, m, s, var_type, x0)["total"]
    assert (bound - neg_log_p >= -1e-9 * (1 + neg_log_p.abs())).all()
    # averaging the per-sample bound over x_0 ~ N(m, s²) gives the expected bound
    w = torch.exp(-0.5 * ((x0[:, 0] - m) / s) ** 2)
    dx = float(x0[1, 0] - x0[0, 0])
    avg = float((w * bound).sum() * dx / (s * math.sqrt(2 * math.pi)))
    assert avg == pytest.approx(gaussian_expected_vlb(sch, m, s, var_type)["total"], rel=1e-6)


@pytest.mark.parametrize("var_type", VAR_TYPES)
def test_per_sample_monte_carlo_bound_is_above_minus_log_p(gen, var_type):
    """vlb_full at fixed x_0, averaged over many draws of x_{1:T}, matches the per-sample closed form and
    is never below −log p_θ(x_0) by more than its standard error."""
    sch = SCHEDULES["linear100_scaled"]()
    m, s = 0.3, 0.5
    x0_values = torch.tensor([-1.5, 0.0, 0.3, 0.8, 2.0], dtype=F64)
    K = 5000  # draws of x_{1:T} per x_0
    x0 = x0_values.repeat_interleave(K)[:, None]
    oracle, vt = oracle_for(sch, m, s, var_type)
    res = vlb_full(oracle, sch, x0, var_type=vt, decoder="continuous", generator=gen(9))
    draws = res.total.reshape(len(x0_values), K)
    est, se = draws.mean(1), draws.std(1) / math.sqrt(K)
    exact = gaussian_vlb_given_x0(sch, m, s, var_type, x0_values[:, None])["total"]
    assert within(est, exact, se + 1e-12)
    mean, var = model_marginal(sch, m, s, var_type)
    neg_log_p = 0.5 * (math.log(2 * math.pi * var) + (x0_values - mean) ** 2 / var)
    assert (est >= neg_log_p - 5 * se).all()
