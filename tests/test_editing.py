"""Editing (inpainting/RePaint, SDEdit, DDIM inversion, SR condition) against the Gaussian-mixture oracle."""

import math

import pytest
import torch

from undiffuse.diffusion.oracles import GaussianMixtureOracle
from undiffuse.editing import (
    ddim_invert,
    ddim_reconstruct,
    downsample,
    inpaint,
    noised,
    repaint_moves,
    resolve_sampler,
    sampler_step,
    sdedit,
    sdedit_start,
    upsample_condition,
)
from undiffuse.samplers import sample_ddim, sample_ddpm
from undiffuse.schedules import discrete_sigmas, make_schedule

# three modes in 4-D, seen as 1×2×2 images; the top row (known) tells the modes apart
MEANS = torch.tensor([[2.0, 2, 2, 2], [-2, -2, -2, -2], [2, -2, 2, -2]], dtype=torch.float64)
TOP_ROW = torch.tensor([[0.0, 0], [1, 1]], dtype=torch.float64).reshape(1, 1, 2, 2)  # 1 = generate


def karras(n, smin=0.01, smax=80.0, rho=7.0):
    r = torch.linspace(0, 1, n, dtype=torch.float64)
    s = (smax ** (1 / rho) + r * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


def images(oracle, n, seed):
    return oracle.sample(n, torch.Generator().manual_seed(seed)).reshape(n, 1, 2, 2)


def mode_of(x, dims=slice(None)):
    x = x.reshape(x.shape[0], -1)[:, dims]
    return ((x[:, None, :] - MEANS[None, :, dims]) ** 2).sum(-1).argmin(1)


def _registry_names():
    try:
        from undiffuse.samplers.registry import SAMPLERS
    except ImportError:
        return ["ddim", "ddpm"]
    return list(SAMPLERS)


@pytest.fixture(scope="module")
def oracle():
    return GaussianMixtureOracle(MEANS, 0.5)


def test_resolve_sampler(oracle):
    assert resolve_sampler(sample_ddpm) is sample_ddpm
    sigmas = karras(5)
    x = sigmas[0] * torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(resolve_sampler("ddim")(oracle, x, sigmas), sample_ddim(oracle, x, sigmas))
    with pytest.raises(ValueError, match="unknown sampler"):
        resolve_sampler("nope")


@pytest.mark.parametrize("which", [n for n in _registry_names() if n in ("ddim", "ddpm", "euler_ancestral", "heun")])
def test_sampler_step_is_the_samplers_own_step(oracle, which):
    """One step σ_i → σ_{i+1} equals step i of a full run given the same noise."""
    sigmas = discrete_sigmas(make_schedule("linear", 1000), 8)
    x = images(oracle, 16, 0) + sigmas[0] * torch.randn(16, 1, 2, 2, dtype=torch.float64)
    states = []
    fn = resolve_sampler(which)
    fn(oracle, x, sigmas, generator=torch.Generator().manual_seed(1), callback=lambda d: states.append(d["x"]))
    g = torch.Generator().manual_seed(1)
    y = x
    for i in range(len(sigmas) - 1):
        y = sampler_step(which, oracle, y, sigmas[i], sigmas[i + 1], generator=g)
        torch.testing.assert_close(y, states[i], rtol=1e-10, atol=1e-10)


def test_noised():
    x0 = torch.randn(3, 4, dtype=torch.float64)
    assert torch.equal(noised(x0, 0.0), x0)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(noised(x0, 2.0, g1), x0 + 2.0 * torch.randn(3, 4, generator=g2, dtype=torch.float64))
    n = noised(x0, math.inf, torch.Generator().manual_seed(0))
    assert torch.isfinite(n).all() and n.std() > 0.5


def test_repaint_moves():
    assert repaint_moves(4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    moves = repaint_moves(6, resample=3, jump=2)
    assert moves[:3] == [(0, 1), (1, 2), (2, 0)]
    down = [m for m in moves if m[1] > m[0]]
    up = [m for m in moves if m[1] < m[0]]
    assert len(up) == 2 * 2 and all(p - q == 2 for p, q in up)  # positions 2 and 4, R − 1 = 2 jumps each
    assert len(down) == 6 + len(up) * 2 and moves[-1] == (5, 6)
    for (_, q), (p, _) in zip(moves, moves[1:]):
        assert q == p  # a connected walk
    with pytest.raises(ValueError):
        repaint_moves(4, resample=0)


@pytest.mark.parametrize("which,resample,jump", [("ddim", 1, 1), ("ddpm", 1, 1), ("ddim", 3, 2)])
def test_inpainting_keeps_the_known_region_exactly(oracle, which, resample, jump):
    img = images(oracle, 64, 1)
    sigmas = discrete_sigmas(make_schedule("linear", 1000), 20)
    out = inpaint(oracle, img, TOP_ROW, sigmas, sampler=which, generator=torch.Generator().manual_seed(2),
                  resample=resample, jump=jump)
    keep = TOP_ROW.expand_as(img) == 0
    assert torch.equal(out[keep], img[keep])
    assert (out[~keep] - img[~keep]).abs().min() > 0  # the unknown region is generated, not copied
    assert (out[~keep] - img[~keep]).abs().mean() > 0.2


@pytest.mark.parametrize("which", _registry_names())
def test_every_sampler_inpaints_and_edits(oracle, which):
    img = images(oracle, 64, 14)
    sigmas = karras(12)
    out = inpaint(oracle, img, TOP_ROW, sigmas, sampler=which, generator=torch.Generator().manual_seed(0),
                  resample=2)
    assert torch.equal(out[..., 0, :], img[..., 0, :])
    assert (mode_of(out) == mode_of(img, slice(0, 2))).double().mean() > 0.8
    edited = sdedit(oracle, img, 0.3, sigmas, sampler=which, generator=torch.Generator().manual_seed(0))
    assert (mode_of(edited) == mode_of(img)).double().mean() > 0.9


def test_inpainting_harmonises_and_resampling_helps(oracle):
    """The filled bottom row should come from the mode the known top row belongs to; RePaint's
    resampling makes that more reliable than plain replacement (Lugmayr et al. 2022, Sec. 4.2)."""
    img = images(oracle, 256, 3)
    sigmas = karras(25)
    known = mode_of(img, slice(0, 2))

    def agreement(resample):
        out = inpaint(oracle, img, TOP_ROW, sigmas, generator=torch.Generator().manual_seed(4), resample=resample)
        return (mode_of(out) == known).double().mean().item()

    plain, repaint = agreement(1), agreement(5)
    assert plain > 0.8 and repaint > 0.97 and repaint > plain


def test_inpainting_from_infinite_sigma(oracle):
    img = images(oracle, 8, 5)
    sigmas = torch.cat([torch.tensor([math.inf], dtype=torch.float64), karras(10)])
    out = inpaint(oracle, img, TOP_ROW, sigmas, generator=torch.Generator().manual_seed(0), resample=2)
    assert torch.isfinite(out).all() and torch.equal(out[..., 0, :], img[..., 0, :])


def test_sdedit_strength_zero_returns_the_input(oracle):
    img = images(oracle, 8, 6)
    assert torch.equal(sdedit(oracle, img, 0.0, karras(20)), img)
    assert sdedit_start(karras(20), 0.0) == 20 and sdedit_start(karras(20), 1.0) == 0
    assert sdedit_start(karras(20), 0.5) == 10
    with pytest.raises(ValueError):
        sdedit(oracle, img, 1.5, karras(20))


@pytest.mark.parametrize("which", ["ddim", "ddpm"])
def test_sdedit_strength_one_is_pure_sampling(oracle, which):
    sigmas = torch.cat([torch.tensor([math.inf], dtype=torch.float64), karras(20)])
    a, b = images(oracle, 32, 7), -images(oracle, 32, 8) * 3
    out_a = sdedit(oracle, a, 1.0, sigmas, sampler=which, generator=torch.Generator().manual_seed(9))
    out_b = sdedit(oracle, b, 1.0, sigmas, sampler=which, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    pure = resolve_sampler(which)(oracle, torch.randn(32, 1, 2, 2, generator=g, dtype=torch.float64), sigmas,
                                  generator=g)
    assert torch.equal(out_a, out_b)
    torch.testing.assert_close(out_a, pure)


def test_sdedit_trades_faithfulness_for_strength(oracle):
    img = images(oracle, 256, 10)
    sigmas = karras(30)
    start = mode_of(img)
    kept = {}
    for strength in (0.3, 0.6, 1.0):
        out = sdedit(oracle, img, strength, sigmas, generator=torch.Generator().manual_seed(11))
        kept[strength] = (mode_of(out) == start).double().mean().item()
    assert kept[0.3] > 0.99 and kept[1.0] < 0.6 and kept[0.3] >= kept[0.6] >= kept[1.0]


def test_ddim_inversion_reconstructs_with_shrinking_error():
    oracle = GaussianMixtureOracle(MEANS, 1.0)
    x0 = images(oracle, 128, 12)
    err = {}
    for n in (10, 20, 50, 100):
        sigmas = karras(n)
        latent = ddim_invert(oracle, x0, sigmas)
        assert latent.std() > 10  # it reached σ_max
        rec = ddim_reconstruct(oracle, latent, sigmas)
        err[n] = (rec - x0).pow(2).mean().sqrt().item()
    assert err[10] > err[20] > err[50] > err[100]
    assert err[100] < err[10] / 5  # first order: error ∝ 1/N
    assert err[100] < 0.2


def test_ddim_inversion_to_infinite_sigma_and_back():
    oracle = GaussianMixtureOracle(MEANS, 1.0)
    x0 = images(oracle, 64, 13)
    sigmas = torch.cat([torch.tensor([math.inf], dtype=torch.float64), karras(200)])
    latent = ddim_invert(oracle, x0, sigmas)
    assert latent.std() < 2  # the state at σ = ∞ holds unit noise
    rec = ddim_reconstruct(oracle, latent, sigmas)
    assert (rec - x0).pow(2).mean().sqrt() < 0.2


def test_upsample_condition():
    low = torch.arange(16.0).reshape(1, 1, 4, 4)
    up = upsample_condition(low, 8, mode="nearest")
    assert up.shape == (1, 1, 8, 8) and torch.equal(up[..., ::2, ::2], low)
    bil = upsample_condition(low, (8, 8))
    assert bil.shape == (1, 1, 8, 8) and torch.allclose(downsample(bil, 4)[..., 1:3, 1:3], low[..., 1:3, 1:3])
    assert torch.equal(downsample(torch.ones(1, 1, 28, 28), 14), torch.ones(1, 1, 14, 14))
    assert upsample_condition(torch.randn(2, 1, 14, 14), 28, mode="bicubic").shape == (2, 1, 28, 28)
    with pytest.raises(ValueError):
        upsample_condition(torch.randn(1, 14, 14), 28)
