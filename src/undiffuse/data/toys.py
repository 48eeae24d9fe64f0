"""2-D toy distributions, in data units, with fixed train/test sets.

- ``25gaussians``: 25 equal-weight Gaussians with means on {−4, −2, 0, 2, 4}², σ = 0.05, the mode
  coverage benchmark of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018).
- ``8gaussians``: 8 Gaussians with means on a circle of radius 2, σ = 0.02.
- ``moons``: two interleaved half circles (as ``sklearn.datasets.make_moons``, noise 0.05), centred and
  scaled to unit RMS standard deviation; label = which moon.
- ``swissroll``: the 2-D swiss roll (x, z of ``sklearn.datasets.make_swiss_roll``, noise 0.5) scaled to
  unit-ish standard deviation; no labels.

The mixtures have exact denoisers (a Gaussian mixture convolved with N(0, σ²I) stays one), which
:func:`toy_modes` exposes for oracles and mode-coverage metrics. All sampling goes through a
``torch.Generator``, so a seed fixes the points on every platform.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from undiffuse.data.errors import DataError

__all__ = ["TOYS", "TOY_TEST_SEED", "TOY_TEST_SIZE", "TOY_TRAIN_SEED", "TOY_TRAIN_SIZE",
           "load_toy", "sample_toy", "toy_modes"]  # fmt: skip

TOYS = frozenset({"25gaussians", "8gaussians", "moons", "swissroll"})
TOY_TRAIN_SIZE, TOY_TRAIN_SEED = 100_000, 0
TOY_TEST_SIZE, TOY_TEST_SEED = 20_000, 1

_MOONS_NOISE, _MOONS_SHIFT, _MOONS_SCALE = 0.05, (0.5, 0.25), 1 / 0.7
_SWISS_NOISE, _SWISS_SCALE = 0.5, 1 / 6.8


def _check(name: str) -> None:
    if name not in TOYS:
        raise DataError(f"unknown toy {name!r}; valid: {', '.join(sorted(TOYS))}")


def toy_modes(name: str) -> tuple[torch.Tensor, float]:
    """(means [K, 2] float32, σ) of a Gaussian-mixture toy; equal weights 1/K."""
    _check(name)
    if name == "25gaussians":
        grid = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
        means = torch.cartesian_prod(grid, grid)  # [25, 2], row k = (grid[k // 5], grid[k % 5])
        return means, 0.05
    if name == "8gaussians":
        angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        means = 2.0 * torch.stack([angle.cos(), angle.sin()], dim=1)  # [8, 2]
        return means.float(), 0.02
    raise DataError(f"toy {name!r} is not a Gaussian mixture (mixtures: 25gaussians, 8gaussians)")


def _randn(n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    return torch.randn(n, 2, generator=generator, dtype=torch.float64)


def sample_toy(
    name: str, n: int, generator: Optional[torch.Generator] = None
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """n points of a toy: x float32 [n, 2] and labels int64 [n] (mode index for the mixtures, moon
    index for ``moons``) or None (``swissroll``)."""
    _check(name)
    if name in ("25gaussians", "8gaussians"):
        means, std = toy_modes(name)
        y = torch.randint(len(means), (n,), generator=generator)
        x = means.double()[y] + std * _randn(n, generator)
        return x.float(), y
    if name == "moons":
        y = torch.randint(2, (n,), generator=generator)
        t = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        upper = torch.stack([t.cos(), t.sin()], dim=1)
        lower = torch.stack([1 - t.cos(), 0.5 - t.sin()], dim=1)
        x = torch.where(y[:, None] == 0, upper, lower) + _MOONS_NOISE * _randn(n, generator)
        return ((x - torch.tensor(_MOONS_SHIFT, dtype=torch.float64)) * _MOONS_SCALE).float(), y
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
    x = torch.stack([t * t.cos(), t * t.sin()], dim=1) + _SWISS_NOISE * _randn(n, generator)
    return (x * _SWISS_SCALE).float(), None


def load_toy(name: str, split: str = "train") -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The fixed toy sets: train = 100,000 points from seed 0, test = 20,000 points from seed 1."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}: use 'train' or 'test'")
    n, seed = (TOY_TRAIN_SIZE, TOY_TRAIN_SEED) if split == "train" else (TOY_TEST_SIZE, TOY_TEST_SEED)
    return sample_toy(name, n, torch.Generator().manual_seed(seed))
