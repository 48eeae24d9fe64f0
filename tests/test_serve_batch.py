"""Dynamic batching is exact: rows of several requests (different seeds) share network calls through
:func:`undiffuse.samplers.driver.drive` with one seed per row, and each row is what it is alone."""

from __future__ import annotations

import pytest
import torch

from undiffuse.diffusion.oracles import GaussianMixtureOracle
from undiffuse.samplers.driver import drive, registry_batch
from undiffuse.schedules import make_schedule
from undiffuse.schedules.grids import make_sigmas

ORACLE = GaussianMixtureOracle(torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]]), s=0.3)
SIGMAS = make_sigmas(make_schedule("linear", 1000), 8, "trailing")


def _draw(indices, seed, sampler="ddpm", batch_size=64):
    run, counted = registry_batch(sampler, ORACLE, SIGMAS)
    return drive(run, (2,), indices, seed=seed, sigma_max=SIGMAS[0], batch_size=batch_size, counted=counted).x


@pytest.mark.parametrize("sampler", ["ddpm", "euler_ancestral", "dpmpp_2m"])
def test_rows_keyed_to_their_own_seed_equal_each_request_alone(sampler):
    a, b = _draw(3, seed=11, sampler=sampler), _draw(5, seed=12, sampler=sampler)
    mixed = _draw([0, 1, 2, 0, 1, 2, 3, 4], seed=[11] * 3 + [12] * 5, sampler=sampler)
    assert torch.equal(mixed[:3], a) and torch.equal(mixed[3:], b)
    split = _draw([0, 1, 2, 0, 1, 2, 3, 4], seed=[11] * 3 + [12] * 5, sampler=sampler, batch_size=3)
    torch.testing.assert_close(split, mixed, rtol=0, atol=1e-6)  # per-row seeds follow the batches


def test_one_seed_per_index_is_required():
    with pytest.raises(ValueError, match="seeds for"):
        _draw([0, 1, 2], seed=[1, 2])
