"""Noise schedules: validation, the float64 tables, each kind's definition, respacing and σ grids."""

from __future__ import annotations

import math

import pytest
import torch

from undiffuse.schedules import (
    SCHEDULES,
    Schedule,
    ScheduleError,
    betas_from_alpha_bar,
    discrete_sigmas,
    discrete_steps,
    make_schedule,
)

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64

KINDS = {
    "linear": {},
    "exponential": {},
    "constant": {"beta": 0.01},
    "cosine": {},
    "sigmoid": {},
    "betas": None,  # filled per T
    "alpha_bar": None,
}


def build(kind: str, T: int) -> Schedule:
    if kind == "betas":
        return make_schedule("betas", T, betas=torch.linspace(1e-3, 0.05, T, dtype=F64).tolist())
    if kind == "alpha_bar":
        ab = torch.exp(-torch.linspace(0.01, 8.0, T, dtype=F64))
        return make_schedule("alpha_bar", T, alpha_bar=ab)
    return make_schedule(kind, T, **KINDS[kind])


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"betas": [0.1, 0.0, 0.2]}, "> 0"),
        ({"betas": [0.1, -0.2]}, "> 0"),
        ({"betas": [0.1, 1.5]}, "≤ 1"),
        ({"betas": [0.1, 1.0, 0.5]}, "only the last step"),
        ({"betas": [0.1, 0.2, 1.0]}, "allow_zero_terminal_snr"),
        ({"betas": [0.1, float("nan")]}, "NaN"),
        ({"betas": []}, "T ≥ 1"),
    ],
)
def test_invalid_betas_are_refused_with_a_message(kwargs, message):
    with pytest.raises(ScheduleError, match=message):
        make_schedule("betas", **kwargs)


def test_zero_terminal_snr_only_with_the_flag():
    sch = make_schedule("betas", betas=[0.1, 0.2, 1.0], allow_zero_terminal_snr=True)
    assert sch.alpha_bar[-1] == 0
    assert math.isinf(sch.sigmas[-1])
    assert sch.logsnr[-1] == -math.inf


@pytest.mark.parametrize(
    "alpha_bar, message",
    [
        ([0.9, 0.95, 0.5], "strictly decreasing"),
        ([0.9, 0.9, 0.5], "strictly decreasing"),
        ([1.0, 0.5], "strictly decreasing"),
        ([0.9, float("nan")], "NaN"),
        ([0.9, 1.2], r"\[0, 1\]"),
        ([], "T ≥ 1"),
    ],
)
def test_invalid_alpha_bar_is_refused_with_a_message(alpha_bar, message):
    with pytest.raises(ScheduleError, match=message):
        make_schedule("alpha_bar", alpha_bar=alpha_bar)


@pytest.mark.parametrize("T", [0, -3, 2.5, True])
@pytest.mark.parametrize("kind", ["linear", "exponential", "constant", "cosine", "sigmoid"])
def test_T_below_one_or_not_an_integer_is_refused(kind, T):
    with pytest.raises(ScheduleError, match="integer ≥ 1"):
        make_schedule(kind, T)


def test_unknown_schedule_name_lists_the_choices():
    with pytest.raises(ScheduleError, match="cosine"):
        make_schedule("quadratic", 10)


def test_scaled_linear_range_outside_zero_one_is_refused():
    # DDPM's range scaled by 1000/T exceeds 1 for T = 10
    with pytest.raises(ScheduleError, match="≤ 1"):
        make_schedule("linear", 10, scale_to_T=True)


# --- tables ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 1000])
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_builds_and_its_tables_are_consistent(kind, T):
    sch = build(kind, T)
    b = sch.betas
    assert sch.T == T and b.dtype == F64 and b.shape == (T,)
    assert ((b > 0) & (b < 1)).all()
    for name in ("alphas", "alpha_bar", "alpha_bar_prev", "posterior_variance", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2", "sigmas", "logsnr"):
        tab = getattr(sch, name)
        assert tab.dtype == F64 and tab.shape == (T,), name
        assert torch.isfinite(tab).all(), name
    assert torch.equal(sch.alphas, 1 - b)
    # ᾱ_t = ∏_{s ≤ t} α_s, computed by a plain running product
    prod, ab = 1.0, []
    for a in (1 - b).tolist():
        prod *= a
        ab.append(prod)
    torch.testing.assert_close(sch.alpha_bar, torch.tensor(ab, dtype=F64), rtol=1e-12, atol=0)
    assert sch.alpha_bar_prev[0] == 1 and torch.equal(sch.alpha_bar_prev[1:], sch.alpha_bar[:-1])
    assert (sch.alpha_bar[1:] < sch.alpha_bar[:-1]).all()
    torch.testing.assert_close(sch.sigmas**2, (1 - sch.alpha_bar) / sch.alpha_bar, rtol=1e-12, atol=0)
    torch.testing.assert_close(sch.logsnr, -2 * sch.sigmas.log(), rtol=1e-10, atol=1e-12)
    abp, ab_ = sch.alpha_bar_prev, sch.alpha_bar
    torch.testing.assert_close(sch.posterior_variance, (1 - abp) / (1 - ab_) * b, rtol=1e-12, atol=0)
    torch.testing.assert_close(sch.posterior_mean_coef1, abp.sqrt() * b / (1 - ab_), rtol=1e-12, atol=0)
    torch.testing.assert_close(sch.posterior_mean_coef2, (1 - b).sqrt() * (1 - abp) / (1 - ab_), rtol=1e-12, atol=0)
    assert sch.posterior_variance[0] == 0
    # the clipped log variance replaces β̃_1 = 0 by β̃_2 (by β_1 when there is no second step)
    expected_first = sch.posterior_variance[1] if T > 1 else b[0]
    torch.testing.assert_close(sch.posterior_log_variance_clipped[0], expected_first.log())
    torch.testing.assert_close(sch.posterior_log_variance_clipped[1:], sch.posterior_variance[1:].log())
    assert torch.equal(sch.timesteps, torch.arange(1, T + 1))


def test_linear_and_exponential_follow_their_definitions():
    lin = make_schedule("linear", 1000)
    assert lin.betas[0] == pytest.approx(1e-4, rel=1e-12) and lin.betas[-1] == pytest.approx(0.02, rel=1e-12)
    torch.testing.assert_close(lin.betas.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=F64))
    scaled = make_schedule("linear", 4000, scale_to_T=True)
    assert scaled.betas[0] == pytest.approx(2.5e-5, rel=1e-12) and scaled.betas[-1] == pytest.approx(0.005, rel=1e-12)
    exp = make_schedule("exponential", 50, beta_start=1e-3, beta_end=0.1)
    ratio = exp.betas[1:] / exp.betas[:-1]
    torch.testing.assert_close(ratio, torch.full((49,), (0.1 / 1e-3) ** (1 / 49), dtype=F64))
    assert exp.betas[0] == pytest.approx(1e-3) and exp.betas[-1] == pytest.approx(0.1)
    assert torch.equal(make_schedule("constant", 7, beta=0.3).betas, torch.full((7,), 0.3, dtype=F64))


def test_cosine_follows_nichol_dhariwal_and_clips_beta_at_0_999():
    T, s = 1000, 0.008
    sch = make_schedule("cosine", T)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    for t in (1, 10, 500, 990):
        assert sch.alpha_bar[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-10)
    assert sch.betas.max().item() == 0.999  # β_T = 1 − ᾱ_T/ᾱ_{T−1} ≈ 1 is clipped
    assert sch.betas[-1].item() == 0.999
    unclipped = 1 - torch.tensor([f(t) / f(t - 1) for t in range(1, T + 1)], dtype=F64)
    keep = unclipped < 0.999
    torch.testing.assert_close(sch.betas[keep], unclipped[keep], rtol=1e-9, atol=1e-15)
    assert make_schedule("cosine", 1).betas.item() == 0.999


def test_sigmoid_follows_jabri_et_al():
    T, start, end, tau = 100, -3.0, 3.0, 0.7
    sch = make_schedule("sigmoid", T, start=start, end=end, tau=tau)
    sg = lambda z: 1 / (1 + math.exp(-z))
    v = lambda u: (sg(end / tau) - sg((u * (end - start) + start) / tau)) / (sg(end / tau) - sg(start / tau))
    expected = torch.tensor([min(1 - v(t / T) / v((t - 1) / T), 0.999) for t in range(1, T + 1)], dtype=F64)
    torch.testing.assert_close(sch.betas, expected, rtol=1e-9, atol=1e-15)
    assert sch.betas[-1].item() == 0.999


def test_user_tables_round_trip():
    ab = torch.tensor([0.99, 0.9, 0.5, 0.1], dtype=F64)
    torch.testing.assert_close(make_schedule("alpha_bar", alpha_bar=ab).alpha_bar, ab, rtol=1e-14, atol=0)
    betas = [0.1, 0.2, 0.3]
    torch.testing.assert_close(make_schedule("betas", betas=betas).betas, torch.tensor(betas, dtype=F64))
    assert set(SCHEDULES) == set(KINDS)


# --- respacing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "cosine", "sigmoid"])
def test_respacing_keeps_alpha_bar_at_the_kept_steps(kind):
    sch = build(kind, 1000)
    keep = torch.tensor([1, 2, 17, 250, 251, 600, 999, 1000])
    r = sch.respace(keep)
    assert r.T == len(keep)
    torch.testing.assert_close(r.alpha_bar, sch.alpha_bar[keep - 1], rtol=1e-10, atol=0)
    torch.testing.assert_close(r.sigmas, sch.sigmas[keep - 1], rtol=1e-10, atol=0)
    assert torch.equal(r.timesteps, keep)
    # respacing a respaced schedule composes: keep rows 2 and 5 of it
    rr = r.respace([2, 5])
    assert torch.equal(rr.timesteps, keep[[1, 4]])
    torch.testing.assert_close(rr.alpha_bar, sch.alpha_bar[keep[[1, 4]] - 1], rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", ["linear", "exponential", "cosine", "sigmoid"])
def test_respacing_all_steps_gives_the_original(kind):
    sch = build(kind, 1000)
    r = sch.respace(range(1, 1001))
    torch.testing.assert_close(r.betas, sch.betas, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(r.alpha_bar, sch.alpha_bar, rtol=1e-12, atol=0)
    assert torch.equal(r.timesteps, sch.timesteps)
    assert sch.spaced(1000).timesteps.tolist() == list(range(1, 1001))


def test_spaced_ends_at_T_and_invalid_respacing_is_refused(linear1000):
    r = linear1000.spaced(10)
    assert r.T == 10 and r.timesteps[-1] == 1000 and r.timesteps[0] == 1
    assert (r.timesteps.diff() > 0).all()
    for bad, msg in [([], "at least one"), ([0, 5], "1..1000"), ([5, 1001], "1..1000"), ([5, 5], "increasing")]:
        with pytest.raises(ScheduleError, match=msg):
            linear1000.respace(bad)
    with pytest.raises(ScheduleError, match="1 ≤ n"):
        linear1000.spaced(0)


def test_betas_from_alpha_bar_inverts_the_cumulative_product():
    b = torch.linspace(0.01, 0.5, 20, dtype=F64)
    torch.testing.assert_close(betas_from_alpha_bar(torch.cumprod(1 - b, 0)), b, rtol=1e-12, atol=1e-15)
    assert betas_from_alpha_bar(torch.tensor([0.5, 1e-9], dtype=F64), max_beta=0.999)[-1] == 0.999


# --- σ grids and t(σ) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", ["uniform", "trailing", "leading"])
def test_discrete_steps_and_sigmas(linear1000, spacing):
    steps = discrete_steps(1000, 10, spacing)
    assert len(steps) == 10 and (steps.diff() > 0).all() and steps.min() >= 1 and steps.max() <= 1000
    if spacing != "leading":
        assert steps[-1] == 1000
    sig = discrete_sigmas(linear1000, 10, spacing)
    assert sig[-1] == 0 and (sig.diff() < 0).all()
    torch.testing.assert_close(sig[:-1], linear1000.sigmas[steps - 1].flip(0), rtol=0, atol=0)
    full = discrete_sigmas(linear1000)
    assert len(full) == 1001 and torch.equal(full[:-1], linear1000.sigmas.flip(0))
    with pytest.raises(ScheduleError, match="1..1000"):
        discrete_steps(1000, 0)


def test_sigma_to_t_is_exact_on_the_table_and_monotone_between(linear1000):
    t = linear1000.sigma_to_t(linear1000.sigmas)
    torch.testing.assert_close(t, torch.arange(1, 1001, dtype=F64), rtol=0, atol=1e-9)
    r = linear1000.respace([1, 500, 1000])
    torch.testing.assert_close(r.sigma_to_t(r.sigmas), torch.tensor([1.0, 500.0, 1000.0], dtype=F64), rtol=0, atol=1e-9)
    mid = torch.sqrt(linear1000.sigmas[99] * linear1000.sigmas[100])  # geometric midpoint of σ_100, σ_101
    assert linear1000.sigma_to_t(mid.reshape(1)).item() == pytest.approx(100.5, abs=1e-9)
