"""σ grids for samplers: karras (ρ = 7), log-SNR-uniform, and make_sigmas over discrete schedules."""

from __future__ import annotations

import math

import pytest
import torch

from undiffuse.schedules import ScheduleError, make_schedule
from undiffuse.schedules.grids import discrete_sigmas, karras_sigmas, logsnr_sigmas, make_sigmas

F64 = torch.float64


@pytest.mark.parametrize("n", [1, 2, 10, 37])
def test_karras_endpoints_formula_and_monotone(n):
    sig = karras_sigmas(n, 0.002, 80.0, rho=7.0)
    assert sig.dtype == F64 and len(sig) == n + 1 and sig[-1] == 0 and sig[0] == 80.0
    assert (sig.diff() < 0).all()
    if n > 1:
        assert sig[-2] == 0.002
        i = torch.arange(n, dtype=F64)
        expect = (80 ** (1 / 7) + i / (n - 1) * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7  # EDM Eq. 5
        torch.testing.assert_close(sig[:-1], expect, rtol=1e-13, atol=0)
        # ρ-warped: σ^{1/ρ} is linear in the step index
        root = sig[:-1] ** (1 / 7)
        torch.testing.assert_close(root.diff(), root.diff()[:1].expand(n - 1), rtol=1e-9, atol=0)


def test_logsnr_grid_is_uniform_in_log_snr():
    sig = logsnr_sigmas(12, 0.01, 50.0)
    assert len(sig) == 13 and sig[-1] == 0 and sig[0] == 50.0 and sig[-2] == 0.01
    logsnr = -2 * sig[:-1].log()
    steps = logsnr.diff()
    assert (steps > 0).all()
    torch.testing.assert_close(
        steps, torch.full_like(steps, 2 * math.log(50 / 0.01) / 11), rtol=1e-12, atol=0
    )


def test_trailing_starts_at_T_and_leading_at_1(linear1000):
    trailing = make_sigmas(linear1000, 10, "trailing")
    assert trailing[0] == linear1000.sigmas[-1] and trailing[-1] == 0
    leading = make_sigmas(linear1000, 10, "leading")
    assert leading[-2] == linear1000.sigmas[0] and leading[0] < linear1000.sigmas[-1]
    assert torch.equal(make_sigmas(linear1000, 10, "uniform"), discrete_sigmas(linear1000, 10, "uniform"))


@pytest.mark.parametrize("grid", ["karras", "logsnr"])
def test_continuous_grids_on_a_discrete_schedule_stay_in_its_range(linear1000, grid):
    lo, hi = float(linear1000.sigmas[0]), float(linear1000.sigmas[-1])
    sig = make_sigmas(linear1000, 20, grid)
    assert sig[0] == pytest.approx(hi, rel=1e-15) and sig[-2] == pytest.approx(lo, rel=1e-15)
    clamped = make_sigmas(linear1000, 20, grid, sigma_min=1e-6, sigma_max=1e4)
    torch.testing.assert_close(clamped, sig, rtol=0, atol=0)
    inside = make_sigmas(linear1000, 20, grid, sigma_min=0.1, sigma_max=10.0)
    assert inside[0] == 10.0 and inside[-2] == 0.1


def test_zero_terminal_snr_schedule_and_errors():
    ab = torch.cat([torch.linspace(0.99, 0.01, 99, dtype=F64), torch.zeros(1, dtype=F64)])
    zsnr = make_schedule("alpha_bar", alpha_bar=ab, allow_zero_terminal_snr=True)
    assert math.isinf(make_sigmas(zsnr, 5, "trailing")[0])
    k = make_sigmas(zsnr, 5, "karras")
    assert torch.isfinite(k).all() and k[0] == pytest.approx(float(zsnr.sigmas[-2]), rel=1e-15)
    with pytest.raises(ScheduleError, match="sigma_min and sigma_max"):
        make_sigmas(None, 5, "karras")
    with pytest.raises(ScheduleError, match="discrete schedule"):
        make_sigmas(None, 5, "trailing", sigma_min=0.1, sigma_max=1.0)
    with pytest.raises(ScheduleError, match="unknown grid"):
        make_sigmas(None, 5, "cosine", sigma_min=0.1, sigma_max=1.0)
    with pytest.raises(ScheduleError, match="σ_min ≤ σ_max"):
        karras_sigmas(5, 1.0, 0.1)
