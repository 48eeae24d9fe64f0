"""What a training run reads and how it stops: the training data, and Ctrl-C/SIGTERM handling.

A diffusion run directory holds, besides what every run has (:mod:`undiffuse.runs.rundir`)::

    RUN_DIR/loss.png           the loss curve
    RUN_DIR/samples/step_XXXXXXX.png

and its ``log.jsonl`` records step, loss, lr, grad_norm, img_per_s and val_loss.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from typing import Optional

import torch

from undiffuse.build import DataInfo
from undiffuse.config import RunConfig
from undiffuse.errors import UserError

__all__ = ["TrainingData", "load_training_data", "StopFlag"]


@dataclass
class TrainingData:
    """Training and held-out tensors on the training device, and what the model must know."""

    x: torch.Tensor
    y: Optional[torch.Tensor]
    x_val: Optional[torch.Tensor]
    y_val: Optional[torch.Tensor]
    info: DataInfo


def _load(name: str, split: str, image_size: Optional[int], **options):
    from undiffuse.data import load_dataset

    try:
        return load_dataset(name, split, image_size=image_size, **options)
    except UserError:
        raise
    except (ValueError, OSError) as e:  # the data package's DataError is a ValueError
        raise UserError(str(e)) from e


def load_training_data(cfg: RunConfig, device: torch.device) -> TrainingData:
    """Load ``data.name`` (train split, ``data.limit`` examples) and, if validation is on, the
    ``data.val_split`` split — or, where that split cannot be loaded, a fixed slice held out from the end
    of the training data. Image folders default to 32×32."""
    d, tc = cfg.data, cfg.train
    if not d.name:
        raise UserError("no training data given — pass --data (e.g. fashion-mnist, digits, folder:PATH, toy:moons)")
    size = d.image_size if d.image_size is not None else (32 if d.name.startswith("folder:") else None)
    patches = {"patch_size": d.patch_size, "patches_per_image": d.patches_per_image,  # patches:/medical only
               "target": d.target, "categorical": tuple(d.categorical) or None,  # table: only
               "window": d.window,  # series: only
               "sample_rate": d.sample_rate}  # audio:/mel: only
    ds = _load(d.name, "train", size, **patches)
    if len(ds) == 0:
        raise UserError(f"dataset {d.name} is empty — check the path or name")
    x, y = ds.x, ds.y
    x_val = y_val = None
    if tc.val_every > 0:
        try:
            val = _load(d.name, d.val_split, size, **patches)
            x_val, y_val = val.x, val.y
        except UserError:
            hold = max(1, min(len(x) // 10, tc.val_batches * tc.batch_size))
            x, x_val = x[:-hold], x[-hold:]
            y, y_val = (y[:-hold], y[-hold:]) if y is not None else (None, None)
    if d.limit is not None:
        x, y = x[: d.limit], (y[: d.limit] if y is not None else None)
    if len(x) == 0:
        raise UserError(f"dataset {d.name} has no training examples left — lower data.limit or add data")
    to = lambda t: t.to(device) if t is not None else None
    return TrainingData(to(x), to(y), to(x_val), to(y_val), DataInfo.from_dataset(ds))


class StopFlag:
    """While active, SIGINT (Ctrl-C) and SIGTERM ask training to stop at the end of the current step
    (it then saves a checkpoint); a second Ctrl-C interrupts at once. Only the main thread can install
    signal handlers; elsewhere this is a no-op and KeyboardInterrupt is caught by the trainer."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
