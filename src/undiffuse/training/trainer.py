"""``train``: fit a diffusion model, with logs, sample grids, checkpoints and exact resume.

::

    from undiffuse.config import resolve_config
    from undiffuse.training import train
    summary = train(resolve_config("toy:25gaussians"), "runs/toy", steps=3000)

One process or many (under ``torchrun``, see :mod:`undiffuse.training.distributed`). Resume is exact:
every random draw is keyed to (seed, step, position) (:mod:`undiffuse.training.keyed`), the learning
rate depends only on the step, and a checkpoint holds weights, EMA, optimizer and scaler state; so
``train(steps=20)`` then ``train(steps=40, resume=True)`` reproduces ``train(steps=40)``, and so does a
run stopped by Ctrl-C or SIGTERM (which save a checkpoint at the step reached) and resumed.
A NaN/inf loss stops training before the bad update, keeps the last good checkpoint, and raises a
:class:`~undiffuse.errors.TrainingError`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import torch

from undiffuse.build import architecture_signature, build_denoiser
from undiffuse.config import RunConfig, to_dict
from undiffuse.errors import TrainingError, UserError
from undiffuse.plots import loss_plot
from undiffuse.progress import progress as progress_bar
from undiffuse.rng import derive_seed
from undiffuse.runs import (
    RunLock,
    check_signature,
    load_weights_into,
    lock_run,
    resume_point,
    save_checkpoint,
    truncate_log,
    write_config_json,
)
from undiffuse.training import distributed as D
from undiffuse.training.ema import EMA, ema_beta
from undiffuse.training.rundir import StopFlag, load_training_data
from undiffuse.training.step import StepEngine, make_optimizer, resolve_precision

__all__ = ["train", "TrainSummary"]


@dataclass
class TrainSummary:
    """What a call to :func:`train` did."""

    run_dir: Path
    step: int
    start_step: int
    steps: int
    examples_seen: int
    loss: Optional[float]
    val_loss: Optional[float]
    checkpoint: Optional[Path]
    interrupted: bool
    seconds: float
    img_per_s: float


def train(
    cfg: Optional[RunConfig], run_dir: Union[str, os.PathLike], steps: Optional[int] = None, resume: bool = False,
    device: Union[str, torch.device, None] = None, progress: bool = True,
    on_step: Optional[Callable[[int, dict], None]] = None, objective: Any = None,
) -> TrainSummary:  # fmt: skip
    """Train until ``steps`` optimizer steps in total (default ``cfg.train.steps``).

    Args:
        cfg: the run configuration; with ``resume`` it may be None (use the saved one), and any
            difference from the saved one other than ``train.steps`` is refused.
        run_dir: output directory; must be new or empty unless ``resume``.
        resume: continue from the latest checkpoint in ``run_dir``.
        device: "cuda", "cpu", … (default: cuda, mps or cpu; under torchrun, cuda:LOCAL_RANK).
        progress: show a tqdm bar (loss, it/s, ETA) on rank 0 (when stderr is a terminal, see undiffuse.progress).
        on_step: called as on_step(step, stats) after every optimizer step (stats: loss, lr,
            grad_norm); raising KeyboardInterrupt there stops training like Ctrl-C.
        objective: a distillation objective (:mod:`undiffuse.training.distill`): ``setup(precond, ema_net,
            device)`` once after the networks are built (before a resume restores them), then
            ``losses(step, precond, x0, draws, cond)`` in place of the denoising loss.
    Returns:
        a :class:`TrainSummary`; ``interrupted`` is True after Ctrl-C/SIGTERM (a checkpoint was saved).
    Raises:
        UserError subclasses for a refused run directory, bad data or config, NaN loss, full disk.
    """
    if steps is not None and steps < 1:
        raise TrainingError(f"--steps must be a positive number of optimizer steps, got {steps}")
    if cfg is None and not resume:
        raise TrainingError("no configuration given for a new run — pass a RunConfig (e.g. resolve_config(...))")
    ctx = D.setup(device)
    devices = [ctx.device.index or 0] if ctx.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), StopFlag() as stop:
            with _lock(Path(run_dir), resume, ctx) or contextlib.nullcontext():  # rank 0 holds the run's lock
                return _Run(cfg, Path(run_dir), steps, resume, ctx, progress, on_step, stop, objective).run()
    finally:
        D.teardown(ctx)


@contextlib.contextmanager
def _doing(bar, what: str) -> Iterator[None]:
    """Say on the progress bar what the run does between optimizer steps (a preview grid, a checkpoint or the
    loss plot can take a minute, and the bar would otherwise look frozen)."""
    bar.set_description_str(f"{what}…")
    try:
        yield
    finally:
        bar.set_description_str("", refresh=False)


def _lock(run_dir: Path, resume: bool, ctx: D.DistContext) -> Optional[RunLock]:
    """Rank 0 locks the run directory (creating a new run's); every rank raises if that was refused."""
    lock, err = None, None
    if ctx.is_main:
        try:
            lock = lock_run(run_dir, new=not resume)
        except UserError as e:
            err = str(e)
    err = D.broadcast_object(err, ctx)
    if err:
        raise TrainingError(err)
    return lock


def _check_memory(cfg: RunConfig, shape: tuple[int, ...], device: torch.device, world: int) -> None:
    """Refuse, before anything is allocated, a batch whose inputs alone exceed the device's memory."""
    tc = cfg.train
    need = tc.batch_size // (world * tc.grad_accum) * math.prod(shape) * 4 * 3  # x0, noise, x_t in fp32
    try:
        if device.type == "cuda":
            have = torch.cuda.get_device_properties(device).total_memory
        else:
            have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError, RuntimeError):
        return
    if need > have:
        raise TrainingError(
            f"train.batch_size = {tc.batch_size} needs {need / 2**30:.3g} GiB for one step's inputs alone, more than "
            f"the {have / 2**30:.3g} GiB of {device} — lower train.batch_size or raise train.grad_accum"
        )


class _Run:
    """State of one call to :func:`train` (kept out of the public API)."""

    def __init__(self, cfg, run_dir: Path, steps, resume: bool, ctx: D.DistContext, progress: bool, on_step,
                 stop: StopFlag, objective: Any = None) -> None:  # fmt: skip
        self.run_dir, self.ctx, self.progress, self.on_step, self.stop = run_dir, ctx, progress, on_step, stop
        self.objective = objective
        self.last_ckpt: Optional[Path] = None
        self.resumed = resume_point(run_dir, cfg, steps, ctx.device) if resume else None  # resolved once, here
        if self.resumed is not None:
            cfg = self.resumed.config
        elif steps is not None:
            cfg = replace(cfg, train=replace(cfg.train, steps=steps))
        self.cfg: RunConfig = cfg
        if cfg.train.batch_size % (ctx.world_size * cfg.train.grad_accum):
            raise TrainingError(
                f"train.batch_size = {cfg.train.batch_size} must be divisible by {ctx.world_size} ranks × "
                f"train.grad_accum = {cfg.train.grad_accum} — change the batch size"
            )
        self.data = load_training_data(cfg, ctx.device)
        _check_memory(cfg, self.data.info.shape, ctx.device, ctx.world_size)
        self.signature = architecture_signature(cfg, self.data.info)
        self._build()
        self.step = self._restore() if resume else 0
        self.last_loss: Optional[float] = None
        self.val_loss: Optional[float] = None
        if ctx.is_main:
            write_config_json(run_dir, "diffusion", to_dict(cfg))
            truncate_log(run_dir / "log.jsonl", self.step)

    # --- setup -----------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        torch.manual_seed(derive_seed(cfg.train.seed, "init"))
        precond = build_denoiser(cfg, self.data.info).to(ctx.device)
        self.precond = precond
        train_net = D.wrap_ddp(precond.net, ctx)
        train_precond = precond.with_net(train_net)
        self.ema = EMA(precond.net)
        if self.objective is not None:  # e.g. a distilled student starts as a copy of its teacher
            self.objective.setup(precond, self.ema.module, ctx.device)
        dtype, use_scaler = resolve_precision(cfg.train.precision, ctx.device)
        scaler = torch.amp.GradScaler(ctx.device.type) if use_scaler else None
        opt = make_optimizer(precond.net.parameters(), cfg.train, ctx.device)
        self.engine = StepEngine(cfg, ctx, precond, train_precond, precond.schedule, self.data.info, self.data.x,
                                 self.data.y, opt, dtype, scaler, objective=self.objective)  # fmt: skip
        if cfg.model.text_cond:  # every training caption embedded once; the cache lives in the run dir
            from undiffuse.conditioning import CaptionTable, run_text_encoder

            encoder = run_text_encoder(self.run_dir if ctx.is_main else None)
            self.engine.text = CaptionTable(self.data.info, encoder, ctx.device, save=ctx.is_main)
            del encoder

    def _restore(self) -> int:
        ckpt, self.resumed = self.resumed.checkpoint, None
        self.last_ckpt = ckpt.path
        check_signature(ckpt.path, ckpt.state, self.signature)
        load_weights_into(self.precond.net, ckpt.model, ckpt.path)
        load_weights_into(self.ema.module, ckpt.ema, ckpt.path)
        try:
            self.engine.optimizer.load_state_dict(ckpt.optimizer)
        except (ValueError, KeyError, RuntimeError) as e:
            raise TrainingError(f"optimizer state in {ckpt.path} does not fit this model ({e}) — resume from another checkpoint") from e
        if self.engine.scaler is not None and ckpt.state.get("scaler"):
            self.engine.scaler.load_state_dict(ckpt.state["scaler"])
        rng = ckpt.state.get("rng", {})
        if rng.get("torch_cpu"):
            torch.set_rng_state(torch.tensor(rng["torch_cpu"], dtype=torch.uint8))
        return ckpt.step

    # --- the loop ------------------------------------------------------------------------------------
    def run(self) -> TrainSummary:
        cfg, ctx = self.cfg, self.ctx
        start, total = self.step, cfg.train.steps
        t0 = time.perf_counter()
        interrupted = False
        bar = progress_bar(total=total, initial=start, unit="step", leave=True, show=self.progress and ctx.is_main)
        window = {"loss": 0.0, "n": 0, "t": time.perf_counter(), "step": start}
        try:
            try:
                while self.step < total:
                    stats, stop = self._one_step()
                    self._after_step(stats, window, bar)
                    if self.on_step is not None:
                        self.on_step(self.step, stats)
                    if stop or (self.stop.requested and not ctx.distributed):  # ranks agree via the next all-reduce
                        interrupted = True
                        break
            except KeyboardInterrupt:
                interrupted = True
            if self.step > start or interrupted or self.last_ckpt is None:
                with _doing(bar, "saving checkpoint"):
                    self._checkpoint()
            if ctx.is_main:
                with _doing(bar, "plotting loss"):
                    loss_plot(self.run_dir / "log.jsonl", self.run_dir / "loss.png")
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        done = (self.step - start) * cfg.train.batch_size
        return TrainSummary(self.run_dir, self.step, start, total, self.step * cfg.train.batch_size, self.last_loss,
                            self.val_loss, self.last_ckpt, interrupted, seconds, done / max(seconds, 1e-9))  # fmt: skip

    def _one_step(self) -> tuple[dict, bool]:
        """One optimizer step; refuses a non-finite loss or gradient before updating anything."""
        eng, s = self.engine, self.step
        try:
            local = eng.accumulate(s)
        except (RuntimeError, MemoryError) as e:
            if not isinstance(e, MemoryError) and "out of memory" not in str(e) and "can't allocate" not in str(e):
                raise
            raise TrainingError(
                f"out of memory at step {s + 1} with train.batch_size = {self.cfg.train.batch_size} — lower it or raise "
                f"train.grad_accum; last good checkpoint: {self.last_ckpt or 'none saved yet'}"
            ) from None
        loss, stop = eng.global_loss(local, self.stop.requested)
        lr, norm = eng.clip(s)
        if not math.isfinite(loss) or (eng.scaler is None and not math.isfinite(norm)):
            what = "loss" if not math.isfinite(loss) else "gradient norm"
            last = self.last_ckpt or "none saved yet"
            raise TrainingError(
                f"{what} became {'NaN' if math.isnan(loss if what == 'loss' else norm) else 'inf'} at step {s + 1} — "
                f"lower train.lr or use train.precision=fp32; last good checkpoint: {last}"
            )
        eng.step_optimizer()
        B = self.cfg.train.batch_size
        tc = self.cfg.train
        self.ema.update(self.precond.net, ema_beta(B, (s + 1) * B, tc.ema_halflife_kimg, tc.ema_warmup))
        self.step = s + 1
        self.last_loss = loss
        return {"loss": loss, "lr": lr, "grad_norm": norm}, stop

    def _after_step(self, stats: dict, window: dict, bar) -> None:
        tc, s = self.cfg.train, self.step
        window["loss"] += stats["loss"]
        window["n"] += 1
        bar.update(1)  # the step is done; what follows (validation, samples, checkpoint) is said on the bar
        final = s == tc.steps
        due = lambda every: every > 0 and (s % every == 0 or final)
        record = {}
        if due(tc.log_every):
            now = time.perf_counter()
            ips = (s - window["step"]) * tc.batch_size / max(now - window["t"], 1e-9)
            record = {"step": s, "loss": window["loss"] / window["n"], "lr": stats["lr"],
                      "grad_norm": stats["grad_norm"], "img_per_s": ips, "examples": s * tc.batch_size}  # fmt: skip
            window.update(loss=0.0, n=0, t=now, step=s)
            bar.set_postfix(loss=f"{record['loss']:.4g}", img_s=f"{ips:.0f}", refresh=False)
        if due(tc.val_every) and self.data.x_val is not None and self.ctx.is_main:
            with _doing(bar, "validation loss"):
                self.val_loss = self.engine.validation_loss(self.ema.module, self.data.x_val, self.data.y_val)
            record.update(step=s, val_loss=self.val_loss)
        if record and self.ctx.is_main:
            with open(self.run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        if due(tc.sample_every) and self.ctx.is_main:
            with _doing(bar, "sampling preview grid"):
                self._samples()
        if due(tc.ckpt_every):
            with _doing(bar, "saving checkpoint"):
                self._checkpoint()
            if self.ctx.is_main:
                with _doing(bar, "plotting loss"):
                    loss_plot(self.run_dir / "log.jsonl", self.run_dir / "loss.png")

    # --- outputs ---------------------------------------------------------------------------------------
    def _samples(self) -> None:
        """Write ``samples/step_XXXXXXX.png`` from the EMA network (fixed seed, DDIM)."""
        from undiffuse.data.kinds import save_samples
        from undiffuse.model import Model
        from undiffuse.sampling import sample

        p = self.precond
        ema_pre = p.with_net(self.ema.module)
        model = Model(ema_pre, p.schedule, self.cfg, self.data.info, self.step)
        tc = self.cfg.train
        cond: dict = {}
        n, m = tc.sample_n, self.cfg.model
        if m.class_cond and self.data.info.num_classes:  # a grid that cycles through the classes
            cond["class_labels"] = torch.arange(n, device=self.ctx.device) % self.data.info.num_classes
        if m.sr_from:  # super-resolve the first training images
            from undiffuse.conditioning import sr_condition

            x_ref = self.data.x[torch.arange(n) % len(self.data.x)]
            cond["x_cond"] = sr_condition(x_ref.to(self.ctx.device), m.sr_from)
        x = sample(model, n, seed=tc.seed, steps=min(tc.sample_steps, p.schedule.T), cond=cond or None)
        ref = self.data.x[:2000] if self.data.info.kind == "vector" else None
        save_samples(x, self.run_dir / "samples" / f"step_{self.step:07d}.png", self.data.info, reference=ref)

    def _checkpoint(self) -> None:
        """Save a checkpoint at the current step on rank 0 (all ranks wait; a failure raises on all)."""
        ctx = self.ctx
        if self.last_ckpt is not None and self.last_ckpt.name == f"step_{self.step:07d}" and self.last_ckpt.exists():
            return
        D.barrier(ctx)
        err, path = None, None
        if ctx.is_main:
            try:
                path = self._save()
            except TrainingError as e:
                err = str(e)
        err = D.broadcast_object(err, ctx)
        D.barrier(ctx)
        if err:
            raise TrainingError(err)
        self.last_ckpt = Path(D.broadcast_object(str(path), ctx))

    def _save(self) -> Path:
        cfg, eng = self.cfg, self.engine
        cuda = [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
        state = {
            "config": to_dict(cfg), "data_info": self.data.info.to_dict(), "signature": self.signature,
            "examples_seen": self.step * cfg.train.batch_size, "world_size": self.ctx.world_size,
            "loss": self.last_loss, "val_loss": self.val_loss, "time": time.time(), "torch": torch.__version__,
            "rng": {"scheme": "keyed (seed, step, position)", "torch_cpu": torch.get_rng_state().tolist(),
                    "torch_cuda": cuda},
            "scaler": eng.scaler.state_dict() if eng.scaler is not None else None,
        }  # fmt: skip
        meta = {"config": json.dumps(to_dict(cfg)), "data_info": json.dumps(self.data.info.to_dict()),
                "signature": self.signature, "step": str(self.step)}  # fmt: skip
        weights = {"model": self.precond.net.state_dict(), "ema": self.ema.state_dict()}
        return save_checkpoint(self.run_dir / "checkpoints", self.step, weights, eng.optimizer.state_dict(), state,
                               cfg.train.keep_last, meta)  # fmt: skip
