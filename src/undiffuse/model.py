"""A trained model as one object: :func:`load` a run directory → :class:`Model` (denoiser, schedule,
config, data info). Sampling, conditioning and likelihood take a :class:`Model`
(:mod:`undiffuse.sampling`, :mod:`undiffuse.conditioning`, :mod:`undiffuse.evaluation.nll`): a model
is data, the functions that use it live one floor up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from undiffuse.build import DataInfo, build_denoiser
from undiffuse.config import RunConfig
from undiffuse.diffusion.precond import Precond
from undiffuse.rng import pick_device
from undiffuse.runs import load_weights_into, open_checkpoint
from undiffuse.schedules.discrete import Schedule

__all__ = ["Model", "load"]


@dataclass
class Model:
    """A trained model: the denoiser (network + preconditioning), its schedule, config and data info."""

    denoiser: Precond
    schedule: Schedule
    config: RunConfig
    data: DataInfo
    step: int
    checkpoint: Optional[Path] = None
    ema: bool = True

    @property
    def precond(self) -> Precond:
        return self.denoiser

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def run_dir(self) -> Optional[Path]:
        """The run directory the checkpoint belongs to (RUN/checkpoints/step_N → RUN)."""
        return self.checkpoint.parent.parent if self.checkpoint is not None else None


def load(
    run_dir: Union[str, os.PathLike], checkpoint: Union[str, os.PathLike, int, None] = None, ema: bool = True,
    device: Union[str, torch.device, None] = None,
) -> Model:  # fmt: skip
    """Load a trained model from a run directory.

    Args:
        run_dir: the training run's output directory.
        checkpoint: None for the latest; a step number, "step_N", or a checkpoint directory.
        ema: the EMA weights (default) or the raw weights.
        device: where to put it (default: cuda, mps or cpu, whichever is available).
    Raises:
        CheckpointError: missing, truncated, corrupt or non-finite checkpoint, one of another architecture,
            or a config.json that contradicts the checkpoint's own configuration (which rules).
    """
    cfg, info, path, state, weights = open_checkpoint(run_dir, checkpoint, ema)
    precond = build_denoiser(cfg, info)
    load_weights_into(precond.net, weights, path)
    precond.to(pick_device(device)).eval().requires_grad_(False)
    return Model(precond, precond.schedule, cfg, info, int(state["step"]), path, ema)
