"""Plots written during and after training: the loss curve and 2-D scatter plots of samples.

matplotlib is used through its object API with the Agg canvas (no pyplot, no global backend change,
no display needed). Files are written to a temporary name and renamed, so readers never see half a PNG.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from undiffuse.io import atomic_path

__all__ = ["scatter_plot", "loss_plot", "read_log"]


def _save(fig, path: Path) -> Path:
    """Render ``fig`` with the Agg canvas and write it atomically (format from the suffix)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png")
    return path


def scatter_plot(
    points: Union[torch.Tensor, np.ndarray], path: Union[str, os.PathLike],
    reference: Optional[Union[torch.Tensor, np.ndarray]] = None, title: Optional[str] = None,
) -> Path:  # fmt: skip
    """Scatter the first two coordinates of ``points`` [N, D] (blue) over ``reference`` data (grey)."""
    from matplotlib.figure import Figure

    pts = np.asarray(torch.as_tensor(points).detach().cpu().float())
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    if reference is not None:
        ref = np.asarray(torch.as_tensor(reference).detach().cpu().float())
        ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.75", alpha=0.5, linewidths=0, label="data")
    ax.scatter(pts[:, 0], pts[:, 1], s=3, c="tab:blue", alpha=0.7, linewidths=0, label="samples")
    ax.set_aspect("equal", adjustable="datalim")
    if reference is not None:
        ax.legend(loc="upper right", markerscale=4, fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))


def read_log(path: Union[str, os.PathLike]) -> list[dict]:
    """The records of a ``log.jsonl`` (unparseable lines, e.g. a torn last line, are skipped)."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def loss_plot(log_path: Union[str, os.PathLike], path: Union[str, os.PathLike]) -> Optional[Path]:
    """Plot training loss (and validation loss, if logged) against the step from ``log.jsonl``."""
    from matplotlib.figure import Figure

    records = read_log(log_path)
    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    if not train and not val:
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train), lw=1, label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", ms=3, lw=1, label="validation loss (EMA)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return _save(fig, Path(path))
