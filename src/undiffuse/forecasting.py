"""Conditional forecasting with a series model: given the observed past of a window, sample its future —
imputation of the window's last ``horizon`` steps, inside the ``multinomial`` sampler with no categories (on
numbers alone it is DDPM ancestral sampling with Σ = β̃). A model trained on observed values (``model.obs_cond``,
CSDI: Tashiro et al. 2021; :mod:`undiffuse.diffusion.conditional`) conditions through its input; any other
model by RePaint's replacement (Lugmayr et al. 2022), the observed steps put back at every noise level. The
sampler pastes the context into the state either way (a conditioned network never reads the state there), so at
σ = 0 it comes back exactly.

The model's window has L steps: the context is its first L − h steps (the last L − h observed values), the
forecast its last h. Path i depends only on (seed, i).
"""

from __future__ import annotations

import numpy as np
import torch

from undiffuse.data.series import series_units
from undiffuse.errors import UserError
from undiffuse.model import Model
from undiffuse.sampling import sample

__all__ = ["forecast_paths", "crps", "coverage"]


def forecast_paths(model: Model, context: np.ndarray, horizon: int, n: int = 200, seed: int = 0, steps: int = 100,
                   batch_size: int = 500) -> np.ndarray:  # fmt: skip
    """Paths [n, horizon, C] (data units) following ``context`` [k, C] (data units, k ≥ L − horizon; the last
    L − horizon steps are used)."""
    if model.data.kind != "series":
        raise UserError(f"forecasting needs a run trained on series: data, not {model.data.name}")
    s = model.data.extra["series"]
    L, C = s["length"], len(s["channels"])
    if not 1 <= horizon < L:
        raise UserError(f"--horizon {horizon} must lie in 1..{L - 1} (the run's windows have {L} steps)")
    context = np.asarray(context, dtype=np.float64).reshape(len(context), -1)
    if context.shape[1] != C or len(context) < L - horizon:
        raise UserError(f"the context must have {C} value column(s) and at least {L - horizon} steps "
                        f"(got {context.shape[1]} × {len(context)}) — give more past values or a longer --horizon")  # fmt: skip
    past = (context[len(context) - (L - horizon) :] - np.array(s["mean"])) / np.array(s["std"])  # [L − h, C]
    known = torch.zeros(n, L, C, dtype=torch.bool)
    known[:, : L - horizon] = True
    x_known = torch.zeros(n, L, C)
    x_known[:, : L - horizon] = torch.from_numpy(past).float()
    cond = {"known": known.reshape(n, -1).to(model.device), "x_known": x_known.reshape(n, -1).to(model.device)}
    if model.config.model.obs_cond:  # the network reads the context itself (CSDI)
        cond.update(obs=cond["x_known"], obs_mask=cond["known"])
    x = sample(model, n, seed, sampler="multinomial", steps=steps, cond=cond, batch_size=batch_size)
    return series_units(x, model.data)[:, L - horizon :]


def crps(paths: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The empirical CRPS E|X − y| − ½·E|X − X'| of sample paths [n, ...] at the observed values [...]
    (Gneiting & Raftery 2007, Eq. 21), per element."""
    paths = np.sort(np.asarray(paths, dtype=np.float64), axis=0)
    n = len(paths)
    first = np.abs(paths - truth[None]).mean(0)
    weights = (2 * np.arange(1, n + 1) - n - 1).reshape(-1, *([1] * (paths.ndim - 1)))
    spread = (weights * paths).sum(0) / (n * n)  # ½·E|X − X'| from the order statistics
    return first - spread


def coverage(paths: np.ndarray, truth: np.ndarray, level: float = 0.9) -> float:
    """The share of observed values inside the central ``level`` interval of the paths."""
    lo, hi = np.quantile(paths, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return float(np.mean((truth >= lo) & (truth <= hi)))
