"""Shared fixtures for the math tests: float64 schedules and seeded generators."""

from __future__ import annotations

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
