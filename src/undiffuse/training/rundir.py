"""The run directory, the configuration on resume, the training data, and Ctrl-C/SIGTERM handling.

Run directory layout::

    RUN_DIR/config.json        the resolved RunConfig (JSON)
    RUN_DIR/log.jsonl          one record per logged step: step, loss, lr, grad_norm, img_per_s, val_loss
    RUN_DIR/loss.png           the loss curve
    RUN_DIR/samples/step_XXXXXXX.png
    RUN_DIR/checkpoints/step_XXXXXXX/   (see :mod:`undiffuse.training.checkpoint`)

Rules: a new run refuses an existing non-empty directory (nothing is overwritten); ``resume`` needs a
checkpoint; on resume the saved configuration wins, and a given configuration that contradicts it in
anything but ``train.steps`` is refused.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Optional, Union

import torch

from undiffuse.build import DataInfo
from undiffuse.config import RunConfig, apply_overrides, diff_configs, from_dict, to_dict
from undiffuse.errors import TrainingError, UserError
from undiffuse.io import atomic_write
from undiffuse.training.checkpoint import latest_checkpoint, read_state

__all__ = ["check_new_run_dir", "resume_checkpoint", "saved_config", "resume_config", "merge_resume_config",
           "write_config", "TrainingData", "load_training_data", "StopFlag"]  # fmt: skip


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse an existing, non-empty run directory for a new run."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise TrainingError(
            f"run directory {run_dir} already exists and is not empty — choose a new --out directory, "
            "or pass --resume to continue that run"
        )


def resume_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a resumed run starts from (TrainingError if there is none)."""
    ckpt = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    if ckpt is None:
        raise TrainingError(
            f"nothing to resume: {run_dir} holds no checkpoint — start a new run without --resume "
            "(into an empty or new directory)"
        )
    return ckpt


def saved_config(run_dir: Union[str, os.PathLike]) -> RunConfig:
    """The configuration a run was trained with (its config.json, else its latest checkpoint's)."""
    run_dir = Path(run_dir)
    f = run_dir / "config.json"
    if f.is_file():
        try:
            return from_dict(json.loads(f.read_text()))
        except ValueError as e:
            raise TrainingError(f"{f} is not valid JSON ({e}) — restore it or start a new run") from e
    return from_dict(read_state(resume_checkpoint(run_dir))["config"])


def merge_resume_config(saved: RunConfig, given: Optional[RunConfig], steps: Optional[int]) -> RunConfig:
    """The saved config with ``train.steps`` from ``steps`` (or ``given``); refuse any other difference."""
    if given is not None:
        diff = {k: v for k, v in diff_configs(saved, given).items() if k != "train.steps"}
        if diff:
            shown = "; ".join(f"{k}: saved {a!r}, given {b!r}" for k, (a, b) in diff.items())
            raise TrainingError(
                f"resume would change the run's configuration ({shown}) — drop those settings when resuming, "
                "or start a new run in another directory"
            )
        if steps is None:
            steps = given.train.steps
    if steps is not None:
        saved = replace(saved, train=replace(saved.train, steps=steps))
    return saved


def resume_config(run_dir: Union[str, os.PathLike], overrides: Iterable[str] = (), data: Optional[str] = None,
                  steps: Optional[int] = None) -> RunConfig:  # fmt: skip
    """What ``train --resume --out RUN_DIR [--data D] [--set k=v …]`` means: the saved configuration,
    with explicitly given settings applied only if they agree with it (``train.steps`` may change)."""
    saved = saved_config(run_dir)
    given = saved if data is None else replace(saved, data=replace(saved.data, name=data))
    given = apply_overrides(given, overrides)
    return merge_resume_config(saved, given, steps)


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    """Write ``config.json`` (atomically)."""
    text = json.dumps(to_dict(cfg), indent=2) + "\n"
    atomic_write(run_dir / "config.json", lambda tmp: Path(tmp).write_text(text))


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
    patches = {"patch_size": d.patch_size, "patches_per_image": d.patches_per_image}  # patches:/medical only
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
