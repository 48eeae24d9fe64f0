"""The study of issue 5: diffusion vs GAN vs VAE (and, on Fashion-MNIST, diffusers' own recipe) on the same
data, the same compute budget and the same metrics, over several seeds.

::

    undiffuse study --only toys --seeds 3 --out benchmarks/results/study
    undiffuse study --only fmnist --seeds 1 --minutes 10

Units of work are (dataset, model, seed). Each one trains (its run directory lives under
``OUT/runs/``, git-ignored), samples, evaluates and then writes ``OUT/<unit>.json``; a unit whose JSON
exists is skipped, so an interrupted study resumes where it stopped. ``OUT/summary.json`` and
``OUT/summary.md`` aggregate the finished units (mean ± standard deviation and min–max over seeds).

Budgets are *CPU* seconds of the training process (``time.process_time``) with one torch thread for
every model: the machines this runs on are shared, and wall-clock budgets would hand each model
whatever share of the cores the other jobs left. With one thread, a CPU second is a second of one
core. Baselines train in chunks of steps with exact resume (the chunking only adds checkpoint writes).

Modules, bottom to top: ``common`` (datasets, units, settings, the CPU clock, reading results), ``peer``
(diffusers' recipe), ``units`` (one unit: train, sample, evaluate), ``summary`` (aggregation, cost, FID,
plots), ``run`` (:func:`run_study`: the units, then the summary).
"""

from undiffuse.study.common import (
    FMNIST,
    FMNIST_MODELS,
    TOY_DIFFUSION_OVERRIDES,
    TOY_MODELS,
    TOY_STEPS_PER_CPU_SECOND,
    TOYS,
    CpuBudget,
    StudySettings,
    Unit,
    fmnist_units,
    load_results,
    toy_diffusion_overrides,
    toy_units,
)
from undiffuse.study.peer import PEER_SAMPLER, PEER_TRAIN, PEER_UNET, sample_peer, train_peer
from undiffuse.study.run import run_study
from undiffuse.study.summary import (
    METRICS,
    aggregate,
    fid_report,
    measure_cost,
    merge_fid,
    plot_study,
    run_fid,
    summary_markdown,
)
from undiffuse.study.units import run_unit

__all__ = [
    "FMNIST", "FMNIST_MODELS", "METRICS", "PEER_SAMPLER", "PEER_TRAIN", "PEER_UNET", "TOYS", "TOY_DIFFUSION_OVERRIDES",
    "TOY_MODELS", "TOY_STEPS_PER_CPU_SECOND", "CpuBudget", "StudySettings", "Unit", "aggregate", "fid_report", "fmnist_units",
    "load_results", "measure_cost", "merge_fid", "plot_study", "run_fid", "run_study", "run_unit", "sample_peer",
    "summary_markdown", "toy_diffusion_overrides", "toy_units", "train_peer",
]  # fmt: skip
