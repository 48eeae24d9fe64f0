"""``undiffuse eval`` of a table run: the model's synthetic rows beside a Gaussian copula, SMOTE, the
project's GAN and VAE (fitted here with the run's own training steps and batch size) and the real held-out
rows, on every metric of :mod:`undiffuse.evaluation.tables`, as one JSON-ready report.

The synthetic sets have as many rows as the training split (TabDDPM's protocol); the "real train" row
is the reference for ML efficacy (the same model trained on the real training rows), and "real held-out"
shows what fresh real rows score on the fidelity and privacy metrics (its detection AUC: training rows
against held-out rows, the chance level of this protocol at this size).
"""

from __future__ import annotations

import os
import time
from typing import Optional, Union

import torch

from undiffuse.baselines.tables import gaussian_copula, neural_rows, smote
from undiffuse.data import load_dataset
from undiffuse.data.tables import categories
from undiffuse.diffusion.multinomial import blocks
from undiffuse.evaluation.tables import TableParts, detection_auc, efficacy, table_metrics
from undiffuse.model import Model, load
from undiffuse.tables import TABLE_STEPS, impute, sample_rows

__all__ = ["table_data", "evaluate_table_run", "table_markdown", "imputation_scores"]


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
    fit_cpu_s = {}
    for kind in ("gan", "vae"):  # the same rows, steps and batch size as the diffusion run
        t0 = time.process_time()
        rows[kind] = neural_rows(kind, train.x, cats, n, seed, model.config.train.steps, model.config.train.batch_size)
        fit_cpu_s[kind] = time.process_time() - t0
    rows["real held-out"] = test.x
    out = {name: table_metrics(schema, x, train.x, test.x, seed) for name, x in rows.items()}
    out["real held-out"]["efficacy"] = None  # it would be scored on its own rows
    r, h = TableParts(schema, train.x), TableParts(schema, test.x)
    out["real held-out"]["detection_auc"] = detection_auc(r, h, seed)
    real = efficacy(r, h, seed)
    imputed = imputation_scores(model, train, test, seed=seed, steps=steps)
    return {"run": str(run_dir), "data": model.data.name, "step": model.step, "seed": seed, "steps": steps,
            "n": n, "n_train": len(train), "n_test": len(test), "sample_cpu_s": sample_cpu_s, "baseline_cpu_s": fit_cpu_s,
            "efficacy_real_train": real, "imputation": imputed, "methods": out}  # fmt: skip


def imputation_scores(model: Model, train, test, frac: float = 0.2, seed: int = 0, steps: int = TABLE_STEPS) -> dict:
    """Hide a share ``frac`` of the held-out rows' cells at random (MCAR; the target too), impute them, and
    score the filled cells against the truth: RMSE of the numbers in normal-score units and accuracy of the
    categories, beside imputing the training mean score / most frequent category."""
    cats = categories(model.data.extra["table"])
    d = test.x.shape[1] - sum(cats)
    slices = [slice(j, j + 1) for j in range(d)] + blocks(cats, d)
    g = torch.Generator().manual_seed(seed)
    hide = torch.rand(len(test.x), len(slices), generator=g) < frac
    holes = test.x.clone()
    for j, sl in enumerate(slices):
        holes[hide[:, j], sl] = float("nan")
    filled = impute(model, holes, seed, steps).cpu()
    num = hide[:, :d] & ~test.x[:, :d].isnan()
    mean = torch.nanmean(train.x[:, :d], dim=0).expand_as(test.x[:, :d])
    rmse = lambda guess: float(((guess - test.x[:, :d])[num] ** 2).mean().sqrt()) if num.any() else None  # noqa: E731
    out = {"frac": frac, "cells": int(hide.sum()), "rmse": rmse(filled[:, :d]), "rmse_mean": rmse(mean)}
    right = right_mode = total = 0
    for j, sl in enumerate(slices[d:]):
        rows = hide[:, d + j] & ~test.x[:, sl].isnan().any(1)
        truth = test.x[rows, sl].argmax(1)
        mode = torch.nan_to_num(train.x[:, sl]).sum(0).argmax()
        right += int((filled[rows, sl].argmax(1) == truth).sum())
        right_mode, total = right_mode + int((truth == mode).sum()), total + int(rows.sum())
    out.update(accuracy=right / total if total else None, accuracy_mode=right_mode / total if total else None)
    return out


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
    imp = report.get("imputation")
    if imp:
        lines.append(f"\nImputation of {imp['cells']} held-out cells hidden at random ({imp['frac']:.0%}): RMSE "
                     f"{_fmt(imp['rmse'])} (training mean: {_fmt(imp['rmse_mean'])}) in normal scores; categories "
                     f"{_fmt(imp['accuracy'])} right (most frequent: {_fmt(imp['accuracy_mode'])}).")
    return "\n".join(lines) + "\n"
