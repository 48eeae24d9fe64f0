"""A picture of the default series model's forecasts: from three origins of the held-out period, the last
44 observed daily returns, the 20 that followed, and the central 50 % / 90 % bands and median of 200 paths of
``undiffuse forecast`` (:func:`undiffuse.forecasting.forecast_paths`).

    OMP_NUM_THREADS=1 python benchmarks/series_forecast_plot.py RUN [--out docs/images/series_forecast.png]
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from undiffuse.data.series import read_series, train_steps
    from undiffuse.forecasting import forecast_paths
    from undiffuse.io import atomic_path
    from undiffuse.model import load

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--out", default="docs/images/series_forecast.png")
    ap.add_argument("--horizon", type=int, default=20)
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    model = load(args.run)
    vals = read_series(model.data.name.split(":", 1)[1])[0][:, 0]
    cut, h = train_steps(len(vals)), args.horizon
    L = model.data.extra["series"]["length"]
    origins = [cut + k * (len(vals) - cut - h) // 3 for k in (0, 1, 2)]
    fig = Figure(figsize=(12, 3.4))
    for j, o in enumerate(origins):
        ax = fig.add_subplot(1, 3, j + 1)
        paths = forecast_paths(model, vals[:o, None], h, args.n, seed=o)[:, :, 0]
        past, t = np.arange(-(L - h), 0), np.arange(h)
        q = np.quantile(paths, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
        ax.plot(past, vals[o - (L - h) : o], "k-", lw=0.8, label="observed context")
        ax.fill_between(t, q[0], q[4], color="C0", alpha=0.2, label="90 % band")
        ax.fill_between(t, q[1], q[3], color="C0", alpha=0.4, label="50 % band")
        ax.plot(t, q[2], "C0-", lw=1, label="median")
        ax.plot(t, vals[o : o + h], "r.-", lw=0.8, ms=3, label="what followed")
        ax.set_title(f"origin: day {o - cut} of the held-out period", fontsize=9)
        ax.set_xlabel("trading days from the origin")
        if j == 0:
            ax.set_ylabel("log-return %")
            ax.legend(fontsize=7, loc="lower left")
    FigureCanvasAgg(fig)
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
