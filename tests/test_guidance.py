"""Guidance combinators against the exact class-conditional Gaussian-mixture oracle."""

import math

import pytest
import torch

from undiffuse.diffusion.guidance import (
    ClassConditionalMixtureOracle,
    ClassifierFreeGuidance,
    ClassifierGuidance,
    Clipped,
    Thresholded,
    null_condition,
)
from undiffuse.diffusion.oracles import GaussianOracle
from undiffuse.diffusion.precond import denoise
from undiffuse.diffusion.reverse import clip_denoised, dynamic_threshold
from undiffuse.samplers import Counted, sample_ddim, sample_ddpm
from undiffuse.schedules import discrete_sigmas, make_schedule

NUM_CLASSES = 4


def karras(n, smin=0.01, smax=80.0, rho=7.0):
    r = torch.linspace(0, 1, n, dtype=torch.float64)
    s = (smax ** (1 / rho) + r * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


@pytest.fixture(scope="module")
def oracle():
    """8 modes on a circle of radius 3; mode k has class k mod 4 (two opposite modes per class)."""
    ang = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = 3 * torch.stack([ang.cos(), ang.sin()], dim=1)
    return ClassConditionalMixtureOracle(means, 0.15, labels=torch.arange(8) % NUM_CLASSES)


def nearest_class(oracle, x):
    d2 = ((x[:, None, :] - oracle.full.means[None]) ** 2).sum(-1)
    dist, k = d2.min(1)
    return oracle.labels[k], dist.sqrt()


def point(B=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(B, 2, generator=g, dtype=torch.float64)
    sigma = torch.exp(torch.randn(B, generator=g, dtype=torch.float64))
    y = torch.randint(0, NUM_CLASSES, (B,), generator=g)
    return x, sigma, y


def test_cfg_w0_and_w1_are_the_branches_exactly(oracle):
    x, sigma, y = point()
    null = {"class_labels": NUM_CLASSES}
    d_u = oracle(x, sigma, class_labels=torch.full_like(y, NUM_CLASSES))
    d_c = oracle(x, sigma, class_labels=y)
    assert torch.equal(ClassifierFreeGuidance(oracle, 0.0, null)(x, sigma, class_labels=y), d_u)
    assert torch.equal(ClassifierFreeGuidance(oracle, 1.0, null)(x, sigma, class_labels=y), d_c)
    assert not torch.allclose(d_u, d_c)
    # per-sample w in one batched call: the rows with w = 0 / 1 are still exact
    w = torch.tensor([0.0, 1.0] * 8, dtype=torch.float64)
    d_w = ClassifierFreeGuidance(oracle, w, null)(x, sigma, class_labels=y)
    assert torch.equal(d_w[0::2], d_u[0::2]) and torch.equal(d_w[1::2], d_c[1::2])


def test_cfg_is_one_batched_call_with_the_guided_combination(oracle):
    x, sigma, y = point()
    counted = Counted(oracle)
    d_w = ClassifierFreeGuidance(counted, 2.5, {"class_labels": NUM_CLASSES})(x, sigma, class_labels=y)
    assert counted.nfe == 1
    d_u = oracle(x, sigma, class_labels=torch.full_like(y, NUM_CLASSES))
    d_c = oracle(x, sigma, class_labels=y)
    torch.testing.assert_close(d_w, d_u + 2.5 * (d_c - d_u), rtol=1e-12, atol=1e-12)


def test_cfg_null_context_rows_and_masks():
    seen = {}

    def net(x, sigma, context=None, context_mask=None, x_cond=None):
        seen.update(x=x, context=context, context_mask=context_mask, x_cond=x_cond)
        keep = context_mask.to(x.dtype)[:, :, None]
        return x * 0 + (context * keep).sum((1, 2))[:, None] + x_cond.sum(1, keepdim=True)

    B, L, d = 3, 5, 4
    ctx = torch.randn(B, L, d, dtype=torch.float64)
    x_cond = torch.randn(B, 2, dtype=torch.float64)
    cond = {"context": ctx, "x_cond": x_cond}
    null = null_condition(cond)
    cfg = ClassifierFreeGuidance(net, 3.0, null)
    out = cfg(torch.zeros(B, 2, dtype=torch.float64), torch.ones(B, dtype=torch.float64), **cond)
    assert seen["x"].shape[0] == 2 * B
    assert seen["context_mask"][:B].all() and not seen["context_mask"][B:].any()
    assert torch.equal(seen["context"][B:], torch.zeros(B, L, d, dtype=torch.float64))
    assert torch.equal(seen["x_cond"][:B], seen["x_cond"][B:])  # image conditioning is not dropped
    expect = (3.0 * ctx.sum((1, 2))[:, None] + x_cond.sum(1, keepdim=True)).expand(B, 2)
    torch.testing.assert_close(out, expect)
    # a null value without the batch dimension is broadcast
    cfg2 = ClassifierFreeGuidance(net, 3.0, {"context": torch.zeros(L, d), "context_mask": False})
    torch.testing.assert_close(cfg2(torch.zeros(B, 2, dtype=torch.float64), torch.ones(B), **cond), expect)


def test_cfg_needs_num_classes_for_null_labels():
    with pytest.raises(ValueError, match="num_classes"):
        null_condition({"class_labels": torch.zeros(2, dtype=torch.long)})
    assert torch.equal(null_condition({"class_labels": torch.zeros(2, dtype=torch.long)}, 10)["class_labels"],
                       torch.full((2,), 10))


def test_cfg_passes_the_conditional_variance_through():
    sch = make_schedule("linear", 100)
    g = GaussianOracle(0.3, 0.5, schedule=sch, optimal_variance=True)
    x = torch.randn(4, 3, dtype=torch.float64)
    sigma = sch.sigmas[torch.tensor([3, 10, 50, 90])]
    out = denoise(ClassifierFreeGuidance(g, 2.0, {"class_labels": 4}), x, sigma, class_labels=torch.zeros(4).long())
    assert out.var_frac is not None
    torch.testing.assert_close(out.var_frac, g.denoise(x, sigma).var_frac)


@pytest.mark.parametrize("w", [1.0, 3.0])
@pytest.mark.parametrize("which", ["ddim", "ddpm"])
def test_guided_sampling_gives_only_the_asked_for_modes(oracle, w, which):
    B = 256
    g = torch.Generator().manual_seed(3)
    y = torch.arange(B) % NUM_CLASSES
    cfg = ClassifierFreeGuidance(oracle, w, {"class_labels": NUM_CLASSES})
    if which == "ddim":
        sigmas = karras(40)
        out = sample_ddim(cfg, sigmas[0] * torch.randn(B, 2, generator=g, dtype=torch.float64), sigmas,
                          cond={"class_labels": y})
    else:
        sigmas = discrete_sigmas(make_schedule("linear", 1000), 100)
        x = (1 + sigmas[0] ** 2).sqrt() * torch.randn(B, 2, generator=g, dtype=torch.float64)
        out = sample_ddpm(cfg, x, sigmas, generator=g, cond={"class_labels": y})
    got, dist = nearest_class(oracle, out)
    assert torch.equal(got, y)
    assert dist.max() < 5 * 0.15
    if w == 1.0:  # both modes of each class are visited
        k = ((out[:, None, :] - oracle.full.means[None]) ** 2).sum(-1).argmin(1)
        assert len(k.unique()) == 8


def test_unguided_sampling_covers_every_class(oracle):
    g = torch.Generator().manual_seed(4)
    sigmas = karras(40)
    y = torch.full((256,), NUM_CLASSES)
    cfg = ClassifierFreeGuidance(oracle, 0.0, {"class_labels": NUM_CLASSES})
    out = sample_ddim(cfg, sigmas[0] * torch.randn(256, 2, generator=g, dtype=torch.float64), sigmas,
                      cond={"class_labels": y})
    got, _ = nearest_class(oracle, out)
    assert torch.bincount(got, minlength=NUM_CLASSES).min() > 256 / NUM_CLASSES / 2


def test_classifier_guidance_at_scale_one_is_the_exact_conditional_denoiser(oracle):
    x, sigma, y = point(seed=5)
    guided = ClassifierGuidance(oracle, oracle.classifier, scale=1.0)
    torch.testing.assert_close(guided(x, sigma, class_labels=y), oracle(x, sigma, class_labels=y),
                               rtol=1e-9, atol=1e-9)
    assert torch.equal(ClassifierGuidance(oracle, oracle.classifier, 0.0)(x, sigma, class_labels=y), oracle(x, sigma))
    inf = torch.full_like(sigma, math.inf)
    torch.testing.assert_close(guided(x, inf, class_labels=y), oracle(x, inf))
    with pytest.raises(ValueError, match="class_labels"):
        guided(x, sigma)


def test_classifier_guided_sampling_gives_the_asked_for_modes(oracle):
    g = torch.Generator().manual_seed(6)
    sigmas = karras(40)
    y = torch.arange(128) % NUM_CLASSES
    guided = ClassifierGuidance(oracle, oracle.classifier, scale=2.0)
    out = sample_ddim(guided, sigmas[0] * torch.randn(128, 2, generator=g, dtype=torch.float64), sigmas,
                      cond={"class_labels": y})
    assert torch.equal(nearest_class(oracle, out)[0], y)


def test_thresholded_and_clipped_reuse_the_reverse_helpers():
    sch = make_schedule("linear", 100)
    g = GaussianOracle(0.0, 3.0, schedule=sch, optimal_variance=True)
    x = 4 * torch.randn(4, 1, 8, 8, dtype=torch.float64)
    sigma = sch.sigmas[torch.tensor([3, 10, 50, 90])]
    d = g(x, sigma)
    for comb, f in ((Thresholded(g, 0.9), lambda v: dynamic_threshold(v, 0.9)),
                    (Clipped(g, -0.5, 1.0), lambda v: clip_denoised(v, -0.5, 1.0))):
        out = denoise(comb, x, sigma)
        assert torch.equal(out.denoised, f(d)) and torch.equal(comb(x, sigma), f(d))
        torch.testing.assert_close(out.var_frac, g.denoise(x, sigma).var_frac)
    with pytest.raises(ValueError):
        Thresholded(g, 1.5)
    with pytest.raises(ValueError):
        Clipped(g, 1.0, -1.0)


def test_dynamic_thresholding_keeps_high_guidance_samples_in_range():
    ang = torch.arange(4, dtype=torch.float64) * (math.pi / 2)
    orc = ClassConditionalMixtureOracle(0.7 * torch.stack([ang.cos(), ang.sin()], 1), 0.05, labels=[0, 1, 2, 3])
    cfg = Thresholded(ClassifierFreeGuidance(orc, 8.0, {"class_labels": 4}), 0.995)
    seen = []
    g = torch.Generator().manual_seed(7)
    sigmas = karras(30)
    y = torch.arange(64) % 4
    out = sample_ddim(cfg, sigmas[0] * torch.randn(64, 2, generator=g, dtype=torch.float64), sigmas,
                      cond={"class_labels": y}, callback=lambda d: seen.append(d["denoised"].abs().max()))
    assert max(seen) <= 1.0 and out.abs().max() <= 1.0
    assert torch.equal(nearest_class(orc, out)[0], y)
