"""Units of the study: (dataset, model, seed) cells, their budgets, training and evaluation."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from undiffuse.io import atomic_path

__all__ = [
    "FMNIST",
    "FMNIST_MODELS",
    "TOYS",
    "TOY_MODELS",
    "CpuBudget",
    "StudySettings",
    "Unit",
    "fmnist_units",
    "load_results",
    "run_study",
    "run_unit",
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


def _write_json(path: Path, obj: Any) -> None:
    from undiffuse.evaluation.report import _jsonable

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(_jsonable(obj), indent=2) + "\n")


def run_study(
    out_dir: str | os.PathLike, units: Sequence[Unit], settings: Optional[StudySettings] = None,
    runner: Optional[Callable[[Unit, Path, StudySettings], dict]] = None, log: Callable[[str], None] = print,
) -> list[dict]:  # fmt: skip
    """Run every unit whose ``OUT/<unit>.json`` does not exist yet (in order), then write the summary.

    ``runner(unit, run_dir, settings) -> dict`` does the work (default :func:`run_unit`); a runner that
    raises leaves no JSON, so the unit is retried on the next call. Returns the results of all units
    (finished before or now), in order.
    """
    settings = settings or StudySettings()
    runner = runner or run_unit
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _ensure_gitignore(out)
    results = []
    for unit in units:
        path = out / f"{unit.name}.json"
        if path.is_file():
            log(f"[study] {unit.name}: done already ({path.name}), skipped")
            results.append(json.loads(path.read_text()))
            continue
        log(f"[study] {unit.name}: running")
        t0 = time.perf_counter()
        res = runner(unit, out / "runs" / unit.name, settings)
        res = {"unit": asdict(unit), "name": unit.name, **res, "unit_wall_seconds": time.perf_counter() - t0}
        _write_json(path, res)
        log(f"[study] {unit.name}: {_brief(res)}")
        results.append(res)
    from undiffuse.study.summary import aggregate, summary_markdown

    all_results = load_results(out)
    _write_json(out / "summary.json", aggregate(all_results))
    with atomic_path(out / "summary.md") as tmp:
        Path(tmp).write_text(summary_markdown(aggregate(all_results)))
    return results


def _ensure_gitignore(out: Path) -> None:
    gi = out / ".gitignore"
    if not gi.exists():
        gi.write_text(
            "# trained runs and samples stay local; the per-unit JSON and the summaries are committed\nruns/\n*.npy\n"
        )


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


def _brief(r: dict) -> str:
    keys = ("modes_covered", "high_quality_share", "classifier_fd", "precision", "recall", "bits_per_dim",
            "seconds_per_sample", "train_steps", "collapsed")  # fmt: skip
    return ", ".join(
        f"{k}={r[k]:.4g}" if isinstance(r.get(k), float) else f"{k}={r.get(k)}" for k in keys if k in r
    )


# --- one unit ------------------------------------------------------------------------------------------


class CpuBudget:
    """CPU seconds of this process since creation (``time.process_time``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.t0 = seconds, time.process_time()

    @property
    def used(self) -> float:
        return time.process_time() - self.t0

    def expired(self) -> bool:
        return self.used >= self.seconds


def run_unit(unit: Unit, run_dir: Path, settings: StudySettings) -> dict:
    """Train ``unit.model`` on ``unit.dataset`` for the budget, then sample and evaluate it."""
    torch.set_num_threads(settings.threads)
    run_dir = Path(run_dir)
    toy = unit.dataset.startswith("toy:")
    budget = settings.toy_seconds if toy else settings.fmnist_seconds
    if unit.model == "diffusion":
        train = _train_diffusion(unit, run_dir, budget, toy)
    elif unit.model in ("gan", "vae"):
        train = _train_baseline(unit, run_dir, budget, toy)
    elif unit.model == "diffusers":
        from undiffuse.study.peer import train_peer

        train = train_peer(run_dir, budget, unit.seed)
    else:
        raise ValueError(f"unknown model {unit.model!r}")
    res: dict[str, Any] = {"train": train, "train_steps": train.get("steps"), "budget_cpu_seconds": budget,
                           "threads": settings.threads}  # fmt: skip
    if train.get("failed") and not train.get("has_checkpoint"):
        res.update(collapsed=True, collapse_reason=train.get("error"))
        return res
    res.update(_evaluate_unit(unit, run_dir, settings, toy))
    nan_loss = bool(train.get("nan_loss"))
    if toy:
        few_modes = res.get("modes_covered", 0) < 0.5 * res.get("n_modes", 1)
        res["collapsed"] = nan_loss or few_modes
        res["collapse_reason"] = (
            "NaN loss" if nan_loss else ("< 50 % of modes covered" if few_modes else None)
        )
    else:
        few = res.get("classes_covered_1pct", 10) < 5
        res["collapsed"] = nan_loss or few
        res["collapse_reason"] = (
            "NaN loss" if nan_loss else ("< 5 of 10 classes with ≥ 1 % of samples" if few else None)
        )
    return res


def _train_diffusion(unit: Unit, run_dir: Path, budget: float, toy: bool) -> dict:
    from undiffuse.config import resolve_config
    from undiffuse.errors import TrainingError
    from undiffuse.training import train

    overrides = [
        *(toy_diffusion_overrides(budget) if toy else FMNIST_DIFFUSION_OVERRIDES),
        f"train.seed={unit.seed}",
    ]
    cfg = resolve_config(unit.dataset, None, overrides)
    clock = CpuBudget(budget)

    def on_step(step: int, stats: dict) -> None:
        if clock.expired():
            raise KeyboardInterrupt

    out: dict[str, Any] = {"config_overrides": overrides, "preset": cfg.preset}
    try:
        s = train(cfg, run_dir, progress=False, on_step=on_step, device="cpu")
        out.update(steps=s.step, loss=s.loss, cpu_seconds=clock.used, wall_seconds=s.seconds,
                   batch_size=cfg.train.batch_size)  # fmt: skip
    except (
        TrainingError
    ) as e:  # NaN loss: the last good checkpoint (if any) is kept, the run counts as collapsed
        if "became NaN" not in str(e) and "became inf" not in str(e):
            raise  # anything else (disk, directory) is not a result: no JSON, the unit is retried
        out.update(failed=True, nan_loss=True, error=str(e), cpu_seconds=clock.used)
    out["has_checkpoint"] = any(run_dir.glob("**/ema.safetensors"))
    import undiffuse.api as api

    if out["has_checkpoint"]:
        m = api.load(run_dir, device="cpu")
        out["params"] = sum(p.numel() for p in m.denoiser.net.parameters())
    return out


def _diffusion_params(dataset: str) -> int:
    from undiffuse.build import DataInfo, build_denoiser
    from undiffuse.config import resolve_config
    from undiffuse.data import load_dataset

    cfg = resolve_config(dataset, None, [])
    ds = load_dataset(dataset, "test")
    return sum(p.numel() for p in build_denoiser(cfg, DataInfo.from_dataset(ds)).net.parameters())


def _train_baseline(unit: Unit, run_dir: Path, budget: float, toy: bool) -> dict:
    """GAN/VAE with the diffusion network's parameter count, for ``budget`` CPU seconds (chunks + resume)."""
    from undiffuse.baselines import train_baseline

    target = _diffusion_params(unit.dataset)
    clock = CpuBudget(budget)
    steps, chunk, resume, s = 0, 5, False, {}
    while not clock.expired():
        c0, s0 = clock.used, steps
        s = train_baseline(unit.model, unit.dataset, run_dir, steps=steps + chunk, seed=unit.seed, resume=resume,
                           target_params=None if resume else target, log_every=50)  # fmt: skip
        steps, resume = s["steps"], True
        rate = (steps - s0) / max(clock.used - c0, 1e-6)  # steps per CPU second, overhead included
        left = budget - clock.used
        chunk = max(5, min(int(0.6 * left * rate), 2000))
    nan = _baseline_nan(run_dir)
    return {"steps": steps, "cpu_seconds": clock.used, "params": s.get("params"), "last": s.get("last"),
            "target_params": target, "nan_loss": nan, "has_checkpoint": True}  # fmt: skip


def _baseline_nan(run_dir: Path) -> bool:
    p = run_dir / "log.jsonl"
    if not p.exists():
        return False
    for line in p.read_text().splitlines():
        for v in json.loads(line).values():
            if isinstance(v, float) and not math.isfinite(v):
                return True
    return False


def _evaluate_unit(unit: Unit, run_dir: Path, settings: StudySettings, toy: bool) -> dict:
    from undiffuse.evaluation.report import evaluate_samples, sample_run

    n = settings.toy_samples if toy else settings.fmnist_samples
    res: dict[str, Any] = {}
    if unit.model == "diffusers":
        from undiffuse.study.peer import sample_peer

        x, info = sample_peer(run_dir, n, seed=0)
    else:
        sampler, steps = TOY_SAMPLER if toy else FMNIST_SAMPLER
        x, info = sample_run(run_dir, range(n), 0, sampler=sampler, steps=steps, batch_size=500, device="cpu")
    res["sampling"] = info
    res["seconds_per_sample"], res["nfe"] = info["seconds_per_sample"], info["nfe"]
    _save_samples(run_dir, x, toy)
    ev = evaluate_samples(x, unit.dataset, "test", device="cpu")
    res.update({k: v for k, v in ev.items() if k not in ("data", "kind")})
    res["nll"] = _nll(unit, run_dir, settings, toy)
    res["bits_per_dim"] = (res["nll"] or {}).get("bits_per_dim")
    return res


def _save_samples(run_dir: Path, x: torch.Tensor, toy: bool) -> None:
    from undiffuse.data import to_uint8

    arr = x.numpy().astype(np.float32) if toy else to_uint8(x).numpy()
    with atomic_path(run_dir / "samples.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)


def _nll(unit: Unit, run_dir: Path, settings: StudySettings, toy: bool) -> Optional[dict]:
    n = settings.nll_n_toy if toy else settings.nll_n_fmnist
    t0 = time.perf_counter()
    if unit.model == "diffusion":
        import undiffuse.api as api

        m = api.load(run_dir, device="cpu")
        r = api.nll(m, api.eval_data(m, None, "test", n), n_t=settings.nll_nt)
        r = {k: v for k, v in r.items() if k != "kl_strata"}
        r["bound"] = f"VLB, stratified over t (n_t = {settings.nll_nt})"
    elif unit.model == "vae":
        from undiffuse.baselines import baseline_nll

        r = baseline_nll(run_dir, "test", n=n)
        r["bound"] = "ELBO"
    else:
        return {
            "bits_per_dim": None,
            "note": "no likelihood (GAN)" if unit.model == "gan" else "not measured",
        }
    r["seconds"] = time.perf_counter() - t0
    return r
