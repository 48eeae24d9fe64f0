"""Aggregation over seeds, the markdown summary, sampling cost, Inception FID of saved samples, plots."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from undiffuse.io import write_json
from undiffuse.study.common import (
    FMNIST,
    FMNIST_MODELS,
    FMNIST_SAMPLER,
    TOY_MODELS,
    TOY_SAMPLER,
    TOYS,
    Unit,
    load_results,
)
from undiffuse.study.peer import sample_peer

# --- aggregation -----------------------------------------------------------------------------------------

METRICS = ("modes_covered", "high_quality_share", "kl_mode_hist", "classifier_fd", "fid", "classes_covered",
           "precision", "recall", "bits_per_dim", "nfe", "seconds_per_sample", "cpu_seconds_per_sample",
           "train_steps")  # fmt: skip


def _stats(values: list[float]) -> Optional[dict]:
    vals = [
        float(v) for v in values if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))
    ]
    if not vals:
        return None
    a = np.asarray(vals)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "n": len(a)}  # fmt: skip


def aggregate(results: Iterable[dict]) -> dict:
    """Per (dataset, model): mean / std / min / max over seeds of each metric, and the collapsed runs."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["unit"]["dataset"], r["unit"]["model"]), []).append(r)
    rows = []
    for (dataset, model), rs in groups.items():
        row = {"dataset": dataset, "model": model, "seeds": sorted(r["unit"]["seed"] for r in rs),
               "collapsed": [r["name"] for r in rs if r.get("collapsed")]}  # fmt: skip
        for m in METRICS:
            st = _stats([r.get(m) for r in rs])
            if st is not None:
                row[m] = st
        rows.append(row)
    return {"rows": rows}


def _cell(row: dict, key: str, fmt: str = "{:.3g}", pct: bool = False) -> str:
    st = row.get(key)
    if not st:
        return "n/a"
    f = (lambda v: f"{100 * v:.1f} %") if pct else (lambda v: fmt.format(v))
    if st["n"] == 1:
        return f(st["mean"])
    return f"{f(st['mean'])} ± {f(st['std'])} [{f(st['min'])}–{f(st['max'])}]"


#: The study's two tables: (header, cell of a summary row) per column after data | model | seeds.
_TOY_COLUMNS = (
    ("modes covered", lambda r: _cell(r, "modes_covered")),
    ("high-quality share", lambda r: _cell(r, "high_quality_share", pct=True)),
    ("precision", lambda r: _cell(r, "precision")),
    ("recall", lambda r: _cell(r, "recall")),
    ("NLL bits/dim (continuous)", lambda r: _cell(r, "bits_per_dim")),
)
_IMAGE_COLUMNS = (
    ("classifier FD", lambda r: _cell(r, "classifier_fd")),
    ("FID", lambda r: _cell(r, "fid")),
    ("classes covered", lambda r: _cell(r, "classes_covered", "{:.0f}")),
    ("precision", lambda r: _cell(r, "precision")),
    ("recall", lambda r: _cell(r, "recall")),
    ("NLL bits/dim (discrete)", lambda r: _cell(r, "bits_per_dim")),
)
_COST_COLUMNS = (
    ("NFE / sample", lambda r: _cell(r, "nfe", "{:.0f}")),
    ("CPU s / sample", lambda r: _cell(r, "cpu_seconds_per_sample", "{:.2e}")),
    ("train steps", lambda r: _cell(r, "train_steps", "{:.0f}")),
    ("collapsed", lambda r: ", ".join(r["collapsed"]) or "none"),
)


def _table(rows: list[dict], columns: tuple) -> list[str]:
    cols = (("data", lambda r: r["dataset"]), ("model", lambda r: r["model"]),
            ("seeds", lambda r: str(len(r["seeds"]))), *columns, *_COST_COLUMNS)  # fmt: skip
    lines = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    return lines + ["| " + " | ".join(cell(r) for _, cell in cols) + " |" for r in rows]


def summary_markdown(summary: dict) -> str:
    """The study tables (mean ± std [min–max] over seeds): the toys, then the image datasets."""
    rows = summary["rows"]
    toys = [r for r in rows if r["dataset"].startswith("toy:")]
    imgs = [r for r in rows if not r["dataset"].startswith("toy:")]
    lines = (_table(toys, _TOY_COLUMNS) + [""]) if toys else []
    if imgs:
        lines += _table(imgs, _IMAGE_COLUMNS)
    return "\n".join(lines) + "\n"


# --- sampling cost on a quiet footing --------------------------------------------------------------------


def measure_cost(out_dir: str | os.PathLike, n_toy: int = 200, n_image: int = 50, log=print) -> None:
    """CPU seconds per sample (one thread, ``time.process_time``) of every finished unit's model, on ``n``
    samples, written into its JSON as ``cpu_seconds_per_sample``: wall-clock times on a shared machine
    measure the other jobs as much as the model."""
    out = Path(out_dir)
    torch.set_num_threads(1)
    for r in load_results(out):
        if "cpu_seconds_per_sample" in r or r.get("nfe") is None:
            continue
        unit, run_dir = Unit(**r["unit"]), out / "runs" / r["name"]
        if not run_dir.is_dir():
            continue
        toy = unit.dataset.startswith("toy:")
        n = n_toy if toy else n_image
        c0 = time.process_time()
        if unit.model == "diffusers":
            sample_peer(run_dir, n, seed=1, batch_size=n)
        else:
            from undiffuse.evaluation.runs import sample_run

            sampler, steps = TOY_SAMPLER if toy else FMNIST_SAMPLER
            sample_run(run_dir, range(n), 1, sampler=sampler, steps=steps, batch_size=n, device="cpu")
        r["cpu_seconds_per_sample"] = (time.process_time() - c0) / n
        r["cpu_cost_protocol"] = (
            f"{n} samples in one batch, 1 torch thread, process CPU time (model loading included)"
        )
        log(f"[study] cost of {r['name']}: {r['cpu_seconds_per_sample']:.3g} CPU s / sample")
        write_json(out / f"{r['name']}.json", r)


# --- FID stage and plots -----------------------------------------------------------------------------------


def run_fid(out_dir: str | os.PathLike, unit_names: Sequence[str], n: int, n_ref: Optional[int] = None,
            device: str = "cpu", log=print) -> None:  # fmt: skip
    """Inception FID/KID of the saved samples of the named units against the test split (``n_ref`` images,
    default all 10,000), written to ``OUT/<unit>.fid.json`` and merged into ``OUT/<unit>.json``; a unit
    whose ``.fid.json`` exists is only merged (resumable; FIDs computed elsewhere, e.g. on a GPU machine
    with ``benchmarks/gpu/fid.py``, are merged the same way)."""
    out = Path(out_dir)
    for name in unit_names:
        path = out / f"{name}.fid.json"
        samples = out / "runs" / name / "samples.npy"
        if not path.is_file() and samples.is_file():
            x = np.load(samples, allow_pickle=False)[:n]
            log(f"[study] FID of {name}: {len(x)} samples vs the test split on {device}")
            write_json(path, fid_report(x, device, n_ref))
        merge_fid(out, name)


def fid_report(samples: np.ndarray, device: str = "cpu", n_ref: Optional[int] = None) -> dict:
    """FID/KID (and their protocol) of uint8 Fashion-MNIST samples against the test split, as written to
    ``<unit>.fid.json``; ``device`` records where the Inception network ran."""
    from undiffuse.evaluation.report import evaluate_samples

    r = evaluate_samples(samples, FMNIST, "test", metrics=(), fid=True, n_ref_fid=n_ref, device=device)
    name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else str(device)
    return {**{k: r[k] for k in r if k.startswith(("fid", "kid"))}, "device": name}


def merge_fid(out_dir: str | os.PathLike, name: str) -> Optional[dict]:
    """Copy fid, kid and their protocol from ``OUT/<name>.fid.json`` into ``OUT/<name>.json`` (if both exist)."""
    out = Path(out_dir)
    path, unit_json = out / f"{name}.fid.json", out / f"{name}.json"
    if not (path.is_file() and unit_json.is_file()):
        return None
    r = json.loads(path.read_text())
    d = json.loads(unit_json.read_text())
    d.update(fid=r.get("fid"), fid_protocol=r.get("fid_protocol"), kid=r.get("kid"), kid_std=r.get("kid_std"),
             fid_device=r.get("device"))  # fmt: skip
    write_json(unit_json, d)
    return d


def plot_study(out_dir: str | os.PathLike, image_dir: str | os.PathLike) -> list[Path]:
    """Toy scatter grids (seed 0 of each model) and metric bar charts with the spread over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, img = Path(out_dir), Path(image_dir)
    img.mkdir(parents=True, exist_ok=True)
    written = []
    results = load_results(out)
    toy_rows = [(d, m) for d in TOYS for m in TOY_MODELS]
    if any((out / "runs" / Unit(d, m, 0).name / "samples.npy").is_file() for d, m in toy_rows):
        from undiffuse.data import load_dataset

        fig, axes = plt.subplots(len(TOYS), len(TOY_MODELS), figsize=(4 * len(TOY_MODELS), 4 * len(TOYS)))
        for i, d in enumerate(TOYS):
            ref = load_dataset(d, "test").x[:2500].numpy()
            lim = 5.2 if "25" in d else 2.6
            for j, m in enumerate(TOY_MODELS):
                ax = axes[i, j]
                ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.8")
                p = out / "runs" / Unit(d, m, 0).name / "samples.npy"
                r = next((r for r in results if r["name"] == Unit(d, m, 0).name), None)
                if p.is_file():
                    x = np.load(p)
                    ax.scatter(
                        x[:, 0], x[:, 1], s=1, c="C0" if m == "diffusion" else ("C3" if m == "gan" else "C2")
                    )
                title = f"{d[4:]} — {m}"
                if r and "modes_covered" in r:
                    title += f"\n{r['modes_covered']}/{r['n_modes']} modes, {100 * r['high_quality_share']:.1f} % HQ"
                ax.set_title(title, fontsize=10)
                ax.set_xlim(-lim, lim)
                ax.set_ylim(-lim, lim)
                ax.set_aspect("equal")
                ax.set_xticks([])
                ax.set_yticks([])
        fig.tight_layout()
        path = img / "study_toys_scatter.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    summary = aggregate(results)
    for dataset_kind, metrics in (("toy", ("modes_covered", "high_quality_share", "precision", "recall")),
                                  ("fmnist", ("classifier_fd", "precision", "recall", "cpu_seconds_per_sample"))):  # fmt: skip
        rows = [r for r in summary["rows"] if r["dataset"].startswith("toy:") == (dataset_kind == "toy")]
        if not rows:
            continue
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6))
        labels = [f"{r['dataset'].replace('toy:', '')}\n{r['model']}" for r in rows]
        for ax, m in zip(axes, metrics):
            means = [r[m]["mean"] if m in r else np.nan for r in rows]
            lo = [r[m]["mean"] - r[m]["min"] if m in r else 0 for r in rows]
            hi = [r[m]["max"] - r[m]["mean"] if m in r else 0 for r in rows]
            colors = ["C0" if r["model"] == "diffusion" else "C3" if r["model"] == "gan" else "C2" if r["model"] == "vae"
                      else "C1" for r in rows]  # fmt: skip
            ax.bar(range(len(rows)), means, yerr=[lo, hi], color=colors, capsize=3)
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels(labels, fontsize=7)
            ax.set_title(
                m.replace("_", " ") + (" (log)" if m == "cpu_seconds_per_sample" else ""), fontsize=10
            )
            if m == "cpu_seconds_per_sample" and any(np.isfinite(v) and v > 0 for v in means):
                ax.set_yscale("log")
        fig.suptitle("mean over seeds; bars: min–max", fontsize=9)
        fig.tight_layout()
        path = img / f"study_{dataset_kind}_metrics.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    if (out / "runs").is_dir():
        grids = [(m, out / "runs" / Unit(FMNIST, m, 0).name / "samples.npy") for m in FMNIST_MODELS]
        grids = [(m, p) for m, p in grids if p.is_file()]
        if grids:
            fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.4))
            axes = np.atleast_1d(axes)
            for ax, (m, p) in zip(axes, grids):
                x = np.load(p)[:64, ..., 0]  # [64, 28, 28]
                tile = np.concatenate(
                    [np.concatenate(list(x[r * 8 : (r + 1) * 8]), axis=1) for r in range(8)], axis=0
                )
                ax.imshow(tile, cmap="gray", vmin=0, vmax=255)
                ax.set_title(m, fontsize=10)
                ax.axis("off")
            fig.tight_layout()
            path = img / "study_fmnist_samples.png"
            fig.savefig(path, dpi=80)
            plt.close(fig)
            written.append(path)
    return written
