"""Train, save, load and sample the GAN and VAE baselines on undiffuse's data pipeline.

A run directory is owned by :mod:`undiffuse.runs` like a diffusion run's (see
:mod:`undiffuse.baselines.run`) and holds

- ``config.json``: ``{"kind": "gan" | "vae", "config": BaselineConfig, "params": counts}``; enough to
  rebuild the networks without running any code from the checkpoint;
- ``checkpoints/step_XXXXXXX/``: ``model.safetensors`` (GAN: ``generator.*`` and ``discriminator.*``;
  VAE: ``encoder.*`` and ``decoder.*``), ``train_state.safetensors`` and ``state.json``;
- ``log.jsonl``: one JSON line per ``log_every`` steps with the mean losses since the last line;
  ``summary.json``.

Nothing is pickled.
``seconds`` and ``steps`` are *total* budgets of the run, so a resumed run stops where an uninterrupted
one would have (training-loop wall clock; data loading and model building are not counted).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from undiffuse.baselines.gan import GAN
from undiffuse.baselines.run import (
    KINDS,
    BaselineConfig,
    load_baseline,
    network_kind,
    open_baseline,
    resume_baseline,
    save_baseline,
)
from undiffuse.baselines.vae import VAE
from undiffuse.data import load_dataset
from undiffuse.io import write_json
from undiffuse.rng import randn_from
from undiffuse.runs import latest_checkpoint, lock_run, truncate_log, write_config_json
from undiffuse.samplers.driver import drive

__all__ = [
    "baseline_nll",
    "count_params",
    "fit_vectors",
    "sample_baseline",
    "sample_indices",
    "train_baseline",
    "width_for_params",
]

PathLike = Union[str, os.PathLike]
# (lr, betas) per kind and data kind: DCGAN's Adam(2e-4, β1 = 0.5); PacGAN's 1e-4 on the 2-D toys;
# Adam(1e-3) for the VAEs.
_OPTIM = {("gan", "image"): (2e-4, (0.5, 0.999)), ("gan", "vector"): (1e-4, (0.5, 0.999)),
          ("vae", "image"): (1e-3, (0.9, 0.999)), ("vae", "vector"): (1e-3, (0.9, 0.999))}  # fmt: skip
_BATCH = {"image": 128, "vector": 100}


def count_params(model: Union[GAN, VAE]) -> int:
    """Parameters of the generative network: the GAN's generator (the part that samples); the VAE's
    encoder + decoder (both enter the bound)."""
    net = model.generator if isinstance(model, GAN) else model
    return sum(p.numel() for p in net.parameters())


def width_for_params(build: Callable[[int], nn.Module], target: int, lo: int = 1, hi: int = 1 << 14) -> int:
    """The width w in [lo, hi] whose ``count_params(build(w))`` is closest to ``target``. The count
    grows with w, so a doubling search and a bisection find it; the networks are built on the meta
    device (no memory, no initialisation cost)."""

    def count(w: int) -> int:
        with torch.device("meta"):
            return count_params(build(w))

    top = lo
    while top < hi and count(top) <= target:
        lo, top = top, min(2 * top, hi)
    hi = top
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= target else (lo, mid)
    return min((lo, hi), key=lambda w: abs(count(w) - target))


def _resolve_config(
    kind: str, data_spec: str, ds, *, seed: int, batch_size: Optional[int], lr: Optional[float],
    model: Optional[dict], target_params: Optional[int], image_size: Optional[int],
) -> BaselineConfig:  # fmt: skip
    if kind not in KINDS:
        raise ValueError(f"unknown baseline {kind!r}; choose one of {KINDS}")
    net = network_kind(ds.kind)
    if (kind, net) not in _OPTIM:
        raise ValueError(f"the {kind} baseline models image-shaped and vector data, not {ds.kind!r} data")
    default_lr, betas = _OPTIM[(kind, net)]
    cfg = BaselineConfig(
        kind, data_spec, ds.kind, ds.shape, "discrete" if ds.discrete_8bit else "continuous", dict(model or {}),
        default_lr if lr is None else lr, betas, batch_size or _BATCH[net], seed, image_size,
    )  # fmt: skip
    if target_params is not None:
        build = lambda w: dataclasses.replace(cfg, model={**cfg.model, "width": w}).build()
        cfg = dataclasses.replace(cfg, model={**cfg.model, "width": width_for_params(build, target_params)})
    pack = cfg.model.get("pack", 1)
    if kind == "gan" and cfg.batch_size % pack:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of pack={pack}")
    return cfg


def _param_counts(model: Union[GAN, VAE]) -> dict:
    n = lambda m: sum(p.numel() for p in m.parameters())
    if isinstance(model, GAN):
        return {"generator": n(model.generator), "discriminator": n(model.discriminator)}
    return {"encoder": n(model.encoder), "decoder": n(model.decoder), "total": n(model)}


def _optimizers(cfg: BaselineConfig, model: Union[GAN, VAE]) -> dict[str, torch.optim.Optimizer]:
    adam = lambda m: torch.optim.Adam(m.parameters(), lr=cfg.lr, betas=cfg.betas)
    if isinstance(model, GAN):
        return {"g": adam(model.generator), "d": adam(model.discriminator)}
    return {"vae": adam(model)}


def _gan_step(model: GAN, opt: dict, real: torch.Tensor, gen: torch.Generator) -> dict:
    """One alternating update: D on a real and a fake batch, then G with the non-saturating loss."""
    z = torch.randn(real.shape[0], model.z_dim, generator=gen).to(real.device)
    fake = model(z)
    loss_d = model.d_loss(real, fake)
    opt["d"].zero_grad(set_to_none=True)
    loss_d.backward()
    opt["d"].step()
    loss_g = model.g_loss(fake)
    opt["g"].zero_grad(set_to_none=True)
    loss_g.backward()  # D's gradients from this pass are discarded by its next zero_grad
    opt["g"].step()
    return {"loss_d": loss_d.item(), "loss_g": loss_g.item()}


def _vae_step(model: VAE, opt: dict, x: torch.Tensor, gen: torch.Generator) -> dict:
    """One Adam step on −ELBO per dimension."""
    loss = model.loss(x, generator=gen)
    opt["vae"].zero_grad(set_to_none=True)
    loss.backward()
    opt["vae"].step()
    return {"loss": loss.item(), "bits_per_dim": loss.item() / math.log(2)}


class _Log:
    """Running means of the step losses, appended to log.jsonl every ``every`` steps."""

    def __init__(self, path: Path, every: int) -> None:
        self.path, self.every, self.sums, self.n = path, every, {}, 0

    def add(self, losses: dict, step: int, seconds: float, force: bool = False) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += bool(losses)
        if self.n and (force or step % self.every == 0):
            row = {
                "step": step,
                "seconds": round(seconds, 3),
                **{k: s / self.n for k, s in self.sums.items()},
            }
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
            self.sums, self.n = {}, 0


def train_baseline(
    kind: str,
    data_spec: str,
    out_dir: PathLike,
    *,
    seconds: Optional[float] = None,
    steps: Optional[int] = None,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
    batch_size: Optional[int] = None,
    lr: Optional[float] = None,
    model: Optional[dict] = None,
    target_params: Optional[int] = None,
    image_size: Optional[int] = None,
    log_every: int = 100,
    ckpt_every: Optional[int] = None,
    resume: bool = False,
) -> dict:
    """Train a GAN or VAE baseline on ``data_spec``'s train split until ``steps`` or ``seconds``.

    Args:
        kind: "gan" or "vae".
        data_spec: a spec of :func:`undiffuse.data.load_dataset`.
        out_dir: run directory (created); see the module docstring for its files.
        seconds / steps: total budgets of the run (at least one); training stops at the first reached.
        seed: fixes initialisation, minibatches and latents.
        batch_size / lr: default 128 / DCGAN's 2e-4 for images, 100 / 1e-4 (PacGAN) for 2-D GANs, 1e-3 for VAEs.
        model: keyword arguments of :func:`build_gan` / :func:`build_vae`.
        target_params: choose ``width`` so :func:`count_params` is closest to this (e.g. the diffusion
            network's count).
        log_every / ckpt_every: steps between log lines / intermediate checkpoints (None: only at the end).
        resume: continue from ``out_dir``'s latest checkpoint (its config wins over the arguments); without
            one, start a new run there.
    Returns:
        a summary: steps, seconds, final logged losses, parameter counts, out_dir.
    Raises:
        TrainingError: ``out_dir`` is in use by another process, or (a new run) not empty.
    """
    if seconds is None and steps is None:
        raise ValueError("give a budget: seconds=..., steps=... or both")
    out = Path(out_dir)
    resuming = resume and latest_checkpoint(out) is not None
    with lock_run(out, new=not resume):  # a new run that fails before its first checkpoint leaves nothing
        if resuming:
            cfg = open_baseline(out, ())[0]
            ds = load_dataset(cfg.data, "train", cfg.image_size)
        else:
            ds = load_dataset(data_spec, "train", image_size)
            cfg = _resolve_config(kind, data_spec, ds, seed=seed, batch_size=batch_size, lr=lr, model=model,
                                  target_params=target_params, image_size=image_size)  # fmt: skip
        return _fit(cfg, ds.x, out, resuming, device, seconds, steps, log_every, ckpt_every)


def _init(cfg: BaselineConfig, device="cpu") -> tuple[Union[GAN, VAE], dict, torch.Generator, Callable]:
    """The model initialised from ``cfg.seed``, its optimisers, the generator of minibatch indices and latents
    (CPU, seeded seed + 1) and the update step of its kind."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = cfg.build().to(device)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    return model, _optimizers(cfg, model), gen, _gan_step if cfg.kind == "gan" else _vae_step


def _fit(cfg: BaselineConfig, x_all: torch.Tensor, out: Path, resuming: bool, device, seconds, steps,
         log_every: int, ckpt_every: Optional[int]) -> dict:  # fmt: skip
    model, opts, gen, step_fn = _init(cfg, device)
    step, elapsed = resume_baseline(out, model, opts, gen, device) if resuming else (0, 0.0)
    if resuming:  # drop log lines of steps after the checkpoint: they are about to be redone
        truncate_log(out / "log.jsonl", step)
    else:
        (out / "log.jsonl").unlink(missing_ok=True)
        write_config_json(out, cfg.kind, {"config": cfg.to_json(), "params": _param_counts(model)})
    log = _Log(out / "log.jsonl", log_every)
    model.train()
    t0 = time.perf_counter() - elapsed
    while (steps is None or step < steps) and (seconds is None or time.perf_counter() - t0 < seconds):
        idx = torch.randint(len(x_all), (cfg.batch_size,), generator=gen)
        losses = step_fn(model, opts, x_all[idx].to(device), gen)
        step += 1
        log.add(losses, step, time.perf_counter() - t0)
        if ckpt_every and step % ckpt_every == 0:
            save_baseline(out, model, opts, gen, step, time.perf_counter() - t0, cfg)
    elapsed = time.perf_counter() - t0
    log.add({}, step, elapsed, force=True)
    save_baseline(out, model, opts, gen, step, elapsed, cfg)
    summary = {"out_dir": str(out), "kind": cfg.kind, "data": cfg.data, "steps": step, "seconds": elapsed,
               "params": _param_counts(model), "last": _last_log(out / "log.jsonl")}  # fmt: skip
    write_json(out / "summary.json", summary)
    return summary


def fit_vectors(kind: str, x: torch.Tensor, steps: int, *, seed: int = 0, batch_size: int = 256,
                model: Optional[dict] = None) -> tuple[Union[GAN, VAE], BaselineConfig]:  # fmt: skip
    """A GAN or VAE fitted to rows x [N, D] held in memory, with no run directory: the vector networks
    (:func:`build_gan` / :func:`build_vae` with ``model``'s keywords, a continuous decoder), the optimiser and
    the update of :func:`train_baseline`, ``steps`` minibatches of ``batch_size`` rows drawn with replacement.
    For baselines fitted inside an evaluation (table rows, series windows); sample the result with
    :func:`sample_indices`. Returns the model in eval mode and its config."""
    lr, betas = _OPTIM[(kind, "vector")]
    cfg = BaselineConfig(kind, "in-memory", "vector", (x.shape[1],), "continuous", dict(model or {}), lr, betas,
                         batch_size, seed)  # fmt: skip
    net, opts, gen, step_fn = _init(cfg)
    net.train()
    for _ in range(steps):
        step_fn(net, opts, x[torch.randint(len(x), (batch_size,), generator=gen)], gen)
    return net.eval(), cfg


def _last_log(path: Path) -> dict:
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else {}


@torch.no_grad()
def sample_indices(
    model: Union[GAN, VAE], cfg: BaselineConfig, indices: Sequence[int], seed: int = 0, *,
    batch_size: int = 500, decoder_noise: Optional[bool] = None,
) -> torch.Tensor:  # fmt: skip
    """Samples number ``indices`` of a loaded baseline, through the one sampling driver: sample i's
    latent z (and a VAE's decoder noise after it) come from its own generator seeded from (seed, i)
    (:mod:`undiffuse.rng`), so it depends on nothing else. Float32 on the CPU, images clamped to [−1, 1].

    A GAN returns G(z). A VAE returns the decoder mean for images and a full draw mean + scale·noise
    from p(x|z) for vectors (``decoder_noise`` overrides)."""
    dev = next(model.parameters()).device
    noisy = cfg.kind == "vae" and (cfg.data_kind == "vector" if decoder_noise is None else decoder_noise)

    def run_batch(z: torch.Tensor, gens: list, cond: dict, offset: int) -> torch.Tensor:
        if cfg.kind == "gan":
            return model(z.to(dev))
        noise = randn_from(gens, cfg.data_shape, dev) if noisy else None
        return model.sample(z.to(dev), noise)

    x = drive(run_batch, (model.z_dim,), indices, seed=seed, sigma_max=1.0, batch_size=batch_size).x
    x = x if len(x) else torch.empty(0, *cfg.data_shape)
    return x.clamp(-1, 1) if network_kind(cfg.data_kind) == "image" else x


def sample_baseline(
    out_dir: PathLike,
    n: int,
    seed: int = 0,
    *,
    start: int = 0,
    batch_size: int = 500,
    device: Union[str, torch.device] = "cpu",
    decoder_noise: Optional[bool] = None,
) -> torch.Tensor:
    """``n`` samples (indices ``start`` .. ``start + n − 1``) in data units, float32 on the CPU:
    images in [−1, 1] [n, C, H, W] or points [n, D] (see :func:`sample_indices`)."""
    model, cfg = load_baseline(out_dir, device)
    return sample_indices(model, cfg, range(start, start + n), seed, batch_size=batch_size,
                          decoder_noise=decoder_noise)  # fmt: skip


@torch.no_grad()
def baseline_nll(
    out_dir: PathLike,
    split: str = "test",
    *,
    k: int = 1,
    n: Optional[int] = None,
    batch_size: int = 256,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
) -> dict:
    """A VAE's bound on the NLL of ``split`` in bits/dim: the ELBO (k = 1) or IWAE_k, with the
    discretized decoder on 8-bit data (discrete bits/dim, the units of the diffusion VLB)."""
    model, cfg = load_baseline(out_dir, device)
    if cfg.kind != "vae":
        raise ValueError("a GAN has no likelihood; only VAE baselines report bits/dim")
    x = load_dataset(cfg.data, split, cfg.image_size).x
    x = x[:n] if n is not None else x
    gen = torch.Generator().manual_seed(seed)
    bpd = torch.cat([model.bits_per_dim(x[i : i + batch_size].to(device), k, gen).double().cpu()
                     for i in range(0, len(x), batch_size)])  # fmt: skip
    return {"bits_per_dim": float(bpd.mean()), "stderr": float(bpd.std() / math.sqrt(len(bpd))),
            "bound": "elbo" if k == 1 else f"iwae{k}", "units": cfg.likelihood, "split": split,
            "n": len(bpd), "data": cfg.data}  # fmt: skip
