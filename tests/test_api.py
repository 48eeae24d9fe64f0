"""The Python API: load, sample (sample i depends only on seed and i), save_samples, nll."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import undiffuse
from undiffuse.api import eval_data, nll, sample, sampler_names, save_samples
from undiffuse.config import apply_overrides, get_preset
from undiffuse.errors import UserError
from undiffuse.training import train

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    """digits 8×8 with T = 20, so the exact VLB is cheap."""
    d = tmp_path_factory.mktemp("api") / "img"
    cfg = apply_overrides(get_preset("digits-tiny"), ["diffusion.T=20", "train.batch_size=16", "data.limit=128",
                                                     "train.ckpt_every=0"])  # fmt: skip
    train(cfg, d, steps=8, progress=False)
    return d


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("api") / "toy"
    cfg = apply_overrides(get_preset("toy"), ["model.hidden=32", "model.depth=1", "train.batch_size=64",
                                              "train.ckpt_every=0", "train.val_every=0", "train.sample_every=0"])  # fmt: skip
    train(cfg, d, steps=3, progress=False)
    return d


def test_load_gives_a_ready_model(image_run):
    model = undiffuse.load(image_run, device="cpu")
    assert model.step == 8 and model.schedule.T == 20 and model.config.preset == "digits-tiny"
    assert not any(p.requires_grad for p in model.denoiser.parameters()) and not model.denoiser.training


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sample_i_depends_only_on_seed_and_i(image_run, sampler):
    model = undiffuse.load(image_run, device="cpu")
    info: dict = {}
    opt = {"eta": 0.5} if sampler == "ddim" else {}  # ddpm declares no η: passing one is refused
    a = sample(model, 6, seed=3, sampler=sampler, steps=5, batch_size=4, info=info, **opt)
    b = sample(model, 9, seed=3, sampler=sampler, steps=5, batch_size=2, **opt)
    c = sample(model, 6, seed=4, sampler=sampler, steps=5, **opt)
    d = sample(model, 0, seed=3, sampler=sampler, steps=5, indices=[5, 1], **opt)  # any indices, any order
    assert a.shape == (6, 1, 8, 8) and info["nfe"] == 5
    torch.testing.assert_close(a, b[:6], atol=1e-5, rtol=0)
    torch.testing.assert_close(d, a[[5, 1]], atol=1e-5, rtol=0)
    assert (a - c).abs().max() > 0.1
    assert a.min() >= -1 and a.max() <= 1  # x̂_0 clipped to the image range


def test_every_registered_sampler_runs(image_run):
    model = undiffuse.load(image_run, device="cpu")
    for name in sampler_names():
        x = sample(model, 2, seed=0, sampler=name, steps=4)
        assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all(), name


def test_callback_sees_every_step(image_run):
    model = undiffuse.load(image_run, device="cpu")
    seen = []
    sample(model, 3, seed=0, steps=4, batch_size=2, callback=lambda d: seen.append((d["offset"], d["i"])))
    assert seen == [(0, 0), (0, 1), (0, 2), (0, 3), (2, 0), (2, 1), (2, 2), (2, 3)]


def test_bad_sampling_requests(image_run):
    model = undiffuse.load(image_run, device="cpu")
    for kw in ({"n": 0}, {"n": 2, "steps": 0}, {"n": 2, "steps": 21}, {"n": 2, "sampler": "nope"}):
        with pytest.raises(UserError):
            sample(model, **kw)


def test_save_samples_images(image_run, tmp_path):
    model = undiffuse.load(image_run, device="cpu")
    x = sample(model, 5, seed=0, steps=3)
    save_samples(x, tmp_path / "g.png", model.data)
    assert Image.open(tmp_path / "g.png").size[0] > 16
    save_samples(x, tmp_path / "x.npy", model.data)
    arr = np.load(tmp_path / "x.npy")
    assert arr.dtype == np.uint8 and arr.shape == (5, 8, 8, 1)
    save_samples(x, str(tmp_path / "each") + "/", model.data)
    files = sorted(p.name for p in (tmp_path / "each").iterdir())
    assert files == [f"{i:06d}.png" for i in range(5)]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "each" / "000003.png")), arr[3, ..., 0])
    with pytest.raises(UserError, match="unknown output"):
        save_samples(x, tmp_path / "x.txt", model.data)


def test_save_samples_vectors(toy_run, tmp_path):
    model = undiffuse.load(toy_run, device="cpu")
    x = sample(model, 50, seed=1, steps=10)
    save_samples(x, tmp_path / "x.npy", model.data)
    arr = np.load(tmp_path / "x.npy")
    assert arr.dtype == np.float32 and arr.shape == (50, 2)
    np.testing.assert_array_equal(arr, x.numpy())
    save_samples(x, tmp_path / "s.png", model.data, reference=torch.randn(100, 2))
    assert (tmp_path / "s.png").stat().st_size > 1000
    with pytest.raises(UserError, match=r"only for image, .*audio.* data"):
        save_samples(x, str(tmp_path / "d") + "/", model.data)


def test_nll_stratified_estimate_is_unbiased(image_run):
    """Averaged over seeds, the stratified estimate matches the exact sum over all T terms."""
    model = undiffuse.load(image_run, device="cpu")
    x0 = eval_data(model, n=8)
    exact = [nll(model, x0, exact=True, n_t=4, seed=s) for s in range(6)]
    strat = [nll(model, x0, n_t=4, seed=100 + s) for s in range(24)]
    r = strat[0]
    assert r["units"] == "continuous" and r["estimator"] == "stratified" and r["n_t"] == 4
    assert r["nfe_per_example"] == 5 and math.isfinite(r["stderr"]) and r["stderr"] > 0
    parts = r["prior_bpd"] + r["decoder_bpd"] + r["kl_terms_bpd"]
    assert parts == pytest.approx(r["bits_per_dim"], rel=1e-9, abs=1e-9)
    assert sum(s["bpd"] for s in r["kl_strata"]) == pytest.approx(r["kl_terms_bpd"], rel=1e-9, abs=1e-9)
    assert exact[0]["estimator"] == "exact" and len(exact[0]["kl_strata"]) == len(r["kl_strata"]) == 4
    e = np.array([v["kl_terms_bpd"] for v in exact])
    s = np.array([v["kl_terms_bpd"] for v in strat])
    se = math.sqrt(e.var(ddof=1) / len(e) + s.var(ddof=1) / len(s))
    assert abs(e.mean() - s.mean()) < 4 * se + 1e-9, (e.mean(), s.mean(), se)
    again = nll(model, x0, n_t=4, seed=100)
    assert again["bits_per_dim"] == r["bits_per_dim"]  # seeded


def test_eval_data_and_nll_inputs(image_run, toy_run):
    model = undiffuse.load(image_run, device="cpu")
    with pytest.raises(UserError, match="shape"):
        eval_data(model, spec="toy:moons")
    with pytest.raises(UserError):
        nll(model, eval_data(model, n=2), n_t=0)
    toy = undiffuse.load(toy_run, device="cpu")
    r = nll(toy, eval_data(toy, n=16), n_t=3)
    assert r["units"] == "continuous" and math.isfinite(r["bits_per_dim"])
