"""Probability-flow ODE likelihood against closed forms.

For the Gaussian oracle N(m, s²) the PF-ODE is x(σ) − m = (x(σ_min) − m)·k(σ), k(σ) = √((s² + σ²)/(s² +
σ_min²)), so the density it defines at σ_min from the prior N(0, σ_max²·I) is exactly

    log p(x) = log N(m + (x − m)·k; 0, σ_max²) + D·log k,   k = k(σ_max),

(the divergence of x − D(x; σ) is D·σ²/(s² + σ²), whose integral over log σ is D·log k), and with the
true marginal N(m, s² + σ_max²) as prior it is the data marginal N(m, s² + σ_min²) itself.
"""

from __future__ import annotations

import math

import pytest
import torch

from undiffuse.diffusion.oracles import GaussianMixtureOracle, GaussianOracle
from undiffuse.losses.vlb import discretized_gaussian_log_likelihood
from undiffuse.samplers import dequantized_pf_ode_bpd, pf_ode_nll
from undiffuse.schedules import make_schedule

F64 = torch.float64
M, S = 0.3, 0.5
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


pytestmark = pytest.mark.usefixtures("one_thread_module")  # tiny tensors: one thread is faster


def gaussian_model_logp(
    x: torch.Tensor, sigma_min: float, sigma_max: float, prior_var: float
) -> torch.Tensor:
    """The PF-ODE model's exact log-density at σ_min for the Gaussian oracle (module docstring)."""
    d = x[0].numel()
    k = math.sqrt((S**2 + sigma_max**2) / (S**2 + sigma_min**2))
    x_T = M + (x - M) * k
    prior = -0.5 * (x_T**2).flatten(1).sum(1) / prior_var - 0.5 * d * math.log(2 * math.pi * prior_var)
    return prior + d * math.log(k)


def normal_logp(x: torch.Tensor, mean, var: float) -> torch.Tensor:
    return (-0.5 * (x - mean) ** 2 / var - 0.5 * math.log(2 * math.pi * var)).flatten(1).sum(1)


@pytest.fixture
def data():
    return M + S * torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)


def test_exact_divergence_gives_the_model_density(data):
    oracle = GaussianOracle(M, S)
    parts = pf_ode_nll(oracle, data, SIGMA_MIN, SIGMA_MAX, n_steps=60, return_parts=True)
    assert parts["delta_logp_se"] is None  # 3 dimensions: exact by default
    exact = -gaussian_model_logp(data, SIGMA_MIN, SIGMA_MAX, SIGMA_MAX**2)
    torch.testing.assert_close(parts["nll"], exact, rtol=0, atol=1e-3)
    k = math.sqrt((S**2 + SIGMA_MAX**2) / (S**2 + SIGMA_MIN**2))
    torch.testing.assert_close(
        parts["delta_logp"], torch.full((5,), 3 * math.log(k), dtype=F64), rtol=0, atol=1e-3
    )
    torch.testing.assert_close(parts["x_T"], M + (data - M) * k, rtol=1e-4, atol=1e-3)

    # with the true marginal at σ_max as the prior, the ODE transports it to the data marginal at σ_min
    true_prior = lambda x_T: normal_logp(x_T, M, S**2 + SIGMA_MAX**2)
    nll = pf_ode_nll(oracle, data, SIGMA_MIN, SIGMA_MAX, n_steps=60, prior_logp=true_prior)
    torch.testing.assert_close(nll, -normal_logp(data, M, S**2 + SIGMA_MIN**2), rtol=0, atol=1e-3)


def test_hutchinson_is_unbiased_within_its_standard_error(data):
    oracle = GaussianOracle(M, S)
    exact = -gaussian_model_logp(data, SIGMA_MIN, SIGMA_MAX, SIGMA_MAX**2)
    gen = torch.Generator().manual_seed(1)
    parts = pf_ode_nll(
        oracle,
        data,
        SIGMA_MIN,
        SIGMA_MAX,
        exact=False,
        probe="gaussian",
        n_probes=48,
        n_steps=40,
        generator=gen,
        return_parts=True,
    )
    se = parts["delta_logp_se"]
    assert (se > 0).all()
    assert ((parts["nll"] - exact).abs() <= 4 * se + 5e-3).all(), (parts["nll"] - exact) / se
    # the oracle's Jacobian is a multiple of I, so a Rademacher probe (zᵢ² = 1) is exact
    rad = pf_ode_nll(
        oracle, data, SIGMA_MIN, SIGMA_MAX, exact=False, probe="rademacher", n_steps=40, generator=gen
    )
    ex40 = pf_ode_nll(oracle, data, SIGMA_MIN, SIGMA_MAX, exact=True, n_steps=40)
    torch.testing.assert_close(rad, ex40, rtol=0, atol=1e-10)


def test_gaussian_mixture_marginal_and_hutchinson():
    means = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]], dtype=F64)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    oracle = GaussianMixtureOracle(means, 0.3, weights=w)
    sigma_max = 20.0

    def mixture_logp(x: torch.Tensor, sigma: float) -> torch.Tensor:
        var = 0.3**2 + sigma**2
        comp = torch.stack([normal_logp(x, mu, var) for mu in means], 1)  # [B, K]
        return torch.logsumexp(comp + w.log(), 1)

    x = oracle.sample(4, generator=torch.Generator().manual_seed(2))
    prior = lambda z: mixture_logp(z, sigma_max)
    nll = pf_ode_nll(oracle, x, SIGMA_MIN, sigma_max, n_steps=40, prior_logp=prior)
    torch.testing.assert_close(nll, -mixture_logp(x, SIGMA_MIN), rtol=0, atol=1e-3)  # measured 1.3e-4
    # Hutchinson against the exact divergence on the same ODE grid (a non-diagonal Jacobian here)
    exact20 = pf_ode_nll(oracle, x, SIGMA_MIN, sigma_max, n_steps=20, prior_logp=prior)
    parts = pf_ode_nll(
        oracle,
        x,
        SIGMA_MIN,
        sigma_max,
        exact=False,
        n_probes=64,
        n_steps=20,
        generator=torch.Generator().manual_seed(3),
        return_parts=True,
        prior_logp=prior,
    )
    assert (parts["delta_logp_se"] > 0).all()
    assert ((parts["nll"] - exact20).abs() <= 4 * parts["delta_logp_se"] + 1e-9).all()


def test_vp_variant_starts_at_sigma_1_with_the_vp_prior(data):
    schedule = make_schedule("linear", 1000)
    s1, sT = float(schedule.sigmas[0]), float(schedule.sigmas[-1])
    nll = pf_ode_nll(GaussianOracle(M, S), data, schedule=schedule, n_steps=60)
    torch.testing.assert_close(nll, -gaussian_model_logp(data, s1, sT, 1 + sT**2), rtol=0, atol=1e-3)
    ab = torch.cat([torch.linspace(0.99, 0.01, 9, dtype=F64), torch.zeros(1, dtype=F64)])
    zsnr = make_schedule("alpha_bar", alpha_bar=ab, allow_zero_terminal_snr=True)
    with pytest.raises(ValueError, match="finite"):
        pf_ode_nll(GaussianOracle(M, S), data, schedule=zsnr)


def test_dequantized_bpd_formula_and_units():
    """bpd = (E_u[−log p(x + Δu)] − D·log Δ)/(D ln 2) with Δ = 2/255, in the VLB decoder's discrete units."""
    oracle = GaussianOracle(M, S)
    k8 = torch.tensor([[40, 128, 200], [90, 170, 60]], dtype=F64)  # interior 8-bit values
    x = 2 * k8 / 255 - 1
    delta, D = 2 / 255, 3
    bpd = dequantized_pf_ode_bpd(
        oracle, x, SIGMA_MIN, SIGMA_MAX, n_dequant=2, n_steps=30, generator=torch.Generator().manual_seed(4)
    )
    gen = torch.Generator().manual_seed(4)
    nlls = [
        pf_ode_nll(
            oracle,
            x + delta * (torch.rand(x.shape, generator=gen, dtype=F64) - 0.5),
            SIGMA_MIN,
            SIGMA_MAX,
            n_steps=30,
        )
        for _ in range(2)
    ]
    expect = ((nlls[0] + nlls[1]) / 2 + D * math.log(1 / delta)) / (D * math.log(2))
    torch.testing.assert_close(bpd, expect, rtol=1e-12, atol=1e-12)

    # E_u of the bound is −log p(x) + D·Δ²/(24 v) for the model's Gaussian density N(μ*, v) at σ_min;
    # it upper-bounds −log P(bin) computed by the VLB's discretized decoder, and is within Jensen's gap
    kk = math.sqrt((S**2 + SIGMA_MAX**2) / (S**2 + SIGMA_MIN**2))
    mu, var = M - M / kk, SIGMA_MAX**2 / kk**2
    nll_x = pf_ode_nll(oracle, x, SIGMA_MIN, SIGMA_MAX, n_steps=60)
    bound = (nll_x + D * delta**2 / (24 * var) - D * math.log(delta)) / (D * math.log(2))
    log_scale = torch.full_like(x, 0.5 * math.log(var))
    discrete = -discretized_gaussian_log_likelihood(x, torch.full_like(x, mu), log_scale).sum(1) / (
        D * math.log(2)
    )
    assert (bound >= discrete - 1e-3).all() and ((bound - discrete).abs() < 1e-3).all()
    assert (discrete > 0).all()  # discrete bits/dim are non-negative
