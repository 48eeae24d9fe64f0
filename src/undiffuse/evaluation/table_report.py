"""``undiffuse eval`` of a table run: the model's synthetic rows beside a Gaussian copula, SMOTE and the
real held-out rows, on every metric of :mod:`undiffuse.evaluation.tables`, as one JSON-ready report.

The synthetic sets have as many rows as the training split (TabDDPM's protocol); the "real train" row
is the reference for ML efficacy (the same model trained on the real training rows), and "real held-out"
shows what fresh real rows score on the fidelity, privacy and detection metrics.
"""

from __future__ import annotations

import os
import time
from typing import Optional, Union

import torch

from undiffuse.baselines.tables import gaussian_copula, smote
from undiffuse.data import load_dataset
from undiffuse.data.tables import categories
from undiffuse.evaluation.tables import TableParts, efficacy, table_metrics
from undiffuse.model import Model, load
from undiffuse.tables import TABLE_STEPS, sample_rows

__all__ = ["table_data", "evaluate_table_run", "table_markdown"]


def table_data(model: Model):
    """(train, test) datasets of the run's table, with the run's own data options."""
    d = model.config.data
    opts = {"target": d.target, "categorical": tuple(d.categorical) or None}
    return load_dataset(d.name, "train", **opts), load_dataset(d.name, "test", **opts)


def evaluate_table_run(run_dir: Union[str, os.PathLike], seed: int = 0, steps: int = TABLE_STEPS, n: Optional[int] = None,
                       device: Optional[str] = None) -> dict:  # fmt: skip
    """Metrics of the run's rows and of the baselines (see the module docstring)."""
    model = load(run_dir, device=device)
    train, test = table_data(model)
    schema = model.data.extra["table"]
    n = n or len(train)
    t0 = time.process_time()
    rows = {"diffusion": sample_rows(model, n, seed, steps).cpu()}
    sample_cpu_s = time.process_time() - t0
    cats = categories(schema)
    rows["gaussian copula"] = gaussian_copula(train.x, cats, n, seed)
    rows["smote"] = smote(train.x, cats, n, train.y, seed=seed)
    rows["real held-out"] = test.x
    out = {name: table_metrics(schema, x, train.x, test.x, seed) for name, x in rows.items()}
    out["real held-out"]["efficacy"] = None  # it would be scored on its own rows
    real = efficacy(TableParts(schema, train.x), TableParts(schema, test.x), seed)
    return {"run": str(run_dir), "data": model.data.name, "step": model.step, "seed": seed, "steps": steps,
            "n": n, "n_train": len(train), "n_test": len(test), "sample_cpu_s": sample_cpu_s,
            "efficacy_real_train": real, "methods": out}  # fmt: skip


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def table_markdown(report: dict) -> str:
    """The report as a markdown table, one row per method."""
    eff = report["efficacy_real_train"] or {}
    key = "f1" if "f1" in eff else "r2" if "r2" in eff else None
    head = ("| method | W₁/std | TV | corr. diff | " + (f"ML {key} (real: {_fmt(eff.get(key))}) | " if key else "")
            + ("accuracy | " if "accuracy" in eff else "") + "DCR p5 (held-out p5) | share < held-out p5 | detection AUC |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, m in report["methods"].items():
        e = m["efficacy"] or {}
        cells = [name, _fmt(m["wasserstein"]), _fmt(m["total_variation"]), _fmt(m["correlation_diff"])]
        cells += [_fmt(e.get(key))] if key else []
        cells += [_fmt(e.get("accuracy"))] if "accuracy" in eff else []
        cells += [f"{m['dcr_p5']:.3f} ({m['dcr_holdout_p5']:.3f})", _fmt(m["share_closer_than_holdout_p5"]),
                  _fmt(m["detection_auc"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
