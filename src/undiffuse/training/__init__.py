"""Training: the trainer, EMA, checkpoints, distributed helpers, keyed randomness, plots."""

from undiffuse.training.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from undiffuse.training.ema import EMA, ema_beta
from undiffuse.training.rundir import resume_config, saved_config
from undiffuse.training.step import lr_at
from undiffuse.training.trainer import TrainSummary, train

__all__ = [
    "EMA",
    "TrainSummary",
    "ema_beta",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "lr_at",
    "resume_config",
    "save_checkpoint",
    "saved_config",
    "train",
]
