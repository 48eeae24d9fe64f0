"""GAN and VAE baselines: exact bounds on a linear-Gaussian VAE, shapes, short runs, checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from undiffuse.baselines import (
    VAE,
    baseline_nll,
    build_gan,
    build_vae,
    count_params,
    load_baseline,
    sample_baseline,
    train_baseline,
    width_for_params,
)
from undiffuse.runs import run_kind


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These networks are tiny: one intra-op thread is faster, and on contended cores it avoids
    OpenMP threads spinning at barriers (10× slower steps here with two)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- linear-Gaussian VAE (exact log p(x))
D, Z, SIGMA = 6, 3, 0.5


def _linear_gaussian(posterior_shift: float = 0.0, logvar_shift: float = 0.0):
    """A VAE with p(z) = N(0, I), p(x|z) = N(Wz + b, σ²I), so p(x) = N(b, WWᵀ + σ²I) exactly.

    W has orthogonal columns, so the true posterior N(M⁻¹Wᵀ(x − b), σ²M⁻¹), M = WᵀW + σ²I, is
    diagonal and the encoder can represent it exactly (shifts = 0) or be moved off it."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, Z, generator=g, dtype=torch.float64))
    W = q * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)  # [D, Z], orthogonal columns
    b = torch.randn(D, generator=g, dtype=torch.float64)
    m = (W * W).sum(0) + SIGMA**2  # diag of M
    A = W.T / m[:, None]  # M⁻¹Wᵀ [Z, D]
    enc, dec = nn.Linear(D, 2 * Z).double(), nn.Linear(Z, 2 * D).double()
    with torch.no_grad():
        enc.weight.zero_()
        enc.weight[:Z] = A
        enc.bias[:Z] = -A @ b + posterior_shift
        enc.bias[Z:] = torch.log(SIGMA**2 / m) + logvar_shift
        dec.weight.zero_()
        dec.weight[:D] = W
        dec.bias[:D] = b
        dec.bias[D:] = math.log(SIGMA)
    vae = VAE(enc, dec, Z, (D,), likelihood="continuous")
    cov = W @ W.T + SIGMA**2 * torch.eye(D, dtype=torch.float64)
    return vae, torch.distributions.MultivariateNormal(b, cov), W, b


def _x(p_x, n: int = 64) -> torch.Tensor:
    torch.manual_seed(1)
    return p_x.sample((n,))


def test_exact_posterior_makes_every_bound_exact():
    vae, p_x, _, _ = _linear_gaussian()
    x, log_p = _x(p_x), p_x.log_prob
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        # with q = p(z|x) every importance weight equals p(x): even one draw is exact
        torch.testing.assert_close(vae.iwae(x, 1, gen), log_p(x), atol=1e-9, rtol=0)
        torch.testing.assert_close(vae.iwae(x, 7, gen), log_p(x), atol=1e-9, rtol=0)
        elbo = vae.elbo(x, n_samples=2000, generator=gen)  # Monte Carlo in E_q log p(x|z): noisy
        torch.testing.assert_close(elbo, log_p(x), atol=0.2, rtol=0)
        assert elbo.mean().item() == pytest.approx(log_p(x).mean().item(), abs=0.03)


def test_elbo_never_above_log_likelihood_and_iwae_tightens():
    vae, p_x, W, b = _linear_gaussian(posterior_shift=0.3, logvar_shift=-1.0)
    x = _x(p_x)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        mu, logvar = vae.encode(x)
        # the ELBO in closed form: E_q log N(x; Wz + b, σ²I) − KL(q ‖ N(0, I))
        resid = ((x - mu @ W.T - b) ** 2).sum(1) + (logvar.exp() @ (W * W).sum(0))
        rec = -0.5 * D * math.log(2 * math.pi * SIGMA**2) - resid / (2 * SIGMA**2)
        kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
        elbo_exact, lp = rec - kl, p_x.log_prob(x)
        assert (elbo_exact < lp - 0.3).all()  # a strict gap: q ≠ p(z|x)
        elbo_mc = vae.elbo(x, n_samples=2000, generator=gen)
        torch.testing.assert_close(elbo_mc, elbo_exact, atol=0.2, rtol=0)
        assert elbo_mc.mean().item() == pytest.approx(elbo_exact.mean().item(), abs=0.03)
        assert (elbo_mc <= lp).all()
        bounds = [vae.iwae(x, k, gen, chunk=250).mean().item() for k in (1, 10, 100, 1000)]
    gap = [lp.mean().item() - v for v in bounds]
    assert gap[0] == pytest.approx((lp - elbo_exact).mean().item(), abs=0.1)
    assert all(g1 > g2 for g1, g2 in zip(gap, gap[1:])), gap  # IWAE_k rises with k ...
    assert gap[-1] > -0.02 and gap[-1] < 0.5 * gap[0], gap  # ... towards log p(x), not past it


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 12, 12)])
def test_image_shapes(shape):
    gan = build_gan("image", shape, width=8, z_dim=16).eval()
    x = gan(torch.randn(5, 16))
    assert x.shape == (5, *shape) and x.abs().max() <= 1
    assert gan.logits(x).shape == (5,)
    vae = build_vae("image", shape, width=8, z_dim=4).eval()
    data = torch.rand(5, *shape) * 2 - 1
    mean, log_scale = vae.decode(torch.randn(5, 4))
    assert mean.shape == log_scale.shape == (5, *shape)
    for bound in (vae.elbo(data), vae.iwae(data, 3), vae.bits_per_dim(data), vae.bits_per_dim(data, k=2)):
        assert bound.shape == (5,) and torch.isfinite(bound).all()
    assert (vae.bits_per_dim(data) > 0).all()  # discrete bits/dim are non-negative


def test_vector_shapes_and_pacgan():
    gan = build_gan("vector", (2,), width=32, pack=4, d_width=16).eval()
    x = gan(torch.randn(8, 2))
    assert x.shape == (8, 2) and gan.logits(x).shape == (2,)
    with pytest.raises(ValueError, match="multiple of pack"):
        gan.logits(x[:6])
    vae = build_vae("vector", (2,), "continuous", width=16).eval()
    assert vae.elbo(torch.randn(7, 2)).shape == (7,)
    assert vae.sample(torch.randn(7, 2), torch.randn(7, 2)).shape == (7, 2)
    with pytest.raises(ValueError, match="at least 8"):
        build_gan("image", (1, 6, 6))


def test_width_for_params_matches_a_target():
    build = lambda w: build_gan("image", (1, 28, 28), width=w)
    w = width_for_params(build, 500_000)
    assert abs(count_params(build(w)) - 500_000) / 500_000 < 0.05


# ---------------------------------------------------------------- training runs

_SMALL_GAN = {"width": 64, "d_width": 32, "depth": 2, "d_depth": 2}


def test_gan_on_8gaussians_runs_and_samples(tmp_path):
    s = train_baseline("gan", "toy:8gaussians", tmp_path, steps=20, model=_SMALL_GAN, lr=1e-3, log_every=5)
    assert s["steps"] == 20 and math.isfinite(s["last"]["loss_d"]) and math.isfinite(s["last"]["loss_g"])
    rows = [json.loads(r) for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    x = sample_baseline(tmp_path, 300, seed=1)
    assert x.shape == (300, 2) and torch.isfinite(x).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "checkpoints", "config.json", "log.jsonl",
                                                          "summary.json"]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "step_0000020").iterdir()) == [
        "model.safetensors", "state.json", "train_state.safetensors"]  # fmt: skip
    assert run_kind(tmp_path) == "gan"
    with pytest.raises(ValueError, match="no likelihood"):
        baseline_nll(tmp_path)


def test_vae_training_reduces_the_loss(tmp_path):
    # Fashion-MNIST resized to 8×8 stays on the 8-bit grid: the discretized decoder, at a tenth of the cost
    kw = dict(model={"width": 8, "z_dim": 8}, batch_size=32, lr=3e-3, image_size=8, log_every=10)
    s = train_baseline("vae", "fashion-mnist", tmp_path, steps=40, **kw)
    rows = [json.loads(r) for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"], rows
    assert s["params"]["total"] == count_params(load_baseline(tmp_path)[0])
    nll = baseline_nll(tmp_path, n=64, k=4)
    assert nll["units"] == "discrete" and nll["bound"] == "iwae4" and 0 < nll["bits_per_dim"] < 8
    x = sample_baseline(tmp_path, 4)
    assert x.shape == (4, 1, 8, 8) and x.abs().max() <= 1


def test_checkpoint_round_trip_resume_and_per_sample_seeds(tmp_path):
    kw = dict(model={"width": 8, "z_dim": 8}, batch_size=16, image_size=8, log_every=5)
    train_baseline("gan", "digits", tmp_path / "a", steps=10, **kw)
    train_baseline("gan", "digits", tmp_path / "b", steps=5, **kw)
    with (tmp_path / "b" / "log.jsonl").open("a") as f:
        f.write('{"step": 7, "seconds": 0.1}\n')  # a line of steps lost in a crash
    train_baseline("gan", "digits", tmp_path / "b", steps=10, resume=True, **kw)
    assert [json.loads(r)["step"] for r in (tmp_path / "b" / "log.jsonl").read_text().splitlines()] == [5, 10]
    wa, wb = load_baseline(tmp_path / "a")[0].state_dict(), load_baseline(tmp_path / "b")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # 10 steps = 5 + resumed 5, exactly
    x = sample_baseline(tmp_path / "a", 12, seed=3, batch_size=4)
    assert torch.equal(x, sample_baseline(tmp_path / "a", 12, seed=3, batch_size=4))  # reload: identical
    # sample i's latent depends on (seed, i) alone; other batch sizes change only the float rounding
    torch.testing.assert_close(x[4:9], sample_baseline(tmp_path / "a", 5, seed=3, start=4, batch_size=2))
    assert not torch.equal(x, sample_baseline(tmp_path / "a", 12, seed=4))


def test_vae_vector_sampling_is_per_sample(tmp_path):
    train_baseline("vae", "toy:8gaussians", tmp_path, steps=3, model={"width": 16})
    x = sample_baseline(tmp_path, 6, seed=0)
    torch.testing.assert_close(x[2:5], sample_baseline(tmp_path, 3, seed=0, start=2))
    assert not torch.equal(x, sample_baseline(tmp_path, 6, seed=0, decoder_noise=False))


def test_wall_clock_budget_is_respected(tmp_path):
    budget = 1.0
    s = train_baseline("gan", "toy:8gaussians", tmp_path, seconds=budget, model=_SMALL_GAN, log_every=1)
    t = [json.loads(r)["seconds"] for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(t) == s["steps"] >= 1
    # a step starts only while the clock is under budget, and the loop stops once it is over
    # (the log rounds seconds to 1 ms, so a step begun at 0.9996 s is logged as 1.0)
    assert (len(t) == 1 or t[-2] <= budget + 5e-4) and budget <= s["seconds"] < budget + 5.0
    with pytest.raises(ValueError, match="budget"):
        train_baseline("gan", "toy:8gaussians", tmp_path)


def test_sample_cli_refuses_diffusion_only_options_on_a_baseline(tmp_path, capsys):
    from undiffuse.cli.main import main

    train_baseline("vae", "toy:8gaussians", tmp_path / "r", steps=2, model={"width": 8})
    out = tmp_path / "x.npy"
    for extra in (["--lowres", "a.png"], ["--threshold", "0.99"], ["--guidance", "3"]):
        assert main(["sample", str(tmp_path / "r"), "--n", "4", "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert extra[0] in err and "not to a GAN/VAE baseline" in err and "\n" not in err and not out.exists()
    assert main(["sample", str(tmp_path / "r"), "--n", "4", "--out", str(out)]) == 0 and out.is_file()


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_fit_vectors_is_a_function_of_its_seed(kind):
    """The in-memory fit of the table/series baselines: the same seed gives the same model and samples, another
    seed others, and the global torch RNG is left as it was."""
    from undiffuse.baselines import fit_vectors, sample_indices

    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))

    def fit(seed):
        net, cfg = fit_vectors(kind, x, 5, seed=seed, batch_size=16, model={"z_dim": 4})
        return sample_indices(net, cfg, range(8), seed=0)

    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b, c = fit(0), fit(0), fit(1)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (8, 3) and torch.equal(a, b) and not torch.equal(a, c)
