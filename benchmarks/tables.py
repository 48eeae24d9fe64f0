"""The table protocol on scikit-learn's bundled tables: train each default, evaluate it beside a Gaussian
copula, SMOTE, the project's GAN and VAE and the real held-out rows (:mod:`undiffuse.evaluation.table_report`).

    OMP_NUM_THREADS=1 python benchmarks/tables.py [--tables breast-cancer,wine,diabetes] [--seeds 0,1,2]
                                                   [--runs runs/tables] [--out benchmarks/results/tables.json]

Each table trains once with its default preset (``undiffuse train --data table:NAME``), timed in CPU-seconds
(time.process_time) and wall seconds; then every method draws as many rows as the training split for each
seed, and the metrics of each seed are kept (with their mean). The machine's 1-minute load average is
recorded beside each training. Existing runs are reused (delete the run folder to retrain).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from _timed_train import timed_train


def _mean(reports: list, method: str, key: str):
    vals = [r["methods"][method][key] for r in reports]
    if isinstance(vals[0], dict):
        return {k: statistics.fmean(v[k] for v in vals) for k in vals[0]}
    return None if vals[0] is None else statistics.fmean(vals)


def main() -> None:
    from undiffuse.evaluation.table_report import evaluate_table_run
    from undiffuse.io import write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tables", default="breast-cancer,wine,diabetes")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--runs", default="runs/tables")
    ap.add_argument("--out", default="benchmarks/results/tables.json")
    args = ap.parse_args()
    import sklearn
    import torch

    out: dict = {"threads": os.environ.get("OMP_NUM_THREADS"), "device": "2-core AMD EPYC, torch " + torch.__version__,
                 "versions": {"torch": torch.__version__, "sklearn": sklearn.__version__}, "tables": {}}
    for name in args.tables.split(","):
        run = Path(args.runs) / name
        entry = {"train": timed_train(f"table:{name}", run)}
        reports = [evaluate_table_run(run, seed=int(s)) for s in args.seeds.split(",")]
        entry["efficacy_real_train"] = reports[0]["efficacy_real_train"]
        entry["sample_cpu_s"] = statistics.fmean(r["sample_cpu_s"] for r in reports)
        entry["baseline_cpu_s"] = {k: statistics.fmean(r["baseline_cpu_s"][k] for r in reports) for k in ("gan", "vae")}
        entry["n_train"], entry["n_test"], entry["steps"] = reports[0]["n_train"], reports[0]["n_test"], reports[0]["steps"]
        keys = [k for k in reports[0]["methods"]["diffusion"] if k != "n"]
        entry["mean"] = {m: {k: _mean(reports, m, k) for k in keys} for m in reports[0]["methods"]}
        entry["per_seed"] = [r["methods"] for r in reports]
        entry["imputation"] = [r["imputation"] for r in reports]
        out["tables"][name] = entry
        print(name, json.dumps(entry["train"]), json.dumps(entry["mean"]["diffusion"]), flush=True)
    write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
