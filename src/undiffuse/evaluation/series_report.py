"""``undiffuse eval`` of a series run: the stylised facts of its windows (first channel) beside GARCH(1,1)-t,
a moving-block bootstrap, the project's GAN and VAE (fitted here to the standardised training windows with
the run's own steps and batch size) and the real training windows, each against the real held-out windows
(:mod:`undiffuse.evaluation.series`): facts, discriminative and predictive scores."""

from __future__ import annotations

import os
import time
from typing import Optional, Union

import numpy as np

from undiffuse.baselines.train import fit_vectors, sample_indices
from undiffuse.data import load_dataset
from undiffuse.data.series import read_series, series_units, train_steps
from undiffuse.evaluation.series import (
    bootstrap_windows,
    compare_facts,
    discriminative_score,
    fit_garch,
    garch_windows,
    predictive_score,
    stylised_facts,
)
from undiffuse.forecasting import coverage, crps, forecast_paths
from undiffuse.model import Model, load
from undiffuse.sampling import sample

__all__ = ["evaluate_series_run", "series_markdown", "forecast_scores"]


def evaluate_series_run(run_dir: Union[str, os.PathLike], n: int = 500, seed: int = 0, sampler: str = "ddpm",
                        steps: int = 100, device: Optional[str] = None, horizon: Optional[int] = 20,
                        forecast_n: int = 200, neural_baselines: bool = True) -> dict:  # fmt: skip
    """Facts, discriminative and predictive scores of n windows of each method against the held-out windows."""
    model = load(run_dir, device=device)
    d, info = model.config.data, model.data
    train = load_dataset(d.name, "train", window=d.window)
    test = load_dataset(d.name, "test", window=d.window)
    tr = series_units(train.x, info)[:, :, 0]
    returns = np.concatenate([tr[0], tr[1:, -1]])  # the training part again, from its stride-1 windows
    L = info.extra["series"]["length"]
    t0 = time.process_time()
    x = sample(model, n, seed, sampler=sampler, steps=steps)
    cpu = time.process_time() - t0
    garch, params = garch_windows(returns, n, L, seed)
    sets = {"diffusion": series_units(x, info)[:, :, 0], "garch(1,1)-t": garch,
            "block bootstrap": bootstrap_windows(returns, n, L, seed=seed),
            "real train windows": tr[np.random.default_rng(seed).permutation(len(tr))[:n]]}  # fmt: skip
    fit_cpu_s = {}
    for kind in ("gan", "vae") if neural_baselines else ():  # the same windows, steps and batch size as the run
        t0 = time.process_time()
        net, cfg = fit_vectors(kind, train.x, model.config.train.steps, seed=seed,
                               batch_size=model.config.train.batch_size, model={"z_dim": 32})  # fmt: skip
        sets[kind] = series_units(sample_indices(net, cfg, range(n), seed), info)[:, :, 0]
        fit_cpu_s[kind] = time.process_time() - t0
    real = series_units(test.x, info)[:, :, 0]
    facts = stylised_facts(real)
    methods = {k: {"facts": compare_facts(facts, stylised_facts(w)), "discriminative": discriminative_score(real, w, seed),
                   "predictive": predictive_score(real, w, seed=seed)} for k, w in sets.items()}  # fmt: skip
    fc = forecast_scores(model, min(horizon, L // 2), forecast_n, seed, steps) if horizon and d.name[7:] in ("sp500", "nasdaq") else None
    return {"run": str(run_dir), "data": info.name, "step": model.step, "window": L, "n": n, "n_test": len(real),
            "sampler": sampler, "steps": steps, "sample_cpu_s": cpu, "baseline_cpu_s": fit_cpu_s, "garch_params": params,
            "methods": methods,
            "forecast": fc}  # fmt: skip


def _garch_paths(r: np.ndarray, cut: int, horizon: int, n: int, seed: int) -> np.ndarray:
    """GARCH(1,1)-t fitted on r[:cut], simulated forward from every origin cut−1+k: [T − cut, n, horizon]."""
    from arch.univariate import GARCH, ConstantMean, StudentsT

    res = fit_garch(r[:cut])
    full = ConstantMean(r, volatility=GARCH(1, 0, 1), distribution=StudentsT(seed=np.random.default_rng(seed)),
                        rescale=False)  # fmt: skip
    return full.forecast(res.params, horizon=horizon, start=cut - 1, method="simulation", simulations=n).simulations.values


def forecast_scores(model: Model, horizon: int = 20, n: int = 200, seed: int = 0, steps: int = 100) -> dict:
    """Forecasts of the first channel from origins every ``horizon`` steps of the held-out period: mean CRPS and
    the coverage of 90 % intervals (per step), the model's paths beside GARCH(1,1)-t's."""
    arg = model.data.name.split(":", 1)[1]
    vals = read_series(arg)[0]
    cut = train_steps(len(vals))
    L = model.data.extra["series"]["length"]
    garch = _garch_paths(vals[:, 0], cut, horizon, n, seed)
    origins = [o for o in range(max(cut, L - horizon), len(vals) - horizon + 1, horizon)]
    scores: dict = {"diffusion": [], "garch(1,1)-t": []}
    truths = []
    for o in origins:
        truth = vals[o : o + horizon, 0]
        paths = {"diffusion": forecast_paths(model, vals[:o], horizon, n, seed + o, steps)[:, :, 0],
                 "garch(1,1)-t": garch[o - cut]}  # fmt: skip
        for k, p in paths.items():
            scores[k].append((crps(p, truth).mean(), p))
        truths.append(truth)
    out = {"horizon": horizon, "origins": len(origins), "paths": n}
    for k, v in scores.items():
        allp = np.concatenate([p for _, p in v], axis=1)  # [n, origins·h]
        out[k] = {"crps": float(np.mean([c for c, _ in v])), "coverage90": coverage(allp, np.concatenate(truths))}
    return out


def series_markdown(report: dict) -> str:
    """One row per method: each fact's synthetic median (✓ inside the real 5–95 % range), the discriminative score."""
    facts = ("kurtosis", "acf_r", "acf_abs", "leverage")
    lines = ["| method | " + " | ".join(facts) + " | pooled kurtosis | discriminative | predictive MAE r / \\|r\\| |",
             "|---" * 8 + "|"]
    first = next(iter(report["methods"].values()))["facts"]
    lines.append("| real held-out (median [p5, p95]) | " + " | ".join(
        f"{first[f]['real_median']:.3f} [{first[f]['real_p5']:.2f}, {first[f]['real_p95']:.2f}]" for f in facts)
        + f" | {first['pooled_kurtosis']['real']:.2f} | – | – |")  # fmt: skip
    for name, m in report["methods"].items():
        cells = [f"{m['facts'][f]['synthetic_median']:.3f}{' ✓' if m['facts'][f]['within'] else ' ✗'}" for f in facts]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m['facts']['pooled_kurtosis']['synthetic']:.2f} | "
                     f"{m['discriminative']:.3f} | {m['predictive']['r']:.3f} / {m['predictive']['abs_r']:.3f} |")  # fmt: skip
    fc = report.get("forecast")
    if fc:
        lines.append(f"\nForecasts ({fc['origins']} origins, {fc['horizon']} steps, {fc['paths']} paths): " + "; ".join(
            f"{k} CRPS {fc[k]['crps']:.3f}, 90 % coverage {fc[k]['coverage90']:.1%}" for k in ("diffusion", "garch(1,1)-t")))
    return "\n".join(lines) + "\n"
