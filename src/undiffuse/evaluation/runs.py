"""Samples of a trained run of any kind (diffusion or a GAN/VAE baseline) at chosen indices, through the
one sampling driver, with their cost: what `undiffuse eval` and the study evaluate."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional, Sequence, Union

import torch

__all__ = ["sample_run"]


@torch.no_grad()
def sample_run(
    run_dir: Union[str, os.PathLike], indices: Sequence[int], seed: int = 0, *, sampler: str = "ddim",
    steps: int = 50, eta: Optional[float] = None, batch_size: int = 500, device: Union[str, torch.device, None] = None,
    model: Any = None, callback: Optional[Callable[[dict], None]] = None,
) -> tuple[torch.Tensor, dict]:  # fmt: skip
    """Samples number ``indices`` of a trained run (diffusion or GAN/VAE baseline), in model units.
    ``callback`` sees every sampler step of a diffusion run (as in :func:`undiffuse.sampling.sample`).

    Sample i is the one :func:`undiffuse.api.sample` (or :func:`undiffuse.baselines.sample_baseline`)
    returns at position i for the same seed, whatever the other indices, so ranks may draw disjoint
    index sets (rank::world) and the gathered set equals a one-process run.
    Returns (x [len(indices), ...] float32 CPU, info dict(kind, nfe per sample, seconds, seconds_per_sample)).
    """
    idx = [int(i) for i in indices]
    t0, c0 = time.perf_counter(), time.process_time()
    from undiffuse.baselines import is_baseline_run

    if is_baseline_run(run_dir):
        from undiffuse.baselines import load_baseline, sample_indices

        net, cfg = (model if model is not None else load_baseline(run_dir, device or "cpu"))
        x = sample_indices(net, cfg, idx, seed, batch_size=batch_size)
        info = {"kind": cfg.kind, "nfe": 1, "sampler": "one generator/decoder pass"}
    else:
        from undiffuse.model import load
        from undiffuse.sampling import sample

        m = model if model is not None else load(run_dir, device=device)
        info = {}
        x = sample(m, len(idx), seed, sampler=sampler, steps=steps, eta=eta, batch_size=batch_size,
                   info=info, indices=idx, callback=callback)  # fmt: skip
        info["kind"] = "diffusion"
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    info.update(seconds=seconds, seconds_per_sample=seconds / max(len(idx), 1), n=len(idx), cpu_seconds=cpu,
                cpu_seconds_per_sample=cpu / max(len(idx), 1), threads=torch.get_num_threads())  # fmt: skip
    return x, info
