"""DDPM and DDIM against the Gaussian oracle's exact linear-Gaussian chain, and their equivalences.

With data x_0 ~ N(m, s²) the oracle denoiser is affine, so every sampler maps its start state x to
a·x + b + N(0, c) (undiffuse.diffusion.analytic, written from the equations). Each run starts column 0
from the VP prior x_T ~ N(0, 1) and column 1 from a fixed x_T, so the moments check a, b and c.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import within

from undiffuse.diffusion.analytic import ddim_chain, ddpm_chain, prior_moments
from undiffuse.diffusion.oracles import GaussianMixtureOracle, GaussianOracle
from undiffuse.samplers import sample_ddim, sample_ddpm, schedule_from_sigmas
from undiffuse.schedules import discrete_sigmas, discrete_steps, make_schedule

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
M, S = 0.3, 0.5
X_T_FIXED = 1.5  # the fixed VP start of column 1


def start_state(sigma_max: float, N: int, g: torch.Generator) -> torch.Tensor:
    """[N, 2] σ-space states at σ_max: column 0 from x_T ~ N(0, 1), column 1 at x_T = X_T_FIXED."""
    scale = math.sqrt(1 + sigma_max**2)
    x = torch.randn(N, 2, generator=g, dtype=F64) * scale
    x[:, 1] = X_T_FIXED * scale
    return x


def check_moments(out: torch.Tensor, chain, sigma_max: float) -> None:
    N = out.shape[0]
    scale = math.sqrt(1 + sigma_max**2)
    cases = [chain.moments(*prior_moments(sigma_max)), chain.moments(X_T_FIXED * scale, 0.0)]
    for col, (mean, var) in enumerate(cases):
        x = out[:, col]
        assert within(x.mean(), mean, math.sqrt(var / N) + 1e-11), (col, x.mean().item(), mean)
        if var == 0:
            torch.testing.assert_close(x, torch.full_like(x, mean), rtol=1e-10, atol=1e-10)
        else:  # SE of the variance of Gaussian samples: var·√(2/(N − 1))
            assert within(x.var(), var, var * math.sqrt(2 / (N - 1))), (col, x.var().item(), var)


N_SAMPLES = 40_000
GRIDS = {  # name → (training schedule, number of sampling steps or None for all)
    "T1000_n10": (make_schedule("linear", 1000), 10),
    "T1000_n25": (make_schedule("linear", 1000), 25),
    "T20_full": (make_schedule("linear", 20, beta_start=1e-3, beta_end=0.4), None),
    "cos200_n15": (make_schedule("cosine", 200), 15),
    "T1000_full": (make_schedule("linear", 1000), None),
}


def grid_and_chain(name):
    sch, n = GRIDS[name]
    chain_sch = sch if n is None else sch.respace(discrete_steps(sch.T, n))
    return discrete_sigmas(sch, n), chain_sch


@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large", "optimal"])
@pytest.mark.parametrize("grid_name", ["T1000_n10", "T20_full", "cos200_n15",
                                       pytest.param("T1000_full", marks=pytest.mark.slow)])
def test_ddpm_matches_the_exact_chain_moments(gen, grid_name, var_type):
    sigmas, chain_sch = grid_and_chain(grid_name)
    optimal = var_type == "optimal"
    oracle = GaussianOracle(M, S, schedule=chain_sch if optimal else None, optimal_variance=optimal)
    N = N_SAMPLES
    x = start_state(float(sigmas[0]), N, gen(1))
    out = sample_ddpm(oracle, x, sigmas, var_type="learned" if optimal else var_type, generator=gen(2))
    check_moments(out, ddpm_chain(sigmas, M, S, var_type), float(sigmas[0]))


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("grid_name", ["T1000_n10", "T1000_n25", "cos200_n15"])
def test_ddim_matches_the_exact_chain_moments(gen, grid_name, eta):
    sigmas, _ = grid_and_chain(grid_name)
    N = N_SAMPLES
    x = start_state(float(sigmas[0]), N, gen(3))
    out = sample_ddim(GaussianOracle(M, S), x, sigmas, eta=eta, generator=gen(4))
    check_moments(out, ddim_chain(sigmas, M, S, eta), float(sigmas[0]))


def test_the_checks_can_tell_the_variances_apart():
    """The moment tests have power: the exact output variances differ by many standard errors."""
    sigmas, _ = grid_and_chain("T1000_n10")
    pm = prior_moments(float(sigmas[0]))
    v = {vt: ddpm_chain(sigmas, M, S, vt).moments(*pm)[1] for vt in ("fixed_small", "fixed_large", "optimal")}
    v["ddim0"] = ddim_chain(sigmas, M, S, 0.0).moments(*pm)[1]
    vals = sorted(v.values())
    assert all(b - a > 10 * b * math.sqrt(2 / N_SAMPLES) for a, b in zip(vals, vals[1:]))


@pytest.mark.parametrize("grid_name", ["T1000_n10", "T20_full", "cos200_n15"])
def test_ddpm_with_optimal_variance_is_exact_up_to_the_prior(grid_name):
    sigmas, chain_sch = grid_and_chain(grid_name)
    sigma_max = float(sigmas[0])
    ab_T = 1 / (1 + sigma_max**2)
    # started from the true marginal q(x_T) (σ-space: N(m, s² + σ_max²)) and keeping the decoder's
    # noise, the chain reproduces the data exactly, for any number of steps
    full = ddpm_chain(sigmas, M, S, "optimal", final_noise=True)
    mean, var = full.moments(M, S**2 + sigma_max**2)
    assert mean == pytest.approx(M, abs=1e-9) and var == pytest.approx(S**2, abs=1e-9)
    # the sampler starts from N(0, 1) in place of q(x_T) = N(√ᾱ_T·m, v) and adds no noise at the last
    # step, so it draws E[x_0|x_1] with x_1 from the exact chain: with A = √ᾱ_T·s²/v the output has
    # mean m − A·√ᾱ_T·m and variance s² + A²(1 − v) − Var[x_0|x_1]
    mean, var = ddpm_chain(sigmas, M, S, "optimal").moments(*prior_moments(sigma_max))
    v = ab_T * S**2 + 1 - ab_T
    A = math.sqrt(ab_T) * S**2 / v
    sigma_1 = float(sigmas[-2])
    post_var_1 = S**2 * sigma_1**2 / (S**2 + sigma_1**2)
    assert mean == pytest.approx(M - A * math.sqrt(ab_T) * M, rel=1e-9)
    assert var == pytest.approx(S**2 + A * A * (1 - v) - post_var_1, rel=1e-9)
    assert abs(mean - M) < 1e-2 and abs(var - S**2) < 0.02 * S**2  # "N(m, s²) up to the prior mismatch"
    assert chain_sch.T == len(sigmas) - 1


def test_ddim_variance_approaches_the_data_variance_as_steps_grow():
    sch = make_schedule("linear", 1000)
    sigma_max = float(sch.sigmas[-1])
    errs = []
    for n in (5, 10, 20, 50, 100, 250, 1000):
        sigmas = discrete_sigmas(sch, n)
        # from the exact marginal q(x_T) the only error left is the discretization of the ODE
        _, var = ddim_chain(sigmas, M, S, 0.0).moments(M, S**2 + sigma_max**2)
        errs.append(abs(var - S**2))
    assert all(b < a for a, b in zip(errs, errs[1:]))
    assert errs[-1] < 0.01 * S**2 and errs[0] > 0.3 * S**2
    # Euler is first order: the error shrinks roughly in proportion to the step count at large n
    assert 2.0 < errs[-3] / errs[-1] < 20


def test_ddim_eta0_is_an_euler_step_of_the_probability_flow_ode(gen):
    """x' = x + (σ' − σ)·(x − D(x; σ))/σ, written by hand, with a nonlinear (mixture) denoiser."""
    oracle = GaussianMixtureOracle(torch.tensor([[-1.0, 0.5], [1.5, -0.5], [0.0, 2.0]]), s=0.3)
    sigmas = discrete_sigmas(make_schedule("cosine", 500), 30)
    x = torch.randn(16, 2, generator=gen(7), dtype=F64) * sigmas[0]
    ref = x.clone()
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        d = (ref - oracle(ref, sigma.expand(16))) / sigma
        ref = ref + (sigma_next - sigma) * d
    seen = []
    out = sample_ddim(oracle, x, sigmas, eta=0.0, callback=seen.append)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert [c["i"] for c in seen] == list(range(30))
    assert all(set(c) >= {"x", "sigma", "denoised"} for c in seen)
    torch.testing.assert_close(seen[-1]["x"], out, rtol=0, atol=0)


@pytest.mark.parametrize("oracle_name", ["gaussian", "mixture"])
def test_ddim_eta1_on_the_full_grid_is_ddpm_fixed_small(gen, oracle_name):
    # the mixture's denoiser costs more per step: a shorter chain
    sch = make_schedule("linear", 1000) if oracle_name == "gaussian" else make_schedule("cosine", 100)
    oracle = (GaussianOracle(M, S) if oracle_name == "gaussian"
              else GaussianMixtureOracle(torch.tensor([[-1.0], [0.8]]), s=0.2))
    sigmas = discrete_sigmas(sch)
    x = torch.randn(8, 1, generator=gen(0), dtype=F64) * math.sqrt(1 + float(sigmas[0]) ** 2)
    a = sample_ddpm(oracle, x, sigmas, var_type="fixed_small", generator=gen(11))
    b = sample_ddim(oracle, x, sigmas, eta=1.0, generator=gen(11))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # and on a respaced grid too (DDIM's σ_t(η = 1) is the respaced chain's β̃)
    sigmas = discrete_sigmas(sch, 20)
    a = sample_ddpm(oracle, x, sigmas, var_type="fixed_small", generator=gen(12))
    b = sample_ddim(oracle, x, sigmas, eta=1.0, generator=gen(12))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_same_seed_same_samples_and_per_sample_generators(gen, sampler):
    sigmas = discrete_sigmas(make_schedule("linear", 1000), 15)
    oracle = GaussianOracle(M, S)
    run = (lambda x, g: sample_ddpm(oracle, x, sigmas, var_type="fixed_large", generator=g)) if sampler == "ddpm" \
        else (lambda x, g: sample_ddim(oracle, x, sigmas, eta=0.7, generator=g))
    x = torch.randn(4, 3, generator=gen(0), dtype=F64) * float(sigmas[0])
    assert torch.equal(run(x, gen(5)), run(x, gen(5)))
    assert not torch.equal(run(x, gen(5)), run(x, gen(6)))
    # with one generator per sample, sample i depends only on its own generator, not on the batch
    batch = run(x, [gen(100 + i) for i in range(4)])
    sub = run(x[2:], [gen(102), gen(103)])
    torch.testing.assert_close(batch[2:], sub, rtol=0, atol=0)
    single = run(x[1:2], [gen(101)])
    torch.testing.assert_close(batch[1:2], single, rtol=0, atol=0)
    with pytest.raises(ValueError, match="generators"):
        run(x, [gen(1), gen(2)])


def test_ddpm_callback_sees_every_step_in_sigma_space(gen):
    sch = make_schedule("linear", 1000)
    sigmas = discrete_sigmas(sch, 12)
    seen = []
    x = torch.randn(3, 2, generator=gen(0), dtype=F64) * float(sigmas[0])
    out = sample_ddpm(GaussianOracle(M, S), x, sigmas, generator=gen(1), callback=seen.append)
    assert [c["i"] for c in seen] == list(range(12))
    assert [float(c["sigma"]) for c in seen] == sigmas[:-1].tolist()
    torch.testing.assert_close(seen[-1]["x"], out, rtol=0, atol=0)
    # the denoised estimate at each step is the oracle at that step's σ-space state
    for prev, cur in zip(seen, seen[1:]):
        ref = GaussianOracle(M, S)(prev["x"], cur["sigma"].expand(3))
        torch.testing.assert_close(cur["denoised"], ref, rtol=1e-12, atol=1e-12)


def test_ddim_refuses_eta_outside_zero_one():
    sigmas = discrete_sigmas(make_schedule("linear", 100, scale_to_T=True), 5)
    with pytest.raises(ValueError, match="eta"):
        sample_ddim(GaussianOracle(), torch.zeros(2, 1, dtype=F64), sigmas, eta=1.5)


def test_schedule_from_sigmas_keeps_alpha_bar(linear1000):
    steps = discrete_steps(1000, 20)
    chain = schedule_from_sigmas(discrete_sigmas(linear1000, 20))
    torch.testing.assert_close(chain.alpha_bar, linear1000.alpha_bar[steps - 1], rtol=1e-12, atol=0)


def test_optimal_variance_oracle_on_a_grid_rebuilt_from_sigmas(gen):
    """The oracle looks its σ up in the chain's table; a table rebuilt from the grid (ulp differences)
    must give the same variance as the respaced schedule it came from."""
    sch = make_schedule("linear", 1000)
    sigmas = discrete_sigmas(sch, 50)
    rebuilt = schedule_from_sigmas(sigmas)
    x = torch.randn(5, 1, generator=gen(0), dtype=F64) * float(sigmas[0])
    a = sample_ddpm(GaussianOracle(M, S, rebuilt, True), x, sigmas, var_type="learned", generator=gen(1))
    b = sample_ddpm(GaussianOracle(M, S, sch.respace(discrete_steps(1000, 50)), True), x, sigmas,
                    var_type="learned", generator=gen(1))
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
