"""Losses: Gaussian KL, decoders, the bound's terms, denoising weightings, hybrid loss, t sampling."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import within
from scipy.stats import norm

from undiffuse.diffusion import Precond, eps_from_x0, q_posterior_mean_variance, q_sample, v_from_x0_eps
from undiffuse.losses import (
    ImportanceSampler,
    bits_per_dim,
    denoising_loss,
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    hybrid_loss,
    normal_kl,
    prior_kl,
    sample_t,
    vlb_term,
)
from undiffuse.schedules import make_schedule

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64


# --- Gaussian KL and decoders ---------------------------------------------------------------------------


@pytest.mark.parametrize("m1, v1, m2, v2", [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -0.2, 2.0), (1.0, 3.0, 0.5, 0.7)])
def test_normal_kl_equals_monte_carlo(gen, m1, v1, m2, v2):
    N = 400_000
    x = m1 + math.sqrt(v1) * torch.randn(N, generator=gen(3), dtype=F64)
    logp = torch.tensor(norm.logpdf(x.numpy(), m1, math.sqrt(v1)))
    logq = torch.tensor(norm.logpdf(x.numpy(), m2, math.sqrt(v2)))
    ratio = logp - logq
    kl = normal_kl(*(torch.tensor(v, dtype=F64) for v in (m1, math.log(v1), m2, math.log(v2))))
    assert within(ratio.mean(), kl, ratio.std() / math.sqrt(N) + 1e-12)
    # and the textbook closed form
    ref = 0.5 * (math.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)
    assert kl.item() == pytest.approx(ref, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("mean, log_scale", [(0.0, -1.0), (0.37, -4.0), (-0.99, -6.0), (1.3, 0.5), (0.0, -9.0)])
def test_discretized_decoder_bins_sum_to_one(mean, log_scale):
    levels = torch.linspace(-1, 1, 256, dtype=F64)[:, None]
    ll = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean), torch.full_like(levels, log_scale))
    p = ll.exp()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-8)
    # an interior bin is Φ((x + 1/255 − μ)/σ) − Φ((x − 1/255 − μ)/σ); the edge bins reach ±∞
    sd = math.exp(log_scale)
    i = 128
    x = levels[i, 0].item()
    ref = norm.cdf((x + 1 / 255 - mean) / sd) - norm.cdf((x - 1 / 255 - mean) / sd)
    assert p[i, 0].item() == pytest.approx(ref, rel=1e-6, abs=2e-12)  # log-probabilities are floored at log 1e-12
    assert p[0, 0].item() == pytest.approx(norm.cdf((-1 + 1 / 255 - mean) / sd), rel=1e-6, abs=2e-12)  # log-probabilities are floored at log 1e-12
    assert p[-1, 0].item() == pytest.approx(norm.sf((1 - 1 / 255 - mean) / sd), rel=1e-6, abs=2e-12)  # log-probabilities are floored at log 1e-12


def test_gaussian_log_likelihood_and_bits_per_dim():
    x, m, lv = torch.tensor([0.3, -1.0]), torch.tensor([0.1, 0.5]), torch.tensor([-1.0, 0.7])
    ref = norm.logpdf(x.numpy(), m.numpy(), torch.exp(0.5 * lv).numpy())
    torch.testing.assert_close(gaussian_log_likelihood(x, m, lv), torch.tensor(ref, dtype=torch.float32))
    assert bits_per_dim(torch.tensor(3 * math.log(2) * 12), 3).item() == pytest.approx(12.0)


# --- the bound's terms -------------------------------------------------------------------------------------


def test_prior_kl_and_vlb_term_are_their_definitions():
    sch = make_schedule("linear", 50, beta_start=1e-3, beta_end=0.2)
    x0 = torch.rand(4, 3, dtype=F64) * 2 - 1
    ab = sch.alpha_bar[-1]
    ref = 0.5 * (-torch.log1p(-ab) + (1 - ab) + ab * x0**2 - 1).sum(1)
    torch.testing.assert_close(prior_kl(sch, x0), ref)
    noise = torch.randn(4, 3, dtype=F64)
    bad = lambda x, sigma: 0.8 * x  # any denoiser
    for t_int in (1, 2, 30):
        t = torch.full((4,), t_int)
        x_t = q_sample(sch, x0, t, noise)
        x0_hat = 0.8 * x_t / sch.alpha_bar[t_int - 1].sqrt()
        mu, _, _ = q_posterior_mean_variance(sch, x0_hat, x_t, t)
        true_mu, true_var, _ = q_posterior_mean_variance(sch, x0, x_t, t)
        for vt, var in (("fixed_small", sch.posterior_variance[max(t_int, 2) - 1]), ("fixed_large", sch.betas[t_int - 1])):
            got = vlb_term(bad, sch, x0, x_t, t, vt, "continuous")
            if t_int == 1:  # −log N(x_0; μ_θ, Σ)
                ref = -torch.tensor(norm.logpdf(x0.numpy(), mu.numpy(), math.sqrt(var))).sum(1)
            else:
                ref = (0.5 * (torch.log(var / true_var) + true_var / var + (true_mu - mu) ** 2 / var - 1)).sum(1)
            torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)


# --- denoising losses ------------------------------------------------------------------------------------


class RandomNet(torch.nn.Module):
    """A fixed random nonlinear function of (x_in, c_noise): a network with nonzero error."""

    def __init__(self, channels: int, learned_variance: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.mean = torch.nn.Linear(channels + 1, channels).double()
        self.var = torch.nn.Linear(channels + 1, channels).double() if learned_variance else None

    def forward(self, x_in, c_noise):
        h = torch.cat([x_in, c_noise[:, None] / 1000], 1)
        out = torch.tanh(self.mean(h))
        if self.var is not None:
            out = torch.cat([out, torch.tanh(self.var(h))], 1)
        return out


HAND_WEIGHTS = {  # weight on ‖x̂_0 − x_0‖², written from each loss's definition (SNR = 1/σ²)
    "x0": lambda s2, g: torch.ones_like(s2),
    "eps": lambda s2, g: 1 / s2,
    "v": lambda s2, g: 1 / s2 + 1,
    "min_snr": lambda s2, g: torch.minimum(1 / s2, torch.full_like(s2, g)),
    "edm": lambda s2, g: (s2 + 0.25) / (s2 * 0.25),  # σ_data = 0.5
}


@pytest.mark.parametrize("param", ["eps", "x0", "v", "edm"])
def test_denoising_weightings_equal_their_definitions(linear1000, param):
    sch = linear1000
    B, C = 8, 3
    x0, noise = torch.randn(B, C, dtype=F64), torch.randn(B, C, dtype=F64)
    t = torch.tensor([1, 5, 50, 200, 400, 700, 900, 1000])
    sigma = sch.sigmas[t - 1]
    pre = Precond(RandomNet(C), param, schedule=sch, sigma_data=0.5)
    x = x0 + sigma[:, None] * noise
    with torch.no_grad():
        D = pre(x, sigma)
    err = ((D - x0) ** 2).mean(1)
    s2, gamma = sigma**2, 5.0
    for w, fn in HAND_WEIGHTS.items():
        loss, _, _ = denoising_loss(pre, x0, sigma, noise, weighting=w, gamma=gamma)
        torch.testing.assert_close(loss.double(), fn(s2, gamma) * err, rtol=1e-5, atol=1e-12)
    # the named losses in their own spaces (VP units): ‖ε̂ − ε‖², ‖v̂ − v‖²
    ab = sch.alpha_bar[t - 1][:, None]
    x_t = ab.sqrt() * x
    eps_hat = eps_from_x0(x_t, D, ab)
    loss_eps, _, _ = denoising_loss(pre, x0, sigma, noise, weighting="eps")
    torch.testing.assert_close(loss_eps.double(), ((eps_hat - noise) ** 2).mean(1), rtol=1e-5, atol=1e-12)
    v_hat = v_from_x0_eps(D, eps_hat, ab)
    loss_v, _, _ = denoising_loss(pre, x0, sigma, noise, weighting="v")
    torch.testing.assert_close(loss_v.double(), ((v_hat - v_from_x0_eps(x0, noise, ab)) ** 2).mean(1), rtol=1e-5, atol=1e-12)


def test_default_weighting_is_the_parameterization_own(linear1000):
    x0, noise = torch.randn(4, 3, dtype=F64), torch.randn(4, 3, dtype=F64)
    sigma = linear1000.sigmas[[10, 100, 500, 900]]
    for p in ("eps", "x0", "v"):
        pre = Precond(RandomNet(3), p, schedule=linear1000)
        a, _, _ = denoising_loss(pre, x0, sigma, noise)
        b, _, _ = denoising_loss(pre, x0, sigma, noise, weighting=p)
        torch.testing.assert_close(a, b)


def test_hybrid_loss_is_mse_plus_lambda_vlb_and_vlb_does_not_train_the_mean(linear1000):
    sch = linear1000
    B, C = 6, 3
    pre = Precond(RandomNet(C, learned_variance=True), "eps", schedule=sch, learned_variance=True)
    x0 = torch.rand(B, C, dtype=F64) * 2 - 1
    noise = torch.randn(B, C, dtype=F64)
    t = torch.tensor([1, 2, 10, 300, 800, 1000])
    out = hybrid_loss(pre, sch, x0, t, noise, lambda_vlb=0.001, decoder="discrete")
    torch.testing.assert_close(out["loss"], out["mse"] + 0.001 * out["vlb"])
    # the VLB part is L_{t−1} in bits/dim, times T
    x_t = q_sample(sch, x0, t, noise)
    with torch.no_grad():
        ref = vlb_term(pre, sch, x0, x_t, t, "learned", "discrete") * sch.T / (C * math.log(2))
    torch.testing.assert_close(out["vlb"].detach(), ref, rtol=1e-9, atol=1e-9)
    # gradients: the VLB term reaches only the variance head, the MSE only the mean head
    g_vlb = torch.autograd.grad(out["vlb"].sum(), list(pre.net.parameters()), retain_graph=True, allow_unused=True)
    names = [n for n, _ in pre.net.named_parameters()]
    for n, g in zip(names, g_vlb):
        if n.startswith("mean"):
            assert g is None or torch.count_nonzero(g) == 0, n
        else:
            assert g is not None and torch.count_nonzero(g) > 0, n
    g_mse = torch.autograd.grad(out["mse"].sum(), list(pre.net.parameters()), allow_unused=True)
    for n, g in zip(names, g_mse):
        if n.startswith("var"):
            assert g is None or torch.count_nonzero(g) == 0, n
    # without a learned variance the hybrid loss is the MSE alone
    plain = Precond(RandomNet(C), "eps", schedule=sch)
    out2 = hybrid_loss(plain, sch, x0, t, noise)
    assert "vlb" not in out2 and torch.equal(out2["loss"], out2["mse"])


@pytest.mark.parametrize("detach_mean", [True, False])
def test_vlb_term_detach_mean_stops_the_gradient_into_the_mean(linear1000, detach_mean):
    pre = Precond(RandomNet(3, learned_variance=True), "eps", schedule=linear1000, learned_variance=True)
    x0 = torch.rand(4, 3, dtype=F64) * 2 - 1
    t = torch.tensor([1, 3, 400, 1000])
    x_t = q_sample(linear1000, x0, t, torch.randn(4, 3, dtype=F64))
    for decoder in ("discrete", "continuous"):
        loss = vlb_term(pre, linear1000, x0, x_t, t, "learned", decoder, detach_mean=detach_mean).sum()
        g_mean = torch.autograd.grad(loss, pre.net.mean.weight, retain_graph=True)[0]
        g_var = torch.autograd.grad(loss, pre.net.var.weight)[0]
        assert torch.count_nonzero(g_var) > 0
        assert (torch.count_nonzero(g_mean) == 0) == detach_mean


# --- sampling t -------------------------------------------------------------------------------------------


def test_sample_t_is_uniform_over_steps():
    u = (torch.arange(10_000, dtype=F64) + 0.5) / 10_000
    t = sample_t(100, u)
    assert t.min() == 1 and t.max() == 100
    assert torch.equal(torch.bincount(t, minlength=101)[1:], torch.full((100,), 100))


def test_importance_sampler_is_unbiased_and_follows_rms_losses(gen):
    T, hist = 20, 4
    s = ImportanceSampler(T, history=hist, uniform_prob=0.01)
    torch.testing.assert_close(s.weights(), torch.full((T,), 1 / T, dtype=F64))  # uniform until full history
    L = torch.linspace(0.1, 3.0, T, dtype=F64) ** 2  # per-step loss, deterministic
    for _ in range(hist + 2):  # more than a full history: the oldest entries roll out
        s.update(torch.arange(1, T + 1), L)
    p = s.weights()
    ref = L / L.sum() * 0.99 + 0.01 / T  # √E[L²] = L for constant losses
    torch.testing.assert_close(p, ref)
    t, w = s.sample(200_000, generator=gen(5))
    est = w * L[t - 1]
    # E_p[L_t/(T·p_t)] = mean_t L_t
    assert within(est.mean(), L.mean(), est.std() / math.sqrt(len(est)))
    torch.testing.assert_close(w, 1 / (T * p[t - 1]))
    state = s.state_dict()
    s2 = ImportanceSampler(T, history=hist, uniform_prob=0.01)
    s2.load_state_dict(state)
    torch.testing.assert_close(s2.weights(), p)
