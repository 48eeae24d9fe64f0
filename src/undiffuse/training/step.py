"""One optimizer step: the per-example loss, gradient accumulation over ranks and micro-batches,
the learning-rate schedule, mixed precision, and the validation loss.

The objective of a step is the mean per-example loss over the *global* batch of B examples. Each
rank sums its per-example losses times W/B (W ranks); DDP averages gradients over ranks, so the
gradient is exactly that of the global mean, however the batch is split over ranks and
accumulation micro-batches.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from undiffuse.build import DataInfo
from undiffuse.config import DiffusionConfig, RunConfig, TrainConfig
from undiffuse.diffusion.precond import Precond
from undiffuse.errors import ConfigError
from undiffuse.losses.denoising import denoising_loss, hybrid_loss
from undiffuse.schedules.discrete import Schedule
from undiffuse.speed import autocast
from undiffuse.training.distributed import DistContext, all_reduce_sum
from undiffuse.training.keyed import StepDraws, draw_step, example_indices, seed_dropout, shard_positions

__all__ = ["lr_at", "resolve_precision", "make_optimizer", "example_losses", "StepEngine"]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up over ``warmup_steps``, then
    constant (DDPM) or, with ``lr_schedule="cosine"``, cosine decay to ``min_lr`` over ``decay_steps``
    after the warm-up. It never depends on the total number of steps of a run."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    if cfg.lr_schedule == "constant" or step < cfg.warmup_steps:
        return cfg.lr * warm
    progress = min(1.0, (step - cfg.warmup_steps) / cfg.decay_steps)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def resolve_precision(name: str, device: torch.device) -> tuple[Optional[torch.dtype], bool]:
    """(autocast dtype or None for fp32, whether to use a GradScaler).

    auto: :func:`undiffuse.speed.default_train_options` — bf16 autocast on devices with native bf16
    (CUDA compute capability ≥ 8, CPUs with AVX512-BF16 or AMX), fp16 + GradScaler on older CUDA
    devices, fp32 elsewhere. Weights, optimizer state and the loss stay fp32 under autocast."""
    if name == "auto":
        from undiffuse.speed import default_train_options

        name = default_train_options(device).precision
    if name == "fp32":
        return None, False
    if name == "bf16":
        return torch.bfloat16, False
    if device.type != "cuda":
        raise ConfigError(f"train.precision = fp16 needs a CUDA device, not {device.type} — use bf16 or fp32")
    return torch.float16, True


def make_optimizer(params, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused where the device supports it (``train.fused``), else the foreach implementation."""
    kw = dict(lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay)
    params = list(params)
    if cfg.fused:
        try:
            return torch.optim.AdamW(params, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.AdamW(params, **kw)


def example_losses(
    precond: Precond, schedule: Schedule, d: DiffusionConfig, x0: torch.Tensor, t: torch.Tensor,
    noise: torch.Tensor, decoder: str, cond: dict,
) -> torch.Tensor:  # fmt: skip
    """Per-example training loss [m] at x = x_0 + σ_t·noise: the weighted denoising loss, or the hybrid
    loss L_simple + λ·L_vlb for a learned variance (Nichol & Dhariwal 2021), or the process's own loss
    (mixed rows: :meth:`undiffuse.diffusion.mixed.MixedPrecond.example_loss`)."""
    own = getattr(precond, "example_loss", None)
    if own is not None:
        return own(schedule, x0, t, noise, **cond)
    if d.learned_variance:
        return hybrid_loss(precond, schedule, x0, t, noise, d.lambda_vlb, decoder, **cond)["loss"]
    sigma = schedule.sigmas.to(x0.device)[t - 1]
    loss, _, _ = denoising_loss(precond, x0, sigma, noise, weighting=d.weighting, gamma=d.min_snr_gamma, **cond)
    return loss


@dataclass
class StepEngine:
    """Everything one training step touches. ``train_precond`` wraps the (possibly DDP-wrapped)
    network; ``precond`` the bare one (saved, EMA'd); ``text`` the embedded training captions
    (:class:`undiffuse.conditioning.CaptionTable`) of a text-conditional model."""

    cfg: RunConfig
    ctx: DistContext
    precond: Precond
    train_precond: Precond
    schedule: Schedule
    info: DataInfo
    x: torch.Tensor
    y: Optional[torch.Tensor]
    optimizer: torch.optim.Optimizer
    autocast_dtype: Optional[torch.dtype] = None
    scaler: Optional[torch.amp.GradScaler] = None
    _perm_cache: dict = field(default_factory=dict)
    text: Any = None
    objective: Any = None  # a distillation objective (undiffuse.training.distill) in place of the denoising loss

    @property
    def decoder(self) -> str:
        return "discrete" if self.info.discrete_8bit else "continuous"

    def autocast(self):
        return autocast(self.ctx.device, self.autocast_dtype)

    def _cond(self, labels: Optional[torch.Tensor], u: Optional[torch.Tensor], x0: Optional[torch.Tensor] = None,
              captions: Optional[torch.Tensor] = None) -> dict:  # fmt: skip
        """The network's condition kwargs; rows with u < ``train.cond_drop`` get the null label / caption
        (u None: nothing is dropped). Super-resolution adds ``x_cond`` from ``x0`` (never dropped)."""
        m, cond = self.cfg.model, {}
        drop = None if u is None else u < self.cfg.train.cond_drop
        if labels is not None and m.class_cond:
            null = torch.full_like(labels, self.info.num_classes)
            cond["class_labels"] = labels if drop is None else torch.where(drop, null, labels)
        if captions is not None and self.text is not None:
            cond.update(self.text.condition(captions, drop))
        if m.sr_from and x0 is not None:
            from undiffuse.conditioning import sr_condition

            cond["x_cond"] = sr_condition(x0, m.sr_from)
        if m.mel_cond and x0 is not None:  # a diffusion vocoder: the clip's own log-mel (never dropped)
            from undiffuse.data.audio import vocoder_condition

            cond["mel"] = vocoder_condition(x0, self.info.extra["audio"]["rate"])
        return cond

    def batch_loss(self, x0, draws: StepDraws, labels, captions: Optional[torch.Tensor] = None,
                   step: int = 0) -> torch.Tensor:  # fmt: skip
        """Per-example losses [m] of one micro-batch of optimizer step ``step`` under autocast."""
        with self.autocast():
            if self.objective is not None:
                cond = self._cond(labels, draws.u_label, x0, captions)
                return self.objective.losses(step, self.train_precond, x0, draws, cond)
            return example_losses(self.train_precond, self.schedule, self.cfg.diffusion, x0, draws.t,
                                  draws.noise, self.decoder, self._cond(labels, draws.u_label, x0, captions))  # fmt: skip

    def accumulate(self, step: int) -> torch.Tensor:
        """Forward and backward of step ``step`` on this rank; returns the sum of this rank's
        per-example losses (float64, detached). Gradients are left in ``.grad``."""
        tc, ctx = self.cfg.train, self.ctx
        B = tc.batch_size
        idx = example_indices(tc.seed, step, B, len(self.x), self._perm_cache)
        draws = draw_step(tc.seed, step, B, self.info.shape, self.schedule.T, ctx.device,
                          stratified=getattr(self.precond, "stratified_t", False))  # the masked process: MDLM Sec. 3.5
        # captions of the whole global batch, keyed to (seed, step, position) like the draws
        captions = self.text.draw(tc.seed, step, self.y[idx.to(self.y.device)]) if self.text is not None else None
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64, device=ctx.device)
        net = self.train_precond.net
        for micro in range(tc.grad_accum):
            pos = shard_positions(B, ctx.rank, ctx.world_size, tc.grad_accum, micro)
            sel = idx[pos].to(self.x.device)
            labels = self.y[sel] if self.y is not None else None
            seed_dropout(tc.seed, step, ctx.rank, micro)
            last = micro == tc.grad_accum - 1
            sync = net.no_sync() if (ctx.distributed and not last) else contextlib.nullcontext()
            with sync:
                caps = captions[pos] if captions is not None else None
                losses = self.batch_loss(self.x[sel], draws.select(pos.to(ctx.device)), labels, caps, step)
                objective = losses.sum() * (ctx.world_size / B)
                (self.scaler.scale(objective) if self.scaler else objective).backward()
            total += losses.detach().double().sum()
        return total

    def clip(self, step: int) -> tuple[float, float]:
        """Set the learning rate of step ``step`` and clip the gradients (unscaled first under fp16).
        Returns (lr, gradient norm before clipping — inf/nan if the gradients are not finite)."""
        lr = lr_at(step, self.cfg.train)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        clip = self.cfg.train.grad_clip if self.cfg.train.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.precond.net.parameters(), clip)
        return lr, float(norm)

    def step_optimizer(self) -> None:
        """The AdamW update (through the GradScaler under fp16, which skips non-finite steps)."""
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    @torch.no_grad()
    def validation_loss(self, net: nn.Module, x_val: torch.Tensor, y_val: Optional[torch.Tensor]) -> float:
        """Mean per-example loss of ``net`` (e.g. the EMA network) on ``val_batches`` fixed batches of
        held-out data, each with fixed draws of t and noise — comparable across the run."""
        tc = self.cfg.train
        pre = self.precond.with_net(net)
        total, count = 0.0, 0
        for i in range(tc.val_batches):
            sel = torch.arange(i * tc.batch_size, (i + 1) * tc.batch_size) % len(x_val)
            draws = draw_step(tc.seed, i, len(sel), self.info.shape, self.schedule.T, self.ctx.device, "val")
            x0 = x_val[sel.to(x_val.device)]
            labels = y_val[sel.to(y_val.device)] if y_val is not None else None
            caps = self.text.draw(tc.seed, i, labels, "val_caption") if self.text is not None and labels is not None else None
            cond = self._cond(labels, None, x0, caps)
            with self.autocast():
                losses = example_losses(pre, self.schedule, self.cfg.diffusion, x0, draws.t, draws.noise,
                                        self.decoder, cond)  # fmt: skip
            total += float(losses.double().sum())
            count += len(sel)
        return total / max(count, 1)

    def global_loss(self, local_sum: torch.Tensor, stop: bool) -> tuple[float, bool]:
        """(mean loss over the global batch, whether any rank asked to stop) — one all-reduce."""
        buf = torch.stack([local_sum.double(), torch.tensor(float(stop), dtype=torch.float64, device=local_sum.device)])
        all_reduce_sum(buf, self.ctx)
        return float(buf[0]) / self.cfg.train.batch_size, bool(buf[1] > 0)
