"""The likelihood of held-out data under a trained model: the VLB in bits/dim with its standard error and
parts (:func:`nll`), on the run's own test split or other data of the same shape (:func:`eval_data`)."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from undiffuse.errors import UserError
from undiffuse.losses.vlb import LN2, vlb_strata, vlb_stratified
from undiffuse.model import Model

__all__ = ["nll", "eval_data"]


def eval_data(model: Model, spec: Optional[str] = None, split: str = "test", n: Optional[int] = None) -> torch.Tensor:
    """Held-out data for :func:`nll`: the first ``n`` examples of ``split`` of ``spec`` (default: the
    run's own data), on the model's device; refuses data of another shape."""
    from undiffuse.data import load_dataset

    if n is not None and n < 1:
        raise UserError(f"--n must be positive, got {n}")
    d = model.config.data  # the run's patch options apply to the run's own data only
    patches = {"patch_size": d.patch_size, "patches_per_image": d.patches_per_image,
               "sample_rate": d.sample_rate} if spec in (None, d.name) else {}  # fmt: skip
    try:
        ds = load_dataset(spec or model.data.name, split, image_size=d.image_size, **patches)
    except UserError:
        raise
    except Exception as e:  # a loader's own error: one line for the user
        raise UserError(str(e)) from e
    if tuple(ds.shape) != tuple(model.data.shape):
        raise UserError(f"data {ds.name} has shape {ds.shape} but the model expects {model.data.shape} — pass matching data")
    x = ds.x[:n] if n is not None else ds.x
    return x.to(model.device)


def _group(strata: list[tuple[int, int]], shown: list[tuple[int, int]], values: torch.Tensor) -> list[dict]:
    """Sum per-stratum contributions (bits/dim) into the ``shown`` strata (which are unions of them)."""
    out = []
    for lo, hi in shown:
        v = sum(float(values[j]) for j, (a, b) in enumerate(strata) if lo <= a and b <= hi)
        out.append({"t": [lo, hi], "bpd": v})
    return out


@torch.no_grad()
def nll(
    model: Model, x0: torch.Tensor, n_t: int = 50, exact: bool = False, seed: int = 0,
    generator: Optional[torch.Generator] = None, batch_size: int = 256, cond: Optional[dict] = None,
    on_batch: Optional[Callable[[int, int], None]] = None,
) -> dict:  # fmt: skip
    """Negative log-likelihood bound (the VLB) of ``x0`` in bits/dim, with its standard error and parts.

    The sum over t is :func:`~undiffuse.losses.vlb.vlb_stratified` with ``n_t`` strata (n_t + 1 network
    evaluations per example); ``exact=True`` evaluates all T terms. ``stderr`` is the standard error of
    the mean over examples (it includes the Monte-Carlo noise). Units: "discrete" bits/dim for 8-bit data
    (discretized decoder, ≥ 0), "continuous" otherwise (a density; can be negative). ``on_batch(done,
    total)`` reports progress. Returns a JSON-ready dict.
    """
    if n_t < 1 or batch_size < 1 or len(x0) < 1:
        raise UserError(f"nll needs n_t ≥ 1, batch_size ≥ 1 and at least one example — got {n_t}, {batch_size}, {len(x0)}")
    sched, dev = model.schedule, model.device
    decoder = "discrete" if model.data.discrete_8bit else "continuous"
    var_type = model.config.diffusion.sample_var_type
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    parts = []
    for start in range(0, len(x0), batch_size):
        x = x0[start : start + batch_size].to(dev).float()
        c = {k: v[start : start + batch_size].to(dev) for k, v in (cond or {}).items()}
        parts.append(vlb_stratified(model.denoiser, sched, x, sched.T if exact else n_t, gen, var_type, decoder, **c))
        if on_batch is not None:
            on_batch(min(len(x0), start + batch_size), len(x0))
    prior, dec = torch.cat([p.prior for p in parts]).cpu(), torch.cat([p.decoder for p in parts]).cpu()
    strata = torch.cat([p.strata for p in parts]).cpu()  # [N, k]
    to_bpd = 1.0 / (model.data.dims * LN2)
    total = (prior + dec + strata.sum(1)) * to_bpd  # [N] bits/dim per example
    n = len(total)
    return {
        "bits_per_dim": float(total.mean()),
        "stderr": float(total.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan"),
        "units": decoder,
        "estimator": "exact" if exact else "stratified",
        "n": n,
        "T": sched.T,
        "n_t": strata.shape[1],
        "prior_bpd": float(prior.mean() * to_bpd),
        "decoder_bpd": float(dec.mean() * to_bpd),
        "kl_terms_bpd": float(strata.sum(1).mean() * to_bpd),
        "kl_strata": _group(parts[0].bounds, vlb_strata(sched.T, n_t), strata.mean(0) * to_bpd),
        "nfe_per_example": strata.shape[1] + 1,
        "var_type": var_type,
        "step": model.step,
    }
