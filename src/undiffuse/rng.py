"""Randomness and devices on the ground floor: seeds derived from keys, and one generator per sample.

Every random quantity in undiffuse is a function of a seed and of *where it is used*, never of a
running stream: ``derive_seed(seed, "sample", i)`` seeds sample i's generator, so sample i depends
only on (seed, i) — not on n, the batch size, the device count or the other indices drawn (EDM's
``StackedRandomGenerator`` idea, one ``torch.Generator`` per sample). Training keys its draws to
(seed, step) the same way (:mod:`undiffuse.training.keyed`).

This module imports only torch and the standard library; every other package may import it.
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Iterator, Optional, Sequence, Union

import torch

__all__ = ["pick_device", "torch_threads", "derive_seed", "generator", "sample_generators", "randn_from", "starting_noise"]

_MASK = (1 << 64) - 1
Device = Union[torch.device, str]


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def derive_seed(*keys: Union[int, str]) -> int:
    """A 63-bit seed that mixes ``keys`` (ints or strings) with SplitMix64; stable across runs and
    platforms (no Python ``hash``)."""
    h = 0
    for k in keys:
        v = zlib.crc32(k.encode()) if isinstance(k, str) else int(k) & _MASK
        h = _splitmix64(h ^ v)
    return h >> 1


def generator(seed: int, device: Device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))


def sample_generators(seed: Union[int, Sequence[int]], indices: Sequence[int], device: Device = "cpu",
                      stream: str = "sample") -> list[torch.Generator]:  # fmt: skip
    """One generator per sample index i, seeded from (seed, ``stream``, i); ``seed`` may also give one seed
    per index (rows of several requests sharing a batch: row k is then keyed to (seed[k], indices[k]))."""
    seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed] * len(indices)
    if len(seeds) != len(indices):
        raise ValueError(f"{len(seeds)} seeds for {len(indices)} indices — give one seed, or one per index")
    return [generator(derive_seed(s, stream, int(i)), device) for s, i in zip(seeds, indices)]


def randn_from(gens: Sequence[torch.Generator], shape: Sequence[int], device: Device = "cpu",
               dtype: Optional[torch.dtype] = None) -> torch.Tensor:  # fmt: skip
    """Standard normal noise [len(gens), *shape]: row i drawn from ``gens[i]`` alone."""
    return torch.stack([torch.randn(tuple(shape), generator=g, device=g.device, dtype=dtype) for g in gens]).to(device)


def starting_noise(gens: Sequence[torch.Generator], shape: Sequence[int], sigma_max: Union[float, torch.Tensor],
                   device: Device = "cpu") -> torch.Tensor:  # fmt: skip
    """The sampler's starting state x = σ_max·n, n ~ N(0, I), row i from ``gens[i]``.

    In σ-space x = x0 + σ·n; at σ_max = ∞ (zero terminal SNR) the state holds n = lim x/σ itself.
    """
    noise = randn_from(gens, shape, device)
    s = float(sigma_max)
    return noise if s == float("inf") else noise * s


def pick_device(device: Optional[str | torch.device] = None) -> torch.device:
    """``device`` if given, else cuda, then mps, then cpu."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextlib.contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` (None: unchanged) for the duration."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
