"""Forward process, posterior and reverse process against the math (Ho et al. 2020, Sec. 2–3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import within

from undiffuse.diffusion import (
    Precond,
    clip_denoised,
    dynamic_threshold,
    eps_from_x0,
    mu_from_eps,
    p_mean_variance,
    q_mean_variance,
    q_posterior_mean_variance,
    q_sample,
    q_step,
    v_from_x0_eps,
    ve_to_vp,
    vp_to_ve,
    x0_from_eps,
    x0_from_v,
)
from undiffuse.diffusion.precond import precond_coefficients
from undiffuse.diffusion.process import extract
from undiffuse.schedules import make_schedule

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64


def full_t(B: int, t: int) -> torch.Tensor:
    return torch.full((B,), t, dtype=torch.long)


# --- forward process -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_composing_single_steps_gives_the_closed_form_exactly(kind):
    """x_t = a_t·x_0 + noise of variance v_t with a_t = √α_t·a_{t−1}, v_t = α_t·v_{t−1} + β_t
    (one step of Eq. 2 applied to Eq. 4 at t − 1) must give a_t = √ᾱ_t and v_t = 1 − ᾱ_t."""
    sch = make_schedule(kind, 1000)
    a, v, a_all, v_all = 1.0, 0.0, [], []
    for beta in sch.betas.tolist():
        a, v = math.sqrt(1 - beta) * a, (1 - beta) * v + beta
        a_all.append(a)
        v_all.append(v)
    x0 = torch.tensor([[1.7], [-0.4]], dtype=F64)
    for t in (1, 2, 10, 500, 1000):
        mean, var = q_mean_variance(sch, x0, full_t(2, t))
        torch.testing.assert_close(mean, a_all[t - 1] * x0, rtol=1e-11, atol=1e-14)
        torch.testing.assert_close(var, torch.full_like(x0, v_all[t - 1]), rtol=1e-11, atol=1e-14)


def test_composing_q_step_matches_q_sample_in_distribution(gen):
    """Monte Carlo: T applications of q_step to a fixed x_0 have the moments of q(x_t|x_0)."""
    sch = make_schedule("linear", 40, beta_start=1e-3, beta_end=0.1)
    N, g = 20_000, gen(0)
    x0 = torch.tensor([1.5, -0.5], dtype=F64).repeat(N, 1)  # [N, 2]
    x = x0.clone()
    for t in range(1, sch.T + 1):
        x = q_step(sch, x, full_t(N, t), torch.randn(x.shape, generator=g, dtype=F64))
        if t in (1, 7, 40):
            mean, var = q_mean_variance(sch, x0[:1], full_t(1, t))
            assert within(x.mean(0), mean[0], (var[0] / N).sqrt())
            # SE of a sample variance of Gaussian data: var·√(2/(N − 1))
            assert within(x.var(0), var[0], var[0] * math.sqrt(2 / (N - 1)))
    # and q_sample draws the same distribution directly
    xs = q_sample(sch, x0, full_t(N, 40), torch.randn(x0.shape, generator=g, dtype=F64))
    assert within(xs.mean(0) - x.mean(0), 0.0, (2 * var[0] / N).sqrt())


def test_q_sample_is_the_reparameterized_closed_form(linear1000):
    x0 = torch.randn(5, 3, dtype=F64)
    noise = torch.randn(5, 3, dtype=F64)
    t = torch.tensor([1, 10, 100, 500, 1000])
    ab = linear1000.alpha_bar[t - 1][:, None]
    torch.testing.assert_close(q_sample(linear1000, x0, t, noise), ab.sqrt() * x0 + (1 - ab).sqrt() * noise)
    # σ-space view: x_t/√ᾱ_t = x_0 + σ_t·noise, and back
    x = vp_to_ve(q_sample(linear1000, x0, t, noise), ab)
    torch.testing.assert_close(x, x0 + linear1000.sigmas[t - 1][:, None] * noise)
    torch.testing.assert_close(ve_to_vp(x, ab), q_sample(linear1000, x0, t, noise))
    # extract keeps float64 tables and broadcasts to [B, 1, ...]
    e = extract(linear1000.betas, t, torch.zeros(5, 3, 4, dtype=torch.float32))
    assert e.shape == (5, 1, 1) and e.dtype == torch.float32


# --- posterior -----------------------------------------------------------------------------------------


def gaussian_condition(mean: np.ndarray, cov: np.ndarray, observed: float) -> tuple[float, float]:
    """Brute-force conditioning of a 2-D Gaussian (x_a, x_b) on x_b = observed."""
    m_a, m_b = mean
    k_ab = cov[0, 1] / cov[1, 1]
    return m_a + k_ab * (observed - m_b), cov[0, 0] - k_ab * cov[1, 0]


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_posterior_equals_conditioning_the_joint(kind):
    """(x_{t−1}, x_t) | x_0 is jointly Gaussian: x_{t−1} ~ N(√ᾱ_{t−1}x_0, 1 − ᾱ_{t−1}),
    x_t = √α_t·x_{t−1} + √β_t·ε. Conditioning on x_t must give q(x_{t−1}|x_t, x_0)."""
    sch = make_schedule(kind, 200)
    rng = np.random.default_rng(0)
    ab = sch.alpha_bar.numpy()
    betas = sch.betas.numpy()
    ts = [1, 2, 3, 50, 199, 200]
    x0 = torch.tensor(rng.normal(size=(len(ts), 1)))
    x_t = torch.tensor(rng.normal(size=(len(ts), 1)))
    mean, var, log_var = q_posterior_mean_variance(sch, x0, x_t, torch.tensor(ts))
    for i, t in enumerate(ts):
        ab_prev = ab[t - 2] if t > 1 else 1.0
        alpha = 1 - betas[t - 1]
        m_prev = math.sqrt(ab_prev) * x0[i, 0].item()
        v_prev = 1 - ab_prev
        joint_mean = np.array([m_prev, math.sqrt(alpha) * m_prev])
        joint_cov = np.array([[v_prev, math.sqrt(alpha) * v_prev],
                              [math.sqrt(alpha) * v_prev, alpha * v_prev + betas[t - 1]]])
        m_ref, v_ref = gaussian_condition(joint_mean, joint_cov, x_t[i, 0].item())
        assert mean[i, 0].item() == pytest.approx(m_ref, rel=1e-10, abs=1e-12)
        assert var[i, 0].item() == pytest.approx(v_ref, rel=1e-10, abs=1e-15)
        if t > 1:
            assert log_var[i, 0].item() == pytest.approx(math.log(v_ref), rel=1e-10)


def test_posterior_monte_carlo(gen):
    """Sample the joint chain x_0 → x_{t−1} → x_t, keep draws with x_t in a thin slice, and compare the
    conditional moments of x_{t−1} (within standard errors)."""
    sch = make_schedule("linear", 10, beta_start=0.05, beta_end=0.3)
    t, N, g = 6, 1_000_000, gen(1)
    x0 = torch.full((N, 1), 0.8, dtype=F64)
    x_prev = q_sample(sch, x0, full_t(N, t - 1), torch.randn(N, 1, generator=g, dtype=F64))
    x_t = q_step(sch, x_prev, full_t(N, t), torch.randn(N, 1, generator=g, dtype=F64))
    mid, half = 0.3, 0.02
    sel = (x_t[:, 0] - mid).abs() < half
    xs, xt = x_prev[sel, 0], x_t[sel, 0]
    mean, var, _ = q_posterior_mean_variance(sch, x0[: len(xt), :], xt[:, None], full_t(len(xt), t))
    resid = xs - mean[:, 0]  # removes the slope inside the slice
    n = len(resid)
    assert n > 5000
    assert within(resid.mean(), 0.0, math.sqrt(var[0, 0].item() / n))
    assert within(resid.var(), var[0, 0], var[0, 0] * math.sqrt(2 / (n - 1)))


# --- reverse process ------------------------------------------------------------------------------------


def test_mu_from_eps_is_the_posterior_mean_at_x0_from_eps(linear1000):
    """μ_θ = (x_t − β_t/√(1−ᾱ_t)·ε)/√α_t equals μ̃_t(x_t, x̂_0(ε)) for any ε; the article's misprint with
    √(1 − α_t) does not."""
    B = 6
    t = torch.tensor([1, 2, 10, 300, 999, 1000])
    x_t, eps = torch.randn(B, 4, dtype=F64), torch.randn(B, 4, dtype=F64)
    ab = linear1000.alpha_bar[t - 1][:, None]
    mu = mu_from_eps(linear1000, x_t, t, eps)
    ref, _, _ = q_posterior_mean_variance(linear1000, x0_from_eps(x_t, eps, ab), x_t, t)
    torch.testing.assert_close(mu, ref, rtol=1e-10, atol=1e-10)
    beta = linear1000.betas[t - 1][:, None]
    misprint = (x_t - beta / (1 - (1 - beta)).sqrt() * eps) / (1 - beta).sqrt()
    assert not torch.allclose(misprint[2:], ref[2:], rtol=1e-3)


def test_parameterization_conversions_invert_each_other(linear1000):
    ab = linear1000.alpha_bar[[0, 499, 999]][:, None]
    x0, eps = torch.randn(3, 5, dtype=F64), torch.randn(3, 5, dtype=F64)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    torch.testing.assert_close(x0_from_eps(x_t, eps, ab), x0)
    torch.testing.assert_close(eps_from_x0(x_t, x0, ab), eps)
    torch.testing.assert_close(x0_from_v(x_t, v_from_x0_eps(x0, eps, ab), ab), x0)


class OracleNet(torch.nn.Module):
    """A 'network' that outputs the exact target F* of its parameterization for known (x_0, noise), and
    records what it was given."""

    def __init__(self, precond_target, x0, noise, sigma):
        super().__init__()
        self.out = precond_target(x0, noise, sigma)
        self.seen = {}

    def forward(self, x_in, c_noise):
        self.seen = {"x_in": x_in, "c_noise": c_noise}
        return self.out


@pytest.mark.parametrize("respaced", [False, True])
def test_eps_x0_v_give_the_same_mu_with_exact_targets(linear1000, respaced):
    """The network belongs to the training chain (linear1000); the reverse step may be on a respaced one."""
    sch = linear1000.respace([1, 3, 200, 640, 1000]) if respaced else linear1000
    t = torch.tensor([1, 2, 3, 4, 5]) if respaced else torch.tensor([1, 2, 100, 640, 1000])
    x0, noise = torch.randn(5, 3, dtype=F64), torch.randn(5, 3, dtype=F64)
    x_t = q_sample(sch, x0, t, noise)
    sigma = sch.sigmas[t - 1]
    ref, _, _ = q_posterior_mean_variance(sch, x0, x_t, t)
    means = {}
    for p in ("eps", "x0", "v", "edm"):
        pre = Precond(torch.nn.Identity(), p, schedule=linear1000)
        pre.net = OracleNet(pre.target, x0, noise, sigma)
        step = p_mean_variance(pre, sch, x_t, t)
        torch.testing.assert_close(step.denoised, x0, rtol=1e-10, atol=1e-10)
        means[p] = step.mean
        torch.testing.assert_close(step.mean, ref, rtol=1e-10, atol=1e-10)
        if p != "edm":  # VP models see x_t itself and c_noise = 1000·t/T of the training chain
            torch.testing.assert_close(pre.net.seen["x_in"], x_t, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(pre.net.seen["c_noise"], sch.timesteps[t - 1].to(F64), rtol=0, atol=1e-9)
    # the ε-network's μ_θ written directly (Ho et al. 2020, Eq. 11)
    torch.testing.assert_close(mu_from_eps(sch, x_t, t, noise), means["eps"], rtol=1e-10, atol=1e-10)


def test_precond_coefficients_reconstruct_x0_from_targets():
    sigma = torch.tensor([0.01, 0.5, 3.0, 80.0], dtype=F64)
    x0, n = torch.randn(4, 2, dtype=F64), torch.randn(4, 2, dtype=F64)
    x = x0 + sigma[:, None] * n
    for p in ("eps", "x0", "v", "edm"):
        pre = Precond(torch.nn.Identity(), p, sigma_data=0.5)
        c_skip, c_out, c_in = precond_coefficients(p, sigma, 0.5)
        F = pre.target(x0, n, sigma)
        torch.testing.assert_close(c_skip[:, None] * x + c_out[:, None] * F, x0)
    # v is √ᾱ·ε − √(1−ᾱ)·x_0 with ᾱ = 1/(1 + σ²)
    ab = (1 / (1 + sigma**2))[:, None]
    torch.testing.assert_close(Precond(torch.nn.Identity(), "v").target(x0, n, sigma), v_from_x0_eps(x0, n, ab))


def test_reverse_variances(linear1000):
    from undiffuse.diffusion import model_log_variance

    t = torch.tensor([1, 2, 500, 1000])
    like = torch.zeros(4, 3, dtype=F64)
    small = model_log_variance(linear1000, t, like, "fixed_small", None)[:, 0]
    large = model_log_variance(linear1000, t, like, "fixed_large", None)[:, 0]
    pv = linear1000.posterior_variance
    torch.testing.assert_close(small, torch.stack([pv[1], pv[1], pv[499], pv[999]]).log())
    torch.testing.assert_close(large, linear1000.betas[t - 1].log())
    nu = torch.rand(4, 3, dtype=F64)
    learned = model_log_variance(linear1000, t, like, "learned", nu)
    torch.testing.assert_close(learned, nu * large[:, None] + (1 - nu) * small[:, None])
    with pytest.raises(ValueError, match="learned_variance"):
        model_log_variance(linear1000, t, like, "learned", None)
    with pytest.raises(ValueError, match="fixed_small"):
        model_log_variance(linear1000, t, like, "large", None)


def test_clipping_and_dynamic_thresholding():
    x0 = torch.tensor([[0.5, -2.0, 3.0, 0.1], [0.2, -0.3, 0.4, 0.9]], dtype=F64)
    torch.testing.assert_close(clip_denoised(x0), x0.clamp(-1, 1))
    out = dynamic_threshold(x0, percentile=1.0)
    # row 0: s = max|x| = 3 → x/3; row 1: s = max(1, 0.9) = 1 → unchanged
    torch.testing.assert_close(out[0], x0[0] / 3)
    torch.testing.assert_close(out[1], x0[1])
