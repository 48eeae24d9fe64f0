"""The one sampling driver and the sampler registry.

"Sample i depends only on (seed, i)" is a property of :func:`undiffuse.samplers.driver.drive` alone:
every caller (api.sample, evaluation, streaming to disk, baselines, the diffusers peer) inherits it.
"""

import pytest
import torch

from undiffuse.diffusion.oracles import GaussianMixtureOracle
from undiffuse.errors import ConfigError
from undiffuse.rng import derive_seed, sample_generators, starting_noise
from undiffuse.samplers import registry
from undiffuse.samplers.driver import drive, registry_batch
from undiffuse.schedules import make_schedule
from undiffuse.schedules.grids import make_sigmas

ORACLE = GaussianMixtureOracle(torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]]), s=0.3)
SIGMAS = make_sigmas(make_schedule("linear", 1000), 8, "trailing")


def _draw(sampler, indices, batch_size, seed=7, **opts):
    run, counted = registry_batch(sampler, ORACLE, SIGMAS, **opts)
    return drive(run, (2,), indices, seed=seed, sigma_max=SIGMAS[0], batch_size=batch_size, counted=counted)


@pytest.mark.parametrize("sampler,opts", [("ddpm", {}), ("ddim", {"eta": 1.0}), ("euler_ancestral", {}),
                                          ("heun", {"s_churn": 5.0}), ("dpmpp_2m", {})])
def test_sample_i_depends_only_on_seed_and_i(sampler, opts):
    full = _draw(sampler, 10, batch_size=4, **opts)
    other_batching = _draw(sampler, 10, batch_size=3, **opts)
    picked = _draw(sampler, [9, 2, 5], batch_size=2, **opts)
    other_seed = _draw(sampler, 10, batch_size=4, seed=8, **opts)
    torch.testing.assert_close(other_batching.x, full.x, rtol=0, atol=1e-6)
    torch.testing.assert_close(picked.x, full.x[[9, 2, 5]], rtol=0, atol=1e-6)
    assert (other_seed.x - full.x).abs().min() > 0  # a different seed moves every sample
    assert full.n == 10 and full.nfe == registry.expected_nfe(sampler, SIGMAS)


def test_driver_equals_the_sampler_called_directly():
    """The driver adds nothing but the batching: its output is the sampler's on the same noise."""
    gens = sample_generators(7, range(5))
    x = starting_noise(gens, (2,), SIGMAS[0])
    direct = registry.sample("ddpm", ORACLE, x, SIGMAS, generator=gens)  # the same streams continue
    torch.testing.assert_close(_draw("ddpm", 5, batch_size=5).x, direct.float())
    assert gens[0].initial_seed() == derive_seed(7, "sample", 0)
    # sample i's sampler noise continues the stream that drew its x_T (one generator per sample)
    fresh = registry.sample("ddpm", ORACLE, x, SIGMAS, generator=sample_generators(7, range(5)))
    assert (fresh.float() - direct.float()).abs().max() > 0.1


def test_writer_streams_every_batch_in_order_and_keeps_nothing():
    got = []
    run, _ = registry_batch("ddim", ORACLE, SIGMAS)
    out = drive(run, (2,), 7, seed=0, sigma_max=SIGMAS[0], batch_size=3, write=lambda s, x: got.append((s, len(x))))
    assert out.x is None and got == [(0, 3), (3, 3), (6, 1)]


def test_condition_rows_follow_their_samples():
    seen = []

    def run(x, gens, cond, offset):
        seen.append((offset, cond["class_labels"].tolist(), cond["scale"]))
        return x

    labels = torch.arange(5) * 10
    drive(run, (2,), 5, seed=0, sigma_max=1.0, batch_size=2, cond={"class_labels": labels, "scale": 3.0})
    assert seen == [(0, [0, 10], 3.0), (2, [20, 30], 3.0), (4, [40], 3.0)]


def test_registry_declares_options_and_refuses_the_undeclared():
    assert registry.resolve_options("ddim", eta=0.3, var_type=None) == {"eta": 0.3}
    with pytest.raises(ConfigError, match="sampler 'dpmpp_2m' has no option eta"):
        registry.resolve_options("dpmpp_2m", eta=0.3)
    with pytest.raises(ConfigError, match="unknown sampler 'nope'"):
        registry.spec("nope")
    import inspect

    for name, spec in registry.SPECS.items():  # every declared option is a real keyword of the function
        params = inspect.signature(spec.fn).parameters
        assert set(spec.options) <= set(params), name
        assert all(params[k].default == v for k, v in spec.options.items()), name
