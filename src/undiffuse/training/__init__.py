"""Training: the trainer, EMA, distributed helpers, keyed randomness (checkpoints: :mod:`undiffuse.runs`)."""

from undiffuse.training.ema import EMA, ema_beta
from undiffuse.training.step import lr_at
from undiffuse.training.trainer import TrainSummary, train

__all__ = [
    "EMA",
    "TrainSummary",
    "ema_beta",
    "lr_at",
    "train",
]
