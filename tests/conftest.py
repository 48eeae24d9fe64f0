"""Shared fixtures for the math tests: float64 schedules and seeded generators."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from undiffuse.schedules import make_schedule


@pytest.fixture(scope="session")
def linear1000():
    """DDPM's schedule: linear β from 1e-4 to 0.02 over T = 1000 steps."""
    return make_schedule("linear", 1000)


@pytest.fixture
def gen():
    """A factory of seeded CPU generators: gen(seed)."""
    return lambda seed=0: torch.Generator().manual_seed(seed)


def within(estimate, exact, se, k: float = 5.0) -> bool:
    """|estimate − exact| ≤ k standard errors (elementwise, all)."""
    f64 = lambda v: torch.as_tensor(v, dtype=torch.float64)
    return bool((f64(estimate) - f64(exact)).abs().le(k * f64(se)).all())


@pytest.fixture
def single_thread():
    """Run a test on one intra-op thread. The math tests use small tensors; on shared, contended CPUs
    torch's OpenMP threads spin against each other and make such ops up to 100× slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def one_thread_module():
    """``single_thread`` for a whole module (use with ``pytestmark = pytest.mark.usefixtures(...)``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# a digits run small enough for any test that needs a trained run: 4 steps, checkpoints at steps 2 and 4
TINY_RUN = ["train.batch_size=16", "train.ckpt_every=2", "train.val_every=0", "train.sample_every=0",
            "data.limit=128", "train.log_every=2"]  # fmt: skip


def tiny_config(*overrides: str):
    """The digits-tiny preset with :data:`TINY_RUN` and ``overrides`` applied."""
    from undiffuse.config import apply_overrides, get_preset

    return apply_overrides(get_preset("digits-tiny"), [*TINY_RUN, *overrides])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A trained :func:`tiny_config` run of 4 steps (one per test module; copy it before changing it)."""
    from undiffuse.training import train

    d = tmp_path_factory.mktemp("tiny") / "run"
    train(tiny_config(), d, steps=4, progress=False)
    return d
