"""One unit of the study, (dataset, model, seed): train for the budget, then sample and evaluate."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from undiffuse.io import write_npy
from undiffuse.study.common import (
    FMNIST_DIFFUSION_OVERRIDES,
    FMNIST_SAMPLER,
    TOY_SAMPLER,
    CpuBudget,
    StudySettings,
    Unit,
    toy_diffusion_overrides,
)
from undiffuse.study.peer import sample_peer, train_peer

__all__ = ["run_unit"]


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
    if out["has_checkpoint"]:
        from undiffuse.model import load

        m = load(run_dir, device="cpu")
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
    from undiffuse.evaluation.report import evaluate_samples
    from undiffuse.evaluation.runs import sample_run

    n = settings.toy_samples if toy else settings.fmnist_samples
    res: dict[str, Any] = {}
    if unit.model == "diffusers":
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
    write_npy(arr, run_dir / "samples.npy")


def _nll(unit: Unit, run_dir: Path, settings: StudySettings, toy: bool) -> Optional[dict]:
    n = settings.nll_n_toy if toy else settings.nll_n_fmnist
    t0 = time.perf_counter()
    if unit.model == "diffusion":
        from undiffuse.evaluation.nll import eval_data, nll
        from undiffuse.model import load

        m = load(run_dir, device="cpu")
        r = nll(m, eval_data(m, None, "test", n), n_t=settings.nll_nt)
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
