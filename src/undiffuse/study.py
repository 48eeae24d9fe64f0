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
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch

from undiffuse.io import atomic_path

__all__ = [
    "FMNIST_MODELS",
    "TOYS",
    "TOY_MODELS",
    "StudySettings",
    "Unit",
    "aggregate",
    "fmnist_units",
    "run_study",
    "run_unit",
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
FMNIST_DIFFUSION_OVERRIDES = ("train.sample_every=0", "train.val_every=0", "train.ckpt_every=0", "train.steps=100000000")
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
    all_results = load_results(out)
    _write_json(out / "summary.json", aggregate(all_results))
    with atomic_path(out / "summary.md") as tmp:
        Path(tmp).write_text(summary_markdown(aggregate(all_results)))
    return results


def _ensure_gitignore(out: Path) -> None:
    gi = out / ".gitignore"
    if not gi.exists():
        gi.write_text("# trained runs and samples stay local; the per-unit JSON and the summaries are committed\nruns/\n*.npy\n")


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
    return ", ".join(f"{k}={r[k]:.4g}" if isinstance(r.get(k), float) else f"{k}={r.get(k)}" for k in keys if k in r)


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
        res["collapse_reason"] = "NaN loss" if nan_loss else ("< 50 % of modes covered" if few_modes else None)
    else:
        few = res.get("classes_covered_1pct", 10) < 5
        res["collapsed"] = nan_loss or few
        res["collapse_reason"] = "NaN loss" if nan_loss else ("< 5 of 10 classes with ≥ 1 % of samples" if few else None)
    return res


def _train_diffusion(unit: Unit, run_dir: Path, budget: float, toy: bool) -> dict:
    from undiffuse.config import resolve_config
    from undiffuse.errors import TrainingError
    from undiffuse.training import train

    overrides = [*(toy_diffusion_overrides(budget) if toy else FMNIST_DIFFUSION_OVERRIDES), f"train.seed={unit.seed}"]
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
    except TrainingError as e:  # NaN loss: the last good checkpoint (if any) is kept, the run counts as collapsed
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
        return {"bits_per_dim": None, "note": "no likelihood (GAN)" if unit.model == "gan" else "not measured"}
    r["seconds"] = time.perf_counter() - t0
    return r


# --- the peer row: diffusers' own unconditional-training recipe -------------------------------------------

# diffusers examples/unconditional_image_generation/train_unconditional.py, defaults kept except where noted:
# 64×64 RGB, block_out_channels (128, 128, 256, 256, 512, 512) with six levels (attention in the 5th) →
# 28×28 grey padded to 32×32 with the background value −1, four levels (32, 32, 64, 64), attention in the
# 3rd (at 8×8: the example attends at 4×4 of 64, i.e. its second-lowest level, as here). Everything else
# as the example: layers_per_block 2, AdamW(1e-4, β = (0.95, 0.999), wd 1e-6, eps 1e-8), cosine schedule
# with 500 warm-up steps, gradient clipping 1.0, EMA (EMAModel: max decay 0.9999, inv_gamma 1, power 3/4),
# ε-prediction, linear β over 1000 steps, batch 16.
PEER_UNET = dict(sample_size=32, in_channels=1, out_channels=1, layers_per_block=2,
                 block_out_channels=(32, 32, 64, 64),
                 down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))  # fmt: skip
PEER_TRAIN = dict(lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8, warmup=500, batch=16, grad_clip=1.0,
                  ema_max_decay=0.9999, ema_inv_gamma=1.0, ema_power=0.75, T=1000, beta_schedule="linear")  # fmt: skip
PEER_SAMPLER = ("ddim", 50)  # the example samples with 1000 DDPM steps; 50 DDIM steps here (20× cheaper)


def _pad32(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)


def train_peer(run_dir: Path, budget: float, seed: int) -> dict:
    """diffusers' recipe (see PEER_UNET / PEER_TRAIN) on Fashion-MNIST for ``budget`` CPU seconds."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

    from undiffuse.data import load_dataset

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    hp = PEER_TRAIN
    x_all = load_dataset(FMNIST, "train").x
    torch.manual_seed(seed)
    model = UNet2DModel(**PEER_UNET)
    sched = DDPMScheduler(num_train_timesteps=hp["T"], beta_schedule=hp["beta_schedule"], prediction_type="epsilon")
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], betas=hp["betas"], weight_decay=hp["weight_decay"],
                            eps=hp["eps"])  # fmt: skip
    horizon = {"steps": None}

    def lr_lambda(step: int) -> float:  # = diffusers.optimization.get_cosine_schedule_with_warmup
        if step < hp["warmup"]:
            return step / max(1, hp["warmup"])
        total = horizon["steps"] or 10**9
        progress = (step - hp["warmup"]) / max(1, total - hp["warmup"])
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    ema = EMAModel(model.parameters(), decay=hp["ema_max_decay"], use_ema_warmup=True, inv_gamma=hp["ema_inv_gamma"],
                   power=hp["ema_power"])  # fmt: skip
    gen = torch.Generator().manual_seed(seed + 1)
    clock = CpuBudget(budget)
    step, losses, nan = 0, [], False
    model.train()
    while not clock.expired():
        idx = torch.randint(len(x_all), (hp["batch"],), generator=gen)
        x0 = _pad32(x_all[idx])
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, hp["T"], (len(x0),), generator=gen)
        xt = sched.add_noise(x0, noise, t)
        loss = torch.nn.functional.mse_loss(model(xt, t).sample.float(), noise)
        if not torch.isfinite(loss):
            nan = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        opt.step()
        lr_sched.step()
        ema.step(model.parameters())
        step += 1
        losses.append(loss.item())
        if step == 20:  # the cosine horizon: the steps the budget affords at the measured rate
            horizon["steps"] = max(hp["warmup"] + 1, int(step * budget / max(clock.used, 1e-6)))
    ema.copy_to(model.parameters())
    model.save_pretrained(run_dir / "unet", safe_serialization=True)
    sched.save_pretrained(run_dir / "scheduler")
    _write_json(run_dir / "peer.json", {"unet": PEER_UNET, "train": PEER_TRAIN, "steps": step,
                                         "cosine_horizon": horizon["steps"], "sampler": PEER_SAMPLER})  # fmt: skip
    return {"steps": step, "cpu_seconds": clock.used, "loss": float(np.mean(losses[-50:])) if losses else None,
            "params": sum(p.numel() for p in model.parameters()), "cosine_horizon": horizon["steps"],
            "batch_size": hp["batch"], "nan_loss": nan, "has_checkpoint": True, "recipe": {**PEER_UNET, **PEER_TRAIN}}  # fmt: skip


@torch.no_grad()
def sample_peer(run_dir: Path, n: int, seed: int = 0, batch_size: int = 250) -> tuple[torch.Tensor, dict]:
    """DDIM (η = 0, 50 steps, diffusers' DDIMScheduler from the training DDPMScheduler config), like
    DDIMPipeline; sample i's initial noise from its own generator; cropped back to 28×28."""
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

    from undiffuse.training.keyed import derive_seed

    run_dir = Path(run_dir)
    model = UNet2DModel.from_pretrained(run_dir / "unet", use_safetensors=True).eval()
    sched = DDIMScheduler.from_config(DDPMScheduler.from_pretrained(run_dir / "scheduler").config)
    sched.set_timesteps(PEER_SAMPLER[1])
    t0 = time.perf_counter()
    out = []
    for b in range(0, n, batch_size):
        gens = [torch.Generator().manual_seed(derive_seed(seed, "sample", i)) for i in range(b, min(n, b + batch_size))]
        x = torch.stack([torch.randn((1, 32, 32), generator=g) for g in gens])
        for t in sched.timesteps:
            x = sched.step(model(x, t).sample, t, x, eta=0.0).prev_sample
        out.append(x[..., 2:30, 2:30].clamp(-1, 1))
    seconds = time.perf_counter() - t0
    x = torch.cat(out)
    return x, {"kind": "diffusers", "nfe": len(sched.timesteps), "sampler": "diffusers DDIMScheduler, eta 0",
               "steps": PEER_SAMPLER[1], "seconds": seconds, "seconds_per_sample": seconds / n, "n": n}  # fmt: skip


# --- aggregation -----------------------------------------------------------------------------------------

METRICS = ("modes_covered", "high_quality_share", "kl_mode_hist", "classifier_fd", "fid", "classes_covered",
           "precision", "recall", "bits_per_dim", "nfe", "seconds_per_sample", "cpu_seconds_per_sample",
           "train_steps")  # fmt: skip


def _stats(values: list[float]) -> Optional[dict]:
    vals = [float(v) for v in values if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))]
    if not vals:
        return None
    a = np.asarray(vals)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "n": len(a)}  # fmt: skip


def aggregate(results: Iterable[dict]) -> dict:
    """Per (dataset, model): mean / std / min / max over seeds of each metric, and the collapsed runs."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["unit"]["dataset"], r["unit"]["model"]), []).append(r)
    rows = []
    for (dataset, model), rs in groups.items():
        row = {"dataset": dataset, "model": model, "seeds": sorted(r["unit"]["seed"] for r in rs),
               "collapsed": [r["name"] for r in rs if r.get("collapsed")]}  # fmt: skip
        for m in METRICS:
            st = _stats([r.get(m) for r in rs])
            if st is not None:
                row[m] = st
        rows.append(row)
    return {"rows": rows}


def _cell(row: dict, key: str, fmt: str = "{:.3g}", pct: bool = False) -> str:
    st = row.get(key)
    if not st:
        return "n/a"
    f = (lambda v: f"{100 * v:.1f} %") if pct else (lambda v: fmt.format(v))
    if st["n"] == 1:
        return f(st["mean"])
    return f"{f(st['mean'])} ± {f(st['std'])} [{f(st['min'])}–{f(st['max'])}]"


def summary_markdown(summary: dict) -> str:
    """The study tables (mean ± std [min–max] over seeds)."""
    rows = summary["rows"]
    lines = []
    toys = [r for r in rows if r["dataset"].startswith("toy:")]
    if toys:
        lines += ["| data | model | seeds | modes covered | high-quality share | precision | recall | NLL bits/dim "
                  "(continuous) | NFE / sample | CPU s / sample | train steps | collapsed |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in toys:
            lines.append(f"| {r['dataset']} | {r['model']} | {len(r['seeds'])} | {_cell(r, 'modes_covered')} | "
                         f"{_cell(r, 'high_quality_share', pct=True)} | {_cell(r, 'precision')} | {_cell(r, 'recall')} | "
                         f"{_cell(r, 'bits_per_dim')} | {_cell(r, 'nfe', '{:.0f}')} | {_cell(r, 'cpu_seconds_per_sample', '{:.2e}')} | "
                         f"{_cell(r, 'train_steps', '{:.0f}')} | {', '.join(r['collapsed']) or 'none'} |")  # fmt: skip
        lines.append("")
    imgs = [r for r in rows if not r["dataset"].startswith("toy:")]
    if imgs:
        lines += ["| data | model | seeds | classifier FD | FID | classes covered | precision | recall | NLL bits/dim "
                  "(discrete) | NFE / sample | CPU s / sample | train steps | collapsed |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in imgs:
            lines.append(f"| {r['dataset']} | {r['model']} | {len(r['seeds'])} | {_cell(r, 'classifier_fd')} | "
                         f"{_cell(r, 'fid')} | {_cell(r, 'classes_covered', '{:.0f}')} | {_cell(r, 'precision')} | "
                         f"{_cell(r, 'recall')} | {_cell(r, 'bits_per_dim')} | {_cell(r, 'nfe', '{:.0f}')} | "
                         f"{_cell(r, 'cpu_seconds_per_sample', '{:.2e}')} | {_cell(r, 'train_steps', '{:.0f}')} | "
                         f"{', '.join(r['collapsed']) or 'none'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


# --- sampling cost on a quiet footing --------------------------------------------------------------------


def measure_cost(out_dir: str | os.PathLike, n_toy: int = 200, n_image: int = 50, log=print) -> None:
    """CPU seconds per sample (one thread, ``time.process_time``) of every finished unit's model, on ``n``
    samples, written into its JSON as ``cpu_seconds_per_sample``: wall-clock times on a shared machine
    measure the other jobs as much as the model."""
    out = Path(out_dir)
    torch.set_num_threads(1)
    for r in load_results(out):
        if "cpu_seconds_per_sample" in r or r.get("nfe") is None:
            continue
        unit, run_dir = Unit(**r["unit"]), out / "runs" / r["name"]
        if not run_dir.is_dir():
            continue
        toy = unit.dataset.startswith("toy:")
        n = n_toy if toy else n_image
        c0 = time.process_time()
        if unit.model == "diffusers":
            sample_peer(run_dir, n, seed=1, batch_size=n)
        else:
            from undiffuse.evaluation.report import sample_run

            sampler, steps = TOY_SAMPLER if toy else FMNIST_SAMPLER
            sample_run(run_dir, range(n), 1, sampler=sampler, steps=steps, batch_size=n, device="cpu")
        r["cpu_seconds_per_sample"] = (time.process_time() - c0) / n
        r["cpu_cost_protocol"] = f"{n} samples in one batch, 1 torch thread, process CPU time (model loading included)"
        log(f"[study] cost of {r['name']}: {r['cpu_seconds_per_sample']:.3g} CPU s / sample")
        _write_json(out / f"{r['name']}.json", r)


# --- FID stage and plots -----------------------------------------------------------------------------------


def run_fid(out_dir: str | os.PathLike, unit_names: Sequence[str], n: int, n_ref: int, log=print) -> None:
    """Inception FID of the saved samples of the named units (``OUT/<unit>.fid.json``, resumable)."""
    from undiffuse.evaluation.report import evaluate_samples

    out = Path(out_dir)
    for name in unit_names:
        path = out / f"{name}.fid.json"
        samples = out / "runs" / name / "samples.npy"
        if path.is_file() or not samples.is_file():
            continue
        x = np.load(samples)[:n]
        log(f"[study] FID of {name}: {len(x)} samples vs {n_ref} test images")
        r = evaluate_samples(x, FMNIST, "test", metrics=(), fid=True, n_ref_fid=n_ref)
        _write_json(path, {k: r[k] for k in r if k.startswith(("fid", "kid"))})
        unit_json = out / f"{name}.json"
        if unit_json.is_file():
            d = json.loads(unit_json.read_text())
            d.update(fid=r.get("fid"), fid_protocol=r.get("fid_protocol"), kid=r.get("kid"))
            _write_json(unit_json, d)


def plot_study(out_dir: str | os.PathLike, image_dir: str | os.PathLike) -> list[Path]:
    """Toy scatter grids (seed 0 of each model) and metric bar charts with the spread over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, img = Path(out_dir), Path(image_dir)
    img.mkdir(parents=True, exist_ok=True)
    written = []
    results = load_results(out)
    toy_rows = [(d, m) for d in TOYS for m in TOY_MODELS]
    if any((out / "runs" / Unit(d, m, 0).name / "samples.npy").is_file() for d, m in toy_rows):
        from undiffuse.data import load_dataset

        fig, axes = plt.subplots(len(TOYS), len(TOY_MODELS), figsize=(4 * len(TOY_MODELS), 4 * len(TOYS)))
        for i, d in enumerate(TOYS):
            ref = load_dataset(d, "test").x[:2500].numpy()
            lim = 5.2 if "25" in d else 2.6
            for j, m in enumerate(TOY_MODELS):
                ax = axes[i, j]
                ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.8")
                p = out / "runs" / Unit(d, m, 0).name / "samples.npy"
                r = next((r for r in results if r["name"] == Unit(d, m, 0).name), None)
                if p.is_file():
                    x = np.load(p)
                    ax.scatter(x[:, 0], x[:, 1], s=1, c="C0" if m == "diffusion" else ("C3" if m == "gan" else "C2"))
                title = f"{d[4:]} — {m}"
                if r and "modes_covered" in r:
                    title += f"\n{r['modes_covered']}/{r['n_modes']} modes, {100 * r['high_quality_share']:.1f} % HQ"
                ax.set_title(title, fontsize=10)
                ax.set_xlim(-lim, lim)
                ax.set_ylim(-lim, lim)
                ax.set_aspect("equal")
                ax.set_xticks([])
                ax.set_yticks([])
        fig.tight_layout()
        path = img / "study_toys_scatter.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    summary = aggregate(results)
    for dataset_kind, metrics in (("toy", ("modes_covered", "high_quality_share", "precision", "recall")),
                                  ("fmnist", ("classifier_fd", "precision", "recall", "cpu_seconds_per_sample"))):  # fmt: skip
        rows = [r for r in summary["rows"] if r["dataset"].startswith("toy:") == (dataset_kind == "toy")]
        if not rows:
            continue
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6))
        labels = [f"{r['dataset'].replace('toy:', '')}\n{r['model']}" for r in rows]
        for ax, m in zip(axes, metrics):
            means = [r[m]["mean"] if m in r else np.nan for r in rows]
            lo = [r[m]["mean"] - r[m]["min"] if m in r else 0 for r in rows]
            hi = [r[m]["max"] - r[m]["mean"] if m in r else 0 for r in rows]
            colors = ["C0" if r["model"] == "diffusion" else "C3" if r["model"] == "gan" else "C2" if r["model"] == "vae"
                      else "C1" for r in rows]  # fmt: skip
            ax.bar(range(len(rows)), means, yerr=[lo, hi], color=colors, capsize=3)
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels(labels, fontsize=7)
            ax.set_title(m.replace("_", " ") + (" (log)" if m == "cpu_seconds_per_sample" else ""), fontsize=10)
            if m == "cpu_seconds_per_sample" and any(np.isfinite(v) and v > 0 for v in means):
                ax.set_yscale("log")
        fig.suptitle("mean over seeds; bars: min–max", fontsize=9)
        fig.tight_layout()
        path = img / f"study_{dataset_kind}_metrics.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    if (out / "runs").is_dir():
        grids = [(m, out / "runs" / Unit(FMNIST, m, 0).name / "samples.npy") for m in FMNIST_MODELS]
        grids = [(m, p) for m, p in grids if p.is_file()]
        if grids:
            fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.4))
            axes = np.atleast_1d(axes)
            for ax, (m, p) in zip(axes, grids):
                x = np.load(p)[:64, ..., 0]  # [64, 28, 28]
                tile = np.concatenate([np.concatenate(list(x[r * 8 : (r + 1) * 8]), axis=1) for r in range(8)], axis=0)
                ax.imshow(tile, cmap="gray", vmin=0, vmax=255)
                ax.set_title(m, fontsize=10)
                ax.axis("off")
            fig.tight_layout()
            path = img / "study_fmnist_samples.png"
            fig.savefig(path, dpi=80)
            plt.close(fig)
            written.append(path)
    return written
