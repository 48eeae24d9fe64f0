"""Stylised facts of S&P 500 return windows: the default series run beside GARCH(1,1)-t, a block bootstrap
and the real training windows, against the held-out period (:mod:`undiffuse.evaluation.series_report`).

    OMP_NUM_THREADS=1 python benchmarks/series.py [--data series:sp500] [--seeds 0,1,2] [--runs runs/series]
                                                   [--out benchmarks/results/series.json] [--plot docs/images/series_facts.png]

Trains ``undiffuse train --data DATA`` once (timed in CPU-seconds; an existing run is reused), evaluates
500 windows per method and seed, and plots the autocorrelation of |r| by lag and the per-window kurtosis.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _timed_train import timed_train


def _plot(report: dict, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from undiffuse.io import atomic_path

    fig = Figure(figsize=(10, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    first = next(iter(report["methods"].values()))["facts"]["acf_abs_by_lag"]
    ax.plot(range(1, len(first["real"]) + 1), first["real"], "k-", lw=2, label="real held-out")
    for name, m in report["methods"].items():
        ax.plot(range(1, len(first["real"]) + 1), m["facts"]["acf_abs_by_lag"]["synthetic"], lw=1, label=name)
    ax.set_xlabel("lag (days)")
    ax.set_ylabel("ACF of |r| (mean over windows)")
    ax.set_title(f"{report['data']}: volatility clustering in {report['window']}-day windows")
    ax.legend(fontsize=8)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def main() -> None:
    from undiffuse.evaluation.series_report import evaluate_series_run
    from undiffuse.io import write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="series:sp500")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--runs", default="runs/series")
    ap.add_argument("--out", default="benchmarks/results/series.json")
    ap.add_argument("--plot", default="docs/images/series_facts.png")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override for training")
    ap.add_argument("--steps", type=int, default=100, help="sampler steps (facts and forecasts)")
    ap.add_argument("--forecast-paths", type=int, default=200)
    ap.add_argument("--name", default=None, help="the run's folder name under --runs (default: the data's)")
    ap.add_argument("--full-seeds", default=None,
                    help="seeds that also fit the GAN/VAE baselines and score forecasts (default: all)")
    args = ap.parse_args()
    run = Path(args.runs) / (args.name or args.data.split(":", 1)[1].replace("/", "_"))
    import arch
    import sklearn
    import torch

    out = {"data": args.data, "overrides": args.overrides, "threads": os.environ.get("OMP_NUM_THREADS"),
           "device": "2-core AMD EPYC, torch " + torch.__version__, "load_1min_start": os.getloadavg()[0],
           "versions": {"torch": torch.__version__, "sklearn": sklearn.__version__, "arch": arch.__version__},
           "train": timed_train(args.data, run, args.overrides)}  # fmt: skip
    seeds = [int(s) for s in args.seeds.split(",")]
    full = seeds if args.full_seeds is None else [int(s) for s in args.full_seeds.split(",")]
    out["per_seed"] = [evaluate_series_run(run, seed=s, steps=args.steps, forecast_n=args.forecast_paths,
                                           horizon=20 if s in full else None, neural_baselines=s in full)
                       for s in seeds]  # fmt: skip
    out["cpu_s"], out["load_1min_end"] = time.process_time(), os.getloadavg()[0]
    write_json(args.out, out)
    _plot(out["per_seed"][0], args.plot)
    for r in out["per_seed"]:
        print({k: (round(m["discriminative"], 3), round(m["predictive"]["abs_r"], 3)) for k, m in r["methods"].items()})
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
