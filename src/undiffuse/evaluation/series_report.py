"""``undiffuse eval`` of a series run: the stylised facts of its windows (first channel) beside GARCH(1,1)-t,
a moving-block bootstrap and the real training windows, each against the real held-out windows
(:mod:`undiffuse.evaluation.series`)."""

from __future__ import annotations

import os
import time
from typing import Optional, Union

import numpy as np

from undiffuse.data import load_dataset
from undiffuse.data.series import series_units
from undiffuse.evaluation.series import bootstrap_windows, compare_facts, discriminative_score, garch_windows
from undiffuse.evaluation.series import stylised_facts
from undiffuse.model import load
from undiffuse.sampling import sample

__all__ = ["evaluate_series_run", "series_markdown"]


def evaluate_series_run(run_dir: Union[str, os.PathLike], n: int = 500, seed: int = 0, sampler: str = "ddpm",
                        steps: int = 100, device: Optional[str] = None) -> dict:  # fmt: skip
    """Facts and discriminative scores of n windows of each method against the held-out windows."""
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
    real = series_units(test.x, info)[:, :, 0]
    facts = stylised_facts(real)
    methods = {k: {"facts": compare_facts(facts, stylised_facts(w)), "discriminative": discriminative_score(real, w, seed)}
               for k, w in sets.items()}  # fmt: skip
    return {"run": str(run_dir), "data": info.name, "step": model.step, "window": L, "n": n, "n_test": len(real),
            "sampler": sampler, "steps": steps, "sample_cpu_s": cpu, "garch_params": params, "methods": methods}  # fmt: skip


def series_markdown(report: dict) -> str:
    """One row per method: each fact's synthetic median (✓ inside the real 5–95 % range), the discriminative score."""
    facts = ("kurtosis", "acf_r", "acf_abs", "leverage")
    lines = ["| method | " + " | ".join(facts) + " | pooled kurtosis | discriminative |", "|---" * 7 + "|"]
    first = next(iter(report["methods"].values()))["facts"]
    lines.append("| real held-out (median [p5, p95]) | " + " | ".join(
        f"{first[f]['real_median']:.3f} [{first[f]['real_p5']:.2f}, {first[f]['real_p95']:.2f}]" for f in facts)
        + f" | {first['pooled_kurtosis']['real']:.2f} | – |")  # fmt: skip
    for name, m in report["methods"].items():
        cells = [f"{m['facts'][f]['synthetic_median']:.3f}{' ✓' if m['facts'][f]['within'] else ' ✗'}" for f in facts]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m['facts']['pooled_kurtosis']['synthetic']:.2f} | "
                     f"{m['discriminative']:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"
