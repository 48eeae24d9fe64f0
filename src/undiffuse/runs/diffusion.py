"""Diffusion runs: open a checkpoint for sampling, and resolve what a resumed run continues from.

Both follow one rule: **the checkpoint's own configuration rules.** The weights were trained with the
config in the checkpoint's state.json; a ``config.json`` that says otherwise (an edited T or
parameterization) is refused with one line instead of silently rebuilding a different model. Resume
is resolved here once: :func:`resume_point` picks the latest checkpoint, applies the config rule, and
accepts a given configuration only where it agrees (``train.steps`` may change).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Iterable, NamedTuple, Optional, Union

import torch

from undiffuse.build import DataInfo, architecture_signature
from undiffuse.config import RunConfig, apply_overrides, from_dict, to_dict
from undiffuse.errors import CheckpointError, TrainingError
from undiffuse.runs.checkpoint import (
    Checkpoint,
    check_signature,
    latest_checkpoint,
    load_checkpoint,
    read_newest,
    read_state,
    read_weights,
)
from undiffuse.runs.rundir import config_diff, describe_diff, read_config_json, refuse_config_edit

__all__ = ["Opened", "ResumePoint", "open_checkpoint", "resume_point", "saved_config", "given_config",
           "merge_resume_config"]  # fmt: skip

PathLike = Union[str, os.PathLike]
_MAY_CHANGE = ("train.steps",)  # the one setting a resumed run may change


class Opened(NamedTuple):
    """A checkpoint opened for use: its configuration and data info, path, state.json and weights."""

    config: RunConfig
    data_info: DataInfo
    path: Path
    state: dict
    weights: dict[str, torch.Tensor]


class ResumePoint(NamedTuple):
    """Where a resumed run continues: the merged configuration and the loaded checkpoint."""

    config: RunConfig
    checkpoint: Checkpoint


def _diffusion_json(run_dir: PathLike) -> Optional[dict]:
    """config.json without its "kind" key (None if absent); refuses a run of another kind."""
    d = read_config_json(run_dir)
    if d is None:
        return None
    kind = d.pop("kind", "diffusion")
    if kind != "diffusion":
        raise CheckpointError(f"{run_dir} holds a {kind} run, not a diffusion model — use the commands for {kind} runs")
    return d


def _apply_config_rule(run_dir: PathLike, path: Path, state: dict) -> tuple[RunConfig, DataInfo]:
    """The checkpoint's config and data info, after refusing a config.json that contradicts them."""
    cfg, info = from_dict(state["config"]), DataInfo.from_dict(state["data_info"])
    d = _diffusion_json(run_dir)
    if d is not None:
        json_cfg = from_dict(d)
        check_signature(path, state, architecture_signature(json_cfg, info))
        refuse_config_edit(run_dir, path, config_diff(to_dict(json_cfg), to_dict(cfg), _MAY_CHANGE))
    return cfg, info


def open_checkpoint(
    run_dir: PathLike, checkpoint: Union[str, PathLike, int, None] = None, ema: bool = True
) -> Opened:
    """Open a checkpoint of a diffusion run for sampling: resolve it (None: the latest, skipping one
    pruned while being read), read its state, apply the config rule, and read its EMA (or raw) weights,
    refusing non-finite ones. Raises CheckpointError/ConfigError with one line."""
    name = "ema.safetensors" if ema else "model.safetensors"

    def read(path: Path) -> Opened:
        state = read_state(path)
        if "data_info" not in state:
            raise CheckpointError(f"checkpoint {path} is not a diffusion checkpoint (no data_info) — pass a checkpoint of a diffusion run")
        cfg, info = _apply_config_rule(run_dir, path, state)
        return Opened(cfg, info, path, state, read_weights(path, name))

    return read_newest(run_dir, checkpoint, read)


def _nothing_to_resume(run_dir: PathLike) -> TrainingError:
    return TrainingError(f"nothing to resume: {run_dir} holds no checkpoint — start a new run without --resume "
                         "(into an empty or new directory)")  # fmt: skip


def saved_config(run_dir: PathLike) -> RunConfig:
    """The configuration a run was trained with: its latest checkpoint's (the one that rules), else its
    config.json (a run stopped before its first checkpoint)."""
    ckpt = latest_checkpoint(run_dir) if Path(run_dir).is_dir() else None
    if ckpt is not None:
        return from_dict(read_state(ckpt)["config"])
    d = _diffusion_json(run_dir)
    if d is None:
        raise _nothing_to_resume(run_dir)
    return from_dict(d)


def given_config(run_dir: PathLike, overrides: Iterable[str] = (), data: Optional[str] = None,
                 preset: Optional[str] = None) -> RunConfig:  # fmt: skip
    """What ``train --resume --out RUN_DIR [--data D] [--preset P] [--set k=v …]`` gives: the saved
    configuration with those settings applied (:func:`resume_point` then refuses any that contradict it)."""
    saved = saved_config(run_dir)
    if preset is not None and preset != saved.preset:
        raise TrainingError(f"--preset {preset} contradicts the saved run's preset {saved.preset} — drop --preset when resuming")
    given = saved if data is None else replace(saved, data=replace(saved.data, name=data))
    return apply_overrides(given, overrides)


def merge_resume_config(saved: RunConfig, given: Optional[RunConfig], steps: Optional[int]) -> RunConfig:
    """The saved config with ``train.steps`` from ``steps`` (or ``given``); refuse any other difference, and a
    total past the end of a cosine decay to 0 (:func:`undiffuse.training.step.lr_at`: those steps would train at
    learning rate 0)."""
    if given is not None:
        diff = config_diff(to_dict(saved), to_dict(given), _MAY_CHANGE)
        if diff:
            raise TrainingError(
                f"resume would change the run's configuration ({describe_diff(diff, 'saved', 'given')}) — drop those "
                "settings when resuming, or start a new run in another directory"
            )
        if steps is None:
            steps = given.train.steps
    t = saved.train
    end = t.warmup_steps + t.decay_steps
    if steps is not None and steps > max(t.steps, end) and t.lr_schedule == "cosine" and t.min_lr == 0:
        raise TrainingError(f"the run's learning rate is cosine-decayed to train.min_lr = 0 by step {end}, so training "
                            f"on to {steps} steps would change nothing — start a new run with --steps {steps}")  # fmt: skip
    if steps is not None:
        saved = replace(saved, train=replace(t, steps=steps))
    return saved


def resume_point(run_dir: PathLike, given: Optional[RunConfig], steps: Optional[int],
                 map_location: Union[str, torch.device] = "cpu") -> ResumePoint:  # fmt: skip
    """Resolve a resumed run once: the latest checkpoint (weights, EMA, optimizer; all finite), the
    config rule against config.json, then ``given`` merged (TrainingError if there is nothing to resume
    or ``given`` contradicts the checkpoint)."""
    if latest_checkpoint(run_dir) is None:
        raise _nothing_to_resume(run_dir)

    def read(path: Path) -> ResumePoint:
        ckpt = load_checkpoint(path, map_location=map_location)
        cfg, _ = _apply_config_rule(run_dir, path, ckpt.state)
        return ResumePoint(merge_resume_config(cfg, given, steps), ckpt)

    return read_newest(run_dir, None, read)
