"""Time series as windows: ``series:sp500``, ``series:nasdaq`` (daily prices bundled with the ``arch``
package, modelled as log-returns in percent), ``series:macro`` (statsmodels' bundled US macro data, 1959–2009
quarterly: growth rates of the real aggregates and prices, changes of the rates) and ``series:PATH.csv`` (a
date column, then value columns, used as they are). Needs ``undiffuse[series]`` (arch, statsmodels).

The series is split by time: the first 80 % of its steps train, the last 20 % test (no window straddles
the cut). A window is ``data.window`` consecutive steps (default 64; at most a quarter of the test part):
overlapping for training (stride 1) and for testing (stride L/8, so that a test period of a few years
still gives a hundred windows to compare with). Each channel is standardised by the training
part's mean and standard deviation; a window is the vector x = [L·C] (time-major), the model units
of the MLP denoiser; ``DataInfo.extra["series"]`` keeps L, the channel names and the scales, and the writers
give data units back: ``.npy`` float32 [N, L, C], ``.csv`` one block per window, ``.png`` the paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from undiffuse.data.errors import DataError
from undiffuse.data.tablefiles import csv_text, read_csv
from undiffuse.io import write_text

__all__ = ["BUILTIN_SERIES", "read_series", "load_series", "to_windows", "series_units", "write_series_npy",
           "write_series_csv", "write_series_png", "TEST_FRACTION", "train_steps"]  # fmt: skip

BUILTIN_SERIES = ("sp500", "nasdaq", "macro")
TEST_FRACTION = 0.2
_MACRO_GROWTH = ("realgdp", "realcons", "realinv", "realgovt", "realdpi", "cpi", "m1")
_MACRO_CHANGE = ("tbilrate", "unemp")


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"series data needs the {module.split('.')[0]} package — pip install 'undiffuse[series]'") from None


def read_series(arg: str) -> tuple[np.ndarray, list[str]]:
    """(values [T, C] float64 in time order, channel names) of ``series:ARG``."""
    if arg in ("sp500", "nasdaq"):
        price = _need(f"arch.data.{arg}").load()["Adj Close"].to_numpy(dtype=np.float64)
        return 100 * np.diff(np.log(price))[:, None], [f"{arg} log-return %"]
    if arg == "macro":
        m = _need("statsmodels.api").datasets.macrodata.load_pandas().data
        growth = [100 * np.diff(np.log(m[c].to_numpy(dtype=np.float64))) for c in _MACRO_GROWTH]
        change = [np.diff(m[c].to_numpy(dtype=np.float64)) for c in _MACRO_CHANGE]
        return np.stack(growth + change, 1), [f"{c} growth %" for c in _MACRO_GROWTH] + [f"{c} change" for c in _MACRO_CHANGE]
    if not arg.lower().endswith(".csv"):
        raise DataError(f"unknown series {arg!r} — use one of {', '.join(BUILTIN_SERIES)} or a path ending in .csv")
    header, rows = read_csv(arg)
    if len(header) < 2:
        raise DataError(f"{arg} needs a date column and at least one value column — add a header like date,value")
    try:
        vals = np.array([[float(c) for c in r[1:]] for r in sorted(rows, key=lambda r: r[0])], dtype=np.float64)
    except ValueError:
        raise DataError(f"{arg}: every value column must hold numbers — fill or drop the empty cells") from None
    if not np.isfinite(vals).all():
        raise DataError(f"{arg}: the values must be finite numbers — fix the non-finite cells")
    return vals, header[1:]


def train_steps(total: int) -> int:
    """How many of a series' ``total`` steps train (the first 80 %); the rest are held out."""
    return int(round(total * (1 - TEST_FRACTION)))


def to_windows(values: torch.Tensor, length: int, stride: int) -> torch.Tensor:
    """Windows [N, L, C] of ``length`` steps every ``stride`` steps of values [T, C]."""
    return values.unfold(0, length, stride).permute(0, 2, 1).contiguous()


def load_series(arg: str, split: str, window: Optional[int] = None):
    """The :class:`~undiffuse.data.Dataset` of ``series:ARG`` (see the module docstring)."""
    from undiffuse.data import Dataset

    vals, names = read_series(arg)
    cut = train_steps(len(vals))
    L = window or min(64, (len(vals) - cut) // 4)
    if L < 2 or len(vals) - cut < 2 * L:
        raise DataError(f"series {arg} has {len(vals)} steps: too few for windows of {L} with 20 % held out — "
                        f"lower data.window (at most {(len(vals) - cut) // 2})")  # fmt: skip
    train = torch.from_numpy(vals[:cut])
    mean, std = train.mean(0), train.std(0).clamp_min(1e-12)
    part = train if split == "train" else torch.from_numpy(vals[cut:])
    w = to_windows((part - mean) / std, L, 1 if split == "train" else max(1, L // 8))
    extra = {"series": {"length": L, "channels": names, "mean": mean.tolist(), "std": std.tolist()}}
    return Dataset(w.reshape(len(w), -1).float(), None, "series", f"series:{arg}", extra=extra)


def series_units(x: torch.Tensor, info: Any) -> np.ndarray:
    """Model rows [N, L·C] → float32 [N, L, C] in data units."""
    s = info.extra["series"]
    L, C = s["length"], len(s["channels"])
    w = x.detach().cpu().double().reshape(len(x), L, C)
    return (w * torch.tensor(s["std"], dtype=torch.float64) + torch.tensor(s["mean"], dtype=torch.float64)).float().numpy()


def write_series_npy(x: torch.Tensor, path: Path, info: Any, **_: Any) -> Path:
    """float32 [N, L, C] windows in data units."""
    from undiffuse.io import write_npy

    return write_npy(series_units(x, info), path)


def write_series_csv(x: torch.Tensor, path: Path, info: Any, **_: Any) -> Path:
    """One block of rows per window: window, t, then one column per channel (data units)."""
    w = series_units(x, info)
    rows = [[str(i), str(t), *(f"{v:.6g}" for v in w[i, t])] for i in range(len(w)) for t in range(w.shape[1])]
    return write_text(path, csv_text(["window", "t", *info.extra["series"]["channels"]], rows))


def write_series_png(x: torch.Tensor, path: Path, info: Any, **_: Any) -> Path:
    """The first channel of up to 16 windows as paths (cumulative sums: prices from log-returns)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from undiffuse.io import atomic_path

    w = series_units(x[:16], info)[:, :, 0]
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    for row in w:
        ax.plot(np.cumsum(row), lw=0.8)
    ax.set_title(f"{len(w)} windows of {info.name}: cumulative {info.extra['series']['channels'][0]}")
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path

