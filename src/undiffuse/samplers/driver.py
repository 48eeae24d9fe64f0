"""The one sampling driver: (seed, i) → generator → x_T → sampler → batches → outputs.

Every place that draws samples — :func:`undiffuse.api.sample`, evaluation, the streaming writer of
:mod:`undiffuse.speed`, the bench and the study's diffusers peer — goes through :func:`drive`, so the
rule "sample i depends only on (seed, i)" lives here once: sample i's starting noise and every noise
draw of its sampler come from its own generator seeded from (seed, i) (:mod:`undiffuse.rng`), and
neither n, the batch size nor the other indices change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch

from undiffuse.rng import sample_generators, starting_noise
from undiffuse.samplers.common import Counted
from undiffuse.samplers.registry import sample as run_sampler

__all__ = ["Driven", "drive", "registry_batch", "slice_cond"]

#: run_batch(x_T [b, ...], generators [b], cond slice, offset) → samples [b, ...]
BatchFn = Callable[[torch.Tensor, list, dict, int], torch.Tensor]
#: write(start, samples [b, ...]) — called once per batch, in order; start is the batch's first position
Writer = Callable[[int, torch.Tensor], None]


@dataclass
class Driven:
    """What :func:`drive` did: the samples (None when streamed to ``write``), network evaluations per
    sample (max over batches), and how many samples."""

    x: Optional[torch.Tensor]
    nfe: int
    n: int


def slice_cond(cond: Optional[dict], lo: int, hi: int) -> dict:
    """Rows lo:hi of every per-sample condition (tensors and lists); scalars pass through."""
    out = {}
    for k, v in (cond or {}).items():
        out[k] = v[lo:hi] if isinstance(v, (torch.Tensor, list, tuple)) and getattr(v, "ndim", 1) > 0 else v
    return out


def registry_batch(
    sampler: str, denoiser: Callable, sigmas: torch.Tensor, callback: Optional[Callable] = None, **options: Any
) -> tuple[BatchFn, Counted]:  # fmt: skip
    """A ``run_batch`` for :func:`drive` that runs the registered ``sampler`` on ``sigmas`` with its
    declared ``options``, and the :class:`Counted` wrapper whose ``nfe`` it resets per batch.
    ``callback`` sees each step's dict with ``offset`` (the batch's first position) added."""
    counted = Counted(denoiser)

    def run_batch(x: torch.Tensor, gens: list, cond: dict, offset: int) -> torch.Tensor:
        counted.nfe = 0
        cb = (lambda d: callback({**d, "offset": offset})) if callback is not None else None
        return run_sampler(sampler, counted, x, sigmas, generator=gens, callback=cb, cond=cond, **options)

    return run_batch, counted


@torch.no_grad()
def drive(
    run_batch: BatchFn, shape: Sequence[int], indices: Union[int, Sequence[int]], *,
    seed: Union[int, Sequence[int]], sigma_max: Union[float, torch.Tensor], device: Union[str, torch.device] = "cpu", batch_size: int = 256,
    cond: Optional[dict] = None, write: Optional[Writer] = None, counted: Optional[Counted] = None,
    on_batch: Optional[Callable[[int, int], None]] = None,
) -> Driven:  # fmt: skip
    """Draw the samples numbered ``indices`` (or 0..n−1 for an int n) in batches of ``batch_size``.

    For each batch: one generator per index from (seed, i), the starting state x = σ_max·n
    (n itself at σ_max = ∞), the condition rows of the batch's positions, then ``run_batch``.
    Each batch goes to ``write(start, x)`` when given (nothing is kept: streaming), else the batches
    are concatenated (float32, CPU). ``on_batch(done, total)`` reports progress after each batch.
    ``counted`` (from :func:`registry_batch`) supplies the NFE count. ``seed`` may be one seed per index:
    row k is then keyed to (seed[k], indices[k]), so requests with different seeds share network calls
    (the server's dynamic batching) and each row is still exactly what it is alone.
    """
    idx = list(range(indices)) if isinstance(indices, int) else [int(i) for i in indices]
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    out, nfe = [], 0
    for start in range(0, len(idx), batch_size):
        stop = min(len(idx), start + batch_size)
        seeds = seed[start:stop] if isinstance(seed, (list, tuple)) else seed  # one seed, or one per index
        gens = sample_generators(seeds, idx[start:stop], device)
        x = starting_noise(gens, shape, sigma_max, device)
        x = run_batch(x, gens, slice_cond(cond, start, stop), start)
        nfe = max(nfe, counted.nfe if counted is not None else 0)
        if write is not None:
            write(start, x)
        else:
            out.append(x.float().cpu())
        if on_batch is not None:
            on_batch(stop, len(idx))
    x_all = None if write is not None else (torch.cat(out) if out else torch.empty(0, *shape))
    return Driven(x_all, nfe, len(idx))
