"""The study's shared basics (the bottom of the package): datasets and models, per-unit settings and budgets,
the units, the CPU clock and reading finished units back."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FMNIST",
    "FMNIST_DIFFUSION_OVERRIDES",
    "FMNIST_MODELS",
    "FMNIST_SAMPLER",
    "TOYS",
    "TOY_DIFFUSION_OVERRIDES",
    "TOY_MODELS",
    "TOY_SAMPLER",
    "TOY_STEPS_PER_CPU_SECOND",
    "CpuBudget",
    "StudySettings",
    "Unit",
    "fmnist_units",
    "load_results",
    "toy_diffusion_overrides",
    "toy_units",
]

TOYS = ("toy:25gaussians", "toy:8gaussians")
TOY_MODELS = ("diffusion", "gan", "vae")
FMNIST = "fashion-mnist"
FMNIST_MODELS = ("diffusion", "gan", "vae", "diffusers")

# The diffusion settings of the toy units, on top of the ``toy`` preset (config.py is not changed):
# no periodic samples/validation/checkpoints inside the budget, a horizon the budget always stops first.
# Batch 256 and a cosine decay of the learning rate to 1e-5 over the steps the budget affords
# (TOY_STEPS_PER_CPU_SECOND, measured: 1,317 steps in 30 CPU-s, 11,352 in 240 CPU-s; the toy preset keeps a
# constant rate): on 25 Gaussians, more steps per CPU second and an annealed rate gave the sharpest modes.
TOY_DIFFUSION_OVERRIDES = ("train.sample_every=0", "train.val_every=0", "train.ckpt_every=0", "train.steps=100000000",
                           "train.batch_size=256", "train.lr_schedule=cosine", "train.min_lr=1e-5")  # fmt: skip
TOY_STEPS_PER_CPU_SECOND = 46.0


def toy_diffusion_overrides(budget: float) -> tuple[str, ...]:
    """The toy units' overrides with the cosine horizon of ``budget`` CPU seconds (rounded to 100 steps)."""
    decay = max(100, int(round(TOY_STEPS_PER_CPU_SECOND * budget / 100)) * 100)
    return (*TOY_DIFFUSION_OVERRIDES, f"train.decay_steps={decay}")


TOY_SAMPLER = ("ddpm", 1000)  # ancestral sampling over all T steps: the precise one on σ = 0.02–0.05 modes
FMNIST_DIFFUSION_OVERRIDES = (
    "train.sample_every=0",
    "train.val_every=0",
    "train.ckpt_every=0",
    "train.steps=100000000",
)
FMNIST_SAMPLER = ("ddim", 50)


@dataclass(frozen=True)
class Unit:
    """One (dataset, model, seed) cell of the study."""

    dataset: str
    model: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.dataset.replace(':', '_')}-{self.model}-s{self.seed}"


@dataclass
class StudySettings:
    """Budgets and sizes. ``toy_seconds`` / ``fmnist_seconds`` are CPU seconds of training per unit."""

    toy_seconds: float = 240.0
    fmnist_seconds: float = 600.0
    toy_samples: int = 2500
    fmnist_samples: int = 1000
    nll_n_toy: int = 500
    nll_n_fmnist: int = 500
    nll_nt: int = 50
    threads: int = 1
    fid_samples: int = 2000


def toy_units(seeds: int) -> list[Unit]:
    return [Unit(d, m, s) for d in TOYS for s in range(seeds) for m in TOY_MODELS]


def fmnist_units(seeds: int) -> list[Unit]:
    # seed-major: one seed of every model first, so a short sitting still yields a full comparison
    return [Unit(FMNIST, m, s) for s in range(seeds) for m in FMNIST_MODELS]


class CpuBudget:
    """CPU seconds of this process since creation (``time.process_time``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.t0 = seconds, time.process_time()

    @property
    def used(self) -> float:
        return time.process_time() - self.t0

    def expired(self) -> bool:
        return self.used >= self.seconds


def load_results(out: str | os.PathLike) -> list[dict]:
    """Every finished unit's JSON in OUT (not the summary)."""
    res = []
    for p in sorted(Path(out).glob("*.json")):
        if p.name.startswith("summary"):
            continue
        try:
            d = json.loads(p.read_text())
        except ValueError:
            continue
        if "unit" in d:
            res.append(d)
    return res
