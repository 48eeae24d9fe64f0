"""``undiffuse forecast``: sample the future of a series given its past (a series run)."""

from __future__ import annotations

import argparse

from undiffuse.cli.common import add_device, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "forecast", help="sample future paths of a series given its past (series runs)",
        description="Given PAST.csv (a date column, then the run's value columns, in data units — log-returns in % for "
        "series:sp500/nasdaq), sample --n paths of the next --horizon steps: the model's window with its first steps "
        "held at the last observed values (RePaint replacement). Writes one block of rows per path (path, t, columns) "
        "and, with --quantiles, one row per step and quantile instead.",
    )  # fmt: skip
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run on series: data")
    p.add_argument("--context", required=True, help="CSV of the past: date column, then the value columns")
    p.add_argument("--horizon", type=positive_int, default=20, help="steps to forecast (below the run's window)")
    p.add_argument("--n", type=positive_int, default=200, help="number of paths")
    p.add_argument("--seed", type=int, default=0, help="path i depends only on (seed, i)")
    p.add_argument("--steps", type=positive_int, default=100, help="sampler steps")
    p.add_argument("--quantiles", default=None, help="write these quantiles per step instead of paths, e.g. 0.05,0.5,0.95")
    p.add_argument("--out", required=True, help="output .csv")
    add_device(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    import undiffuse.api as api
    from undiffuse.data.series import read_series
    from undiffuse.data.tablefiles import csv_text
    from undiffuse.errors import UserError
    from undiffuse.forecasting import forecast_paths
    from undiffuse.io import write_text

    if not args.out.lower().endswith(".csv"):
        raise UserError(f"--out {args.out} must be a .csv file")
    qs = None
    if args.quantiles is not None:
        try:
            qs = [float(q) for q in args.quantiles.split(",")]
        except ValueError:
            raise UserError(f"--quantiles {args.quantiles!r} must be numbers in [0, 1], e.g. 0.05,0.5,0.95") from None
        if not all(0 <= q <= 1 for q in qs):
            raise UserError(f"--quantiles {args.quantiles!r} must lie in [0, 1]")
    model = api.load(args.run_dir, device=args.device)
    past, _ = read_series(args.context)
    paths = forecast_paths(model, past, args.horizon, args.n, args.seed, args.steps)  # [n, h, C]
    names = model.data.extra["series"]["channels"]
    if qs is None:
        rows = [[str(i), str(t), *(f"{v:.6g}" for v in paths[i, t])] for i in range(len(paths)) for t in range(args.horizon)]
        text = csv_text(["path", "t", *names], rows)
    else:
        qv = np.quantile(paths, qs, axis=0)  # [Q, h, C]
        rows = [[str(t), f"{q:g}", *(f"{v:.6g}" for v in qv[k, t])] for t in range(args.horizon) for k, q in enumerate(qs)]
        text = csv_text(["t", "quantile", *names], rows)
    write_text(args.out, text)
    print(f"wrote {args.out}: {args.n} paths of {args.horizon} steps after {len(past)} observed steps")
    return 0
