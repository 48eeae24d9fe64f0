"""Series: windows split by time, writers in data units, stylised facts on processes whose facts are known,
GARCH-t and bootstrap baselines, and a short real run through the CLI (train, sample, eval)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from undiffuse.build import DataInfo
from undiffuse.data import load_dataset
from undiffuse.data.errors import DataError
from undiffuse.data.series import series_units
from undiffuse.evaluation.series import (
    acf,
    bootstrap_windows,
    discriminative_score,
    predictive_score,
    stylised_facts,
)


def _write_series(path, values: np.ndarray) -> str:
    rows = [f"2000-01-{i:05d}," + ",".join(f"{v:.10g}" for v in row) for i, row in enumerate(values)]
    order = np.random.default_rng(0).permutation(len(rows))  # the file's rows out of order: sorted by date
    path.write_text("date,a,b\n" + "\n".join(rows[i] for i in order) + "\n")
    return f"series:{path}"


def test_windows_are_split_by_time_and_written_back_in_data_units(tmp_path):
    vals = np.stack([np.arange(200.0), np.arange(200.0) ** 0.5], 1)
    spec = _write_series(tmp_path / "s.csv", vals)
    tr, te = load_dataset(spec, "train", window=8), load_dataset(spec, "test", window=8)
    info = DataInfo.from_dataset(tr)
    w, wt = series_units(tr.x, info), series_units(te.x, info)
    assert w.dtype == np.float32 and w.shape == (160 - 8 + 1, 8, 2) and wt.shape[1:] == (8, 2)
    assert np.allclose(w[:, :, 0], np.arange(160 - 7)[:, None] + np.arange(8)[None], atol=1e-3)  # stride 1, in order
    assert wt[:, :, 0].min() >= 160 - 1e-3 and np.allclose(wt[0, :, 0], np.arange(160, 168), atol=1e-3)
    for suffix in (".npy", ".csv", ".png"):
        from undiffuse.data.kinds import save_samples

        save_samples(te.x, tmp_path / f"out{suffix}", info)
    assert np.allclose(np.load(tmp_path / "out.npy"), wt)
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "window,t,a,b" and len(lines) == 1 + wt.shape[0] * 8
    with pytest.raises(DataError, match="data.window"):
        load_dataset(spec, "train", window=30)


def test_bad_series_files_get_one_line_errors(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("date,a\n" + "\n".join(f"{i},x{i}" for i in range(50)) + "\n")
    with pytest.raises(DataError, match="numbers") as e:
        load_dataset(f"series:{p}", "train")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="unknown series"):
        load_dataset("series:nope", "train")


def test_stylised_facts_of_processes_with_known_facts():
    rng = np.random.default_rng(0)
    iid = rng.standard_normal((400, 64))
    f = stylised_facts(iid)
    assert abs(f["pooled_kurtosis"]) < 0.1 and abs(float(np.mean(f["acf_r"]))) < 0.03
    ar = np.zeros((200, 256))
    for t in range(1, 256):  # AR(1) with φ = 0.5: ρ(1) = 0.5
        ar[:, t] = 0.5 * ar[:, t - 1] + rng.standard_normal(200)
    assert float(acf(ar, 1).mean()) == pytest.approx(0.5, abs=0.03)
    t5 = rng.standard_t(5, size=(400, 64))  # Student-t(5): excess kurtosis 6
    assert stylised_facts(t5)["pooled_kurtosis"] > 3
    boot = bootstrap_windows(iid.reshape(-1), 300, 64, block=8, seed=1)
    assert boot.shape == (300, 64) and discriminative_score(iid, boot) < 0.1  # a resample of the same law


def test_predictive_score_reaches_the_noise_floor_only_with_the_right_dynamics():
    """AR(1), x_t = 0.8·x_{t−1} + ε_t, ε ~ N(0, 1): a next-step regressor fitted on windows of the same process
    has the MAE of the innovation, E|ε| = √(2/π) ≈ 0.80; fitted on i.i.d. windows of the same marginal
    (σ = 1/√(1 − 0.64)) it predicts the mean, MAE = σ·√(2/π) ≈ 1.33."""
    rng = np.random.default_rng(0)

    def ar(n):
        x = np.zeros((n, 96))
        x[:, 0] = rng.standard_normal(n) / 0.6
        for t in range(1, 96):
            x[:, t] = 0.8 * x[:, t - 1] + rng.standard_normal(n)
        return x[:, 32:]

    real = ar(200)
    same = predictive_score(real, ar(300))
    iid = predictive_score(real, rng.standard_normal((300, 64)) / 0.6)
    assert same["r"] == pytest.approx((2 / np.pi) ** 0.5, abs=0.05)
    assert iid["r"] == pytest.approx((2 / np.pi) ** 0.5 / 0.6, abs=0.08)
    short = predictive_score(real[:, :4], ar(300)[:, :4])  # windows shorter than the 5 lags: 3 lags
    assert short["r"] == pytest.approx((2 / np.pi) ** 0.5, abs=0.1)


def test_garch_t_baseline_has_heavy_tails_and_volatility_clustering():
    pytest.importorskip("arch")
    from undiffuse.evaluation.series import garch_windows

    rng = np.random.default_rng(0)
    sigma2, r = 1.0, np.empty(3000)
    for t in range(3000):  # GARCH(1,1): ω = 0.05, α = 0.1, β = 0.85
        r[t] = np.sqrt(sigma2) * rng.standard_normal()
        sigma2 = 0.05 + 0.1 * r[t] ** 2 + 0.85 * sigma2
    w, params = garch_windows(r, 200, 128, seed=0)
    assert params["alpha[1]"] == pytest.approx(0.1, abs=0.05) and params["beta[1]"] == pytest.approx(0.85, abs=0.08)
    f = stylised_facts(w, max_lag=10)
    assert f["pooled_kurtosis"] > 0.5 and float(f["acf_abs_by_lag"][0]) > 0.03


def test_short_run_samples_windows_and_evaluates(tmp_path):
    pytest.importorskip("arch")
    from undiffuse.cli.main import main

    rng = np.random.default_rng(1)
    spec = _write_series(tmp_path / "r.csv", rng.standard_t(4, size=(600, 2)))
    run = tmp_path / "run"
    assert main(["train", "--data", spec, "--out", str(run), "--steps", "150", "--set", "data.window=16",
                 "--set", "model.hidden=32", "--quiet"]) == 0  # fmt: skip
    assert main(["sample", str(run), "--n", "20", "--out", str(tmp_path / "x.npy"), "--quiet"]) == 0
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (20, 16, 2) and x.dtype == np.float32 and np.isfinite(x).all()
    assert main(["eval", str(run), "--n", "100", "--steps", "20", "--out", str(tmp_path / "ev")]) == 0
    rep = json.loads((tmp_path / "ev.json").read_text())
    assert set(rep["methods"]) == {"diffusion", "garch(1,1)-t", "block bootstrap", "gan", "vae", "real train windows"}
    assert all(0 <= m["discriminative"] <= 0.5 for m in rep["methods"].values())
    assert all(np.isfinite(m["predictive"]["abs_r"]) and m["predictive"]["abs_r"] > 0 for m in rep["methods"].values())
    assert rep["methods"]["real train windows"]["predictive"]["abs_r"] < 0.8  # t(4) returns: E|r| ≈ 1.1
    past = tmp_path / "past.csv"
    past.write_text("date,a,b\n" + "\n".join(f"{i},{10 + i},{-i}" for i in range(30)) + "\n")
    out = tmp_path / "paths.csv"
    assert main(["forecast", str(run), "--context", str(past), "--horizon", "4", "--n", "50", "--steps", "20",
                 "--out", str(out), "--quantiles", "0.05,0.5,0.95"]) == 0  # fmt: skip
    lines = out.read_text().splitlines()
    assert lines[0] == "t,quantile,a,b" and len(lines) == 1 + 4 * 3
    from undiffuse.forecasting import forecast_paths
    from undiffuse.model import load

    m = load(run)
    context = np.stack([10 + np.arange(30.0), -np.arange(30.0)], 1)
    p = forecast_paths(m, context, 4, n=30, seed=0, steps=20)
    assert p.shape == (30, 4, 2) and np.isfinite(p).all() and p.std(0).min() > 0
    assert np.allclose(forecast_paths(m, context, 4, n=5, seed=0, steps=20, batch_size=2), p[:5], atol=1e-4)


def test_crps_and_coverage_of_a_known_law():
    from undiffuse.forecasting import coverage, crps

    rng = np.random.default_rng(0)
    paths = rng.standard_normal((20000, 1))
    # CRPS of N(0, 1) at y = 0 is 2φ(0) − 1/√π = (√2 − 1)/√π
    assert float(crps(paths, np.zeros(1))[0]) == pytest.approx((2**0.5 - 1) / np.pi**0.5, abs=0.01)
    assert coverage(rng.standard_normal((2000, 3000)), rng.standard_normal(3000)) == pytest.approx(0.9, abs=0.02)


def test_seqnet_reads_windows_time_major_and_builds_only_for_series(tmp_path):
    from undiffuse.build import build_denoiser
    from undiffuse.config import resolve_config
    from undiffuse.errors import ConfigError
    from undiffuse.nn.seqnet import SeqNet

    net = SeqNet(16, 2, hidden=16, depth=3, num_classes=3)
    x = torch.randn(4, 32)
    assert net(x, torch.rand(4) * 1000).abs().max() == 0  # zero-initialised output: starts as ε̂ = 0
    torch.nn.init.normal_(net.conv_out.weight)
    y = net(x, torch.rand(4) * 1000, class_labels=torch.tensor([0, 1, 2, 3]))
    assert y.shape == (4, 32)
    x2 = x.clone()
    x2.reshape(4, 16, 2)[:, -1, :] += 1.0  # only the last time step changes: the first steps' outputs barely move
    diff = (net(x2, torch.full((4,), 10.0)) - net(x, torch.full((4,), 10.0))).reshape(4, 16, 2).abs().sum((0, 2))
    assert diff[-1] > 0 and diff[0] < diff[-1]
    spec = _write_series(tmp_path / "s.csv", np.random.default_rng(0).standard_normal((200, 2)))
    ds = load_dataset(spec, "train", window=8)
    cfg = resolve_config(spec, overrides=["model.arch=seq", "model.hidden=16", "model.depth=2", "data.window=8"])
    assert isinstance(build_denoiser(cfg, DataInfo.from_dataset(ds)).net, SeqNet)
    with pytest.raises(ConfigError, match="series"):
        build_denoiser(resolve_config("table:wine", overrides=["model.arch=seq"]),
                       DataInfo.from_dataset(load_dataset("table:wine", "train")))  # fmt: skip


def test_conditioning_masks_mix_none_history_and_random_points():
    from undiffuse.diffusion.conditional import conditioning_masks

    L, C, n = 16, 2, 3000
    m = conditioning_masks(n, L, C, torch.Generator().manual_seed(0))
    assert m.dtype == torch.bool and m.shape == (n, L * C)
    assert torch.equal(m, conditioning_masks(n, L, C, torch.Generator().manual_seed(0)))  # a function of the generator
    steps = m.reshape(n, L, C)
    none = ~m.any(1)
    k = steps[:, :, 0].sum(1)
    # a history split observes the first k < L steps of every channel (k = L: a random draw of all points)
    prefix = (steps == (torch.arange(L)[None, :, None] < k[:, None, None])).all((1, 2)) & ~none & (k < L)
    assert none.float().mean() == pytest.approx(1 / 3, abs=0.04)  # plus the rare all-empty random draw
    assert prefix.float().mean() == pytest.approx(1 / 3, abs=0.04)  # plus the rare random draw that is a prefix
    points = ~none & ~prefix
    assert m[points].float().mean() == pytest.approx(0.5, abs=0.05)  # r ~ U(0, 1): about half observed (the empty draws left out)


def _observed_net(L: int, C: int):
    from undiffuse.diffusion.conditional import ObservedPrecond
    from undiffuse.nn.seqnet import SeqNet
    from undiffuse.schedules.discrete import make_schedule

    torch.manual_seed(0)
    net = SeqNet(L, C, hidden=16, depth=2, observed=True)
    torch.nn.init.normal_(net.conv_out.weight)
    return ObservedPrecond(net, L, C, "eps", make_schedule("cosine", 1000))


def test_observed_precond_keeps_observed_values_and_feeds_them_to_the_network():
    L, C = 8, 2
    pre = _observed_net(L, C)
    x, obs, sigma = torch.randn(3, L * C) * 2, torch.randn(3, L * C), torch.full((3,), 1.5)
    m = torch.zeros(3, L * C, dtype=torch.bool)
    m[:, : 5 * C] = True  # the first five steps observed
    d = pre(x, sigma, obs=obs, obs_mask=m)
    assert torch.equal(d[m], obs[m])  # observed cells exactly
    x2 = torch.where(m, torch.randn_like(x) * 9, x)  # the state at observed cells is not an input
    assert torch.equal(pre(x2, sigma, obs=obs, obs_mask=m), d)
    obs2 = torch.where(m, obs + 1.0, obs)  # the observed values reach the network: the targets move
    assert (pre(x, sigma, obs=obs2, obs_mask=m)[~m] - d[~m]).abs().min() > 0
    assert torch.equal(pre(x, sigma), pre(x, sigma, obs=obs, obs_mask=torch.zeros_like(m)))  # no mask: unconditional


def test_observed_loss_counts_only_the_unobserved_positions():
    from undiffuse.diffusion.conditional import ObservedPrecond
    from undiffuse.schedules.discrete import make_schedule

    L, C, B = 8, 1, 64
    seen = {}

    class Stub(torch.nn.Module):  # F = a free parameter per cell; records the mask it was given
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.randn(B, L * C))

        def forward(self, x, c_noise, obs=None, obs_mask=None):
            seen["mask"] = obs_mask
            return self.p * 1.0

    sched = make_schedule("cosine", 1000)
    pre = ObservedPrecond(Stub(), L, C, "eps", sched)
    x0, noise, t = torch.randn(B, L * C), torch.randn(B, L * C), torch.randint(1, 1001, (B,))
    loss = pre.example_loss(sched, x0, t, noise)
    assert torch.equal(loss, pre.example_loss(sched, x0, t, noise))  # the masks are a function of the draws
    loss.sum().backward()
    g, m = pre.net.p.grad, seen["mask"]
    assert g[m].abs().max() == 0 and (g[~m] != 0).all()
    target = (~m).float()  # per example, the mean squared ε-error over the targets
    expected = ((pre.net.p.detach() - noise) ** 2 * target).sum(1) / target.sum(1).clamp_min(1)
    assert torch.allclose(loss, expected)


def test_short_conditional_run_forecasts_through_its_input(tmp_path):
    from undiffuse.config import resolve_config
    from undiffuse.forecasting import forecast_paths
    from undiffuse.model import load
    from undiffuse.sampling import sample
    from undiffuse.training import train

    spec = _write_series(tmp_path / "r.csv", np.random.default_rng(2).standard_t(4, size=(400, 2)))
    run = tmp_path / "run"
    train(resolve_config(spec, overrides=["data.window=16", "model.arch=seq", "model.hidden=16", "model.depth=2",
                                          "model.obs_cond=true", "train.steps=40", "train.batch_size=32"]), run,
          progress=False)  # fmt: skip
    m = load(run)
    assert type(m.denoiser).__name__ == "ObservedPrecond"
    n, W = 6, 32
    known = torch.zeros(n, W, dtype=torch.bool)
    known[:, :20] = True
    x_known = torch.randn(n, W)
    cond = {"known": known, "x_known": x_known, "obs": x_known, "obs_mask": known}
    x = sample(m, n, 3, sampler="multinomial", steps=10, cond=cond)
    assert torch.equal(x[known], x_known[known])  # the context comes back exactly
    part = sample(m, 2, 3, sampler="multinomial", steps=10, cond={k: v[4:] for k, v in cond.items()}, indices=[4, 5])
    assert torch.allclose(part, x[4:], atol=1e-5)  # sample i depends only on (seed, i)
    context = np.random.default_rng(0).standard_normal((30, 2))
    p = forecast_paths(m, context, 6, n=20, seed=0, steps=10)
    assert p.shape == (20, 6, 2) and np.isfinite(p).all() and p.std(0).min() > 0
    assert np.isfinite(sample(m, 4, 0, sampler="ddpm", steps=10).numpy()).all()  # m = 0: unconditional windows
    from undiffuse.errors import ConfigError

    with pytest.raises(ConfigError, match="obs_cond=false"):  # the default is conditional: another network says how
        resolve_config(spec, overrides=["model.arch=mlp"])
