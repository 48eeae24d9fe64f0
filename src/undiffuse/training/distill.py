"""``distill``: a few-step student from a trained diffusion run, by progressive or consistency distillation.

::

    from undiffuse.training.distill import distill
    distill("runs/fmnist", "runs/fmnist-cd", "consistency", target_steps=2, steps=600)

The student is an ordinary diffusion run directory trained by :func:`undiffuse.training.train` (checkpoints,
lock, EMA, precision, exact resume: every draw is keyed to (seed, step)); only the loss differs, given by
an objective of this module. Its config records the teacher (``distill`` section) and its few-step sampler
(``sample`` section), so ``undiffuse sample STUDENT`` samples it in ``target_steps`` steps by default.

- ``progressive`` (Salimans & Ho 2022, Alg. 2): rounds of ``distill.round_steps`` optimizer steps; in each
  round one student DDIM step learns two teacher DDIM steps (:func:`undiffuse.losses.distill.progressive_target`)
  on the student's grid of N steps (N = start_steps/2, then halved each round down to target_steps); the teacher
  of round r ≥ 1 is the student's EMA at the round's first step (saved as ``round_teacher.safetensors`` so a
  resumed run uses the same one). The student samples with DDIM on its own grid.
  With ``distill.teacher_solver`` (accurate-teacher targets) every round's target is instead the first teacher's
  own ODE solution over the student's interval — ``teacher_steps`` steps of that sampler over the whole grid,
  precomputed once for ``distill.pool`` starting noises (:class:`TeacherPool`) — so errors do not compound
  over rounds and no round teacher is kept.
- ``consistency`` (Song et al. 2023, Alg. 2; iCT's pseudo-Huber metric, 1/Δσ weights, log-normal σ and
  θ⁻ = stopgrad θ): the student is the consistency function f_θ (:class:`~undiffuse.diffusion.consistency.ConsistencyFunction`)
  and samples with the ``consistency`` sampler (multistep consistency sampling).

A student is initialised with the teacher's EMA weights. An ε-prediction teacher gets a v-prediction student
(ε-prediction cannot make one-step predictions at large σ, Salimans & Ho 2022, Sec. 4).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Optional, Union

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from undiffuse.config import DistillConfig, RunConfig, SampleConfig, apply_overrides
from undiffuse.data.kinds import kind_of
from undiffuse.diffusion.precond import append_dims
from undiffuse.errors import UserError
from undiffuse.io import atomic_path
from undiffuse.losses.distill import (
    consistency_loss,
    ddim_target,
    lognormal_pairs,
    progressive_loss,
    progressive_target,
)
from undiffuse.model import Model, load
from undiffuse.rng import derive_seed, sample_generators, starting_noise
from undiffuse.runs import saved_config
from undiffuse.samplers import registry
from undiffuse.sampling import guided_denoiser
from undiffuse.schedules.grids import make_sigmas
from undiffuse.speed import autocast
from undiffuse.training.keyed import StepDraws
from undiffuse.training.step import resolve_precision
from undiffuse.training.trainer import TrainSummary, train

__all__ = ["METHODS", "distill", "student_config", "default_start_steps", "progressive_rounds", "TeacherPool", "ProgressiveObjective",
           "ConsistencyObjective", "make_objective"]  # fmt: skip

METHODS = ("progressive", "consistency")
PathLike = Union[str, os.PathLike]
ROUND_TEACHER = "round_teacher.safetensors"
TEACHER_POOL = "teacher_pool.safetensors"
DEFAULT_TEACHER_SOLVER = "unipc"  # progressive distillation's targets by default (accurate-teacher, docs/distill.md)
DEFAULT_POOL = 4096  # teacher trajectories of the default one-round plan (docs/distill.md, over training seeds)


def progressive_rounds(start_steps: int, target_steps: int) -> list[int]:
    """The student's step counts, round by round: start_steps/2, start_steps/4, …, target_steps."""
    rounds, n = [], start_steps
    while n > target_steps and n % 2 == 0:
        n //= 2
        rounds.append(n)
    if n != target_steps:
        raise UserError(f"distill.start_steps = {start_steps} is not target_steps = {target_steps} times a power of 2 "
                        "— e.g. --start-steps 64 with --target-steps 1, 2 or 4")  # fmt: skip
    return rounds


def _draw_index(t: torch.Tensor, T: int, n: int) -> torch.Tensor:
    """A uniform index in 0..n−1 per example from the trainer's keyed draw t ∈ 1..T (uniform)."""
    return ((t - 1) * n) // T


def _uniform(t: torch.Tensor, T: int) -> torch.Tensor:
    """u ∈ (0, 1) per example from the trainer's keyed draw t ∈ 1..T: the midpoint of t's stratum."""
    return (t.double() - 0.5) / T


class TeacherPool:
    """The teacher's probability-flow ODE solutions for accurate-teacher targets, computed once per student.

    For starting noises n_j (j < ``d.pool``, each from its own generator keyed to (seed, "distill-pool", j)) the
    states x_j(σ_k) at the points σ_0 > … > σ_N = 0 of the first round's N-step grid: x_j(σ_0) = σ_0·n_j, and
    one run of the registry sampler ``d.teacher_solver`` over the nested ``d.teacher_steps``-step grid gives the
    others — the state it holds at each σ_k (its callback's x; for ``unipc`` before UniC corrects it at the next
    evaluation) and its output at σ_N = 0. One run keeps the multistep solvers' history across the σ_k: solving
    each interval on its own restarts them at first order (on N(m, s²) data and the cosine schedule, 4×4 unipc
    steps are then 3× less accurate than 16 in one run). Interval i of a round of M = N/m steps spans σ_{im} → σ_{(i+1)m};
    one student DDIM step from x_j(σ_{im}) lands on x_j(σ_{(i+1)m}) exactly when its x̂_0 is
    :func:`~undiffuse.losses.distill.ddim_target` of the two (Salimans & Ho 2022, Alg. 2, with the teacher's
    accurate solution in place of its two DDIM steps; for the 1-step round this is Luhman & Luhman 2021's
    knowledge distillation). Kept in ``STUDENT/teacher_pool.safetensors``, so a resumed run reuses it.

    ``precision`` is the student's ``train.precision``: the teacher's evaluations run under the same autocast as
    the student's training (on Fashion-MNIST bf16 costs 0.59× and moves the states by an rms of 0.002–0.005 against
    the images' 0.79, docs/distill.md); the states are kept in fp32.
    """

    def __init__(self, teacher: Model, d: DistillConfig, n_steps: int, seed: int, precision: str = "fp32") -> None:
        if d.teacher_solver not in registry.SPECS:
            raise UserError(f"distill.teacher_solver = {d.teacher_solver!r} is not a sampler — choose one of "
                            f"{', '.join(registry.SPECS)} (e.g. unipc), or '' for two DDIM steps")  # fmt: skip
        if teacher.config.model.class_cond or teacher.config.model.text_cond:
            raise UserError("accurate-teacher targets (distill.teacher_solver) need an unconditional teacher — "
                            "unset distill.teacher_solver for a conditional one")  # fmt: skip
        if d.teacher_steps % n_steps:
            raise UserError(f"distill.teacher_steps = {d.teacher_steps} is not a multiple of the first round's "
                            f"{n_steps} steps — e.g. {4 * n_steps}")  # fmt: skip
        self.teacher, self.d, self.n_steps, self.seed, self.precision = teacher, d, n_steps, seed, precision
        fine = make_sigmas(teacher.schedule, d.teacher_steps, d.grid)
        self.sigmas = fine[:: d.teacher_steps // n_steps]  # σ_0 … σ_N, the first round's grid
        if not torch.allclose(self.sigmas, make_sigmas(teacher.schedule, n_steps, d.grid)):
            raise UserError(f"the {d.grid} grids of {d.teacher_steps} and {n_steps} steps are not nested on this "
                            f"schedule — choose distill.teacher_steps = {n_steps}·2^k")  # fmt: skip
        self.fine = fine
        self.x: Optional[torch.Tensor] = None  # [pool, N + 1, *shape]

    def solve(self, rows: range, device: torch.device, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The states [len(rows), N + 1, *shape] of trajectories ``rows``, the teacher under ``dtype`` autocast
        (None: fp32)."""
        den = guided_denoiser(self.teacher, self.teacher.denoiser)
        gens = sample_generators(derive_seed(self.seed, "distill-pool"), list(rows), device)
        x = starting_noise(gens, self.teacher.data.shape, self.sigmas[0], device)
        per = self.d.teacher_steps // self.n_steps
        states = [x] + [None] * self.n_steps

        def keep(step: dict) -> None:  # the state after the teacher's step i, at σ_{(i+1)/per} of the N-step grid
            if (step["i"] + 1) % per == 0:
                states[(step["i"] + 1) // per] = step["x"].clone()

        with torch.no_grad(), autocast(device, dtype):
            states[-1] = registry.sample(self.d.teacher_solver, den, x, self.fine.to(device), callback=keep)
        return torch.stack(states, 1).float()

    def load_or_make(self, path: Path, device: torch.device, batch: int = 64) -> torch.Tensor:
        """The pool from ``path`` if it was made with these settings, else solved now (``batch`` trajectories at
        a time: on one CPU thread the fmnist UNet costs less per sample at 64 than at 256) and saved there."""
        meta = {"solver": self.d.teacher_solver, "steps": str(self.d.teacher_steps), "pool": str(self.d.pool),
                "n_steps": str(self.n_steps), "seed": str(self.seed), "teacher": self.d.teacher}  # fmt: skip
        dtype, _ = resolve_precision(self.precision, device)
        if dtype is not None:
            meta["autocast"] = str(dtype).removeprefix("torch.")
        if path.is_file():
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}) == meta:
                    self.x = f.get_tensor("x").to(device)
                    return self.x
        self.x = torch.cat([self.solve(range(a, min(a + batch, self.d.pool)), device, dtype)
                            for a in range(0, self.d.pool, batch)])  # fmt: skip
        with atomic_path(path) as tmp:
            save_file({"x": self.x.cpu().contiguous()}, tmp, metadata=meta)
        return self.x

    def pairs(self, j: torch.Tensor, i: torch.Tensor, m: int) -> tuple[torch.Tensor, ...]:
        """(x, x_next, σ, σ_next) of trajectories ``j`` on intervals ``i`` of the round of N/m steps."""
        s = self.sigmas.to(self.x.device)
        return self.x[j, i * m], self.x[j, (i + 1) * m], s[i * m], s[(i + 1) * m]


class ProgressiveObjective:
    """Progressive distillation's loss (Salimans & Ho 2022, Alg. 2) as a trainer objective."""

    def __init__(self, cfg: RunConfig, teacher: Model, run_dir: PathLike) -> None:
        self.d: DistillConfig = cfg.distill
        self.teacher_model, self.run_dir = teacher, Path(run_dir)
        self.rounds = progressive_rounds(self.d.start_steps, self.d.target_steps)
        self.round, self.teacher, self.fine = -1, None, None
        self.pool = (TeacherPool(teacher, self.d, self.rounds[0], cfg.train.seed, cfg.train.precision)
                     if self.d.teacher_solver else None)  # fmt: skip
        self.student: Optional[nn.Module] = None
        self.ema_net: Optional[nn.Module] = None

    def setup(self, precond: nn.Module, ema_net: nn.Module, device: torch.device) -> None:
        """Start the student (and its EMA) as a copy of the teacher's EMA weights."""
        self.teacher_model.denoiser.to(device)
        _copy_teacher(self.teacher_model, precond, ema_net)
        self.student, self.ema_net = precond, ema_net
        if self.pool is not None:
            self.pool.load_or_make(self.run_dir / TEACHER_POOL, device)

    def round_of(self, step: int) -> int:
        return min(step // max(self.d.round_steps, 1), len(self.rounds) - 1)

    def _enter_round(self, r: int, device: torch.device) -> None:
        """Round r's grid (the teacher's 2N steps) and teacher: the teacher run for r = 0, else the student's EMA
        at the round's first step."""
        self.round = r
        self.fine = make_sigmas(self.teacher_model.schedule, 2 * self.rounds[r], self.d.grid).to(device)
        if r == 0:
            self.teacher = guided_denoiser(self.teacher_model, self.teacher_model.denoiser)
            return
        net = _frozen_copy(self.ema_net)
        path = self.run_dir / ROUND_TEACHER
        if _saved_round(path) == r:  # a resumed run: the EMA of the round's first step, as saved then
            net.load_state_dict(load_file(str(path)), strict=True)
        else:
            with atomic_path(path) as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, tmp,
                          metadata={"round": str(r)})  # fmt: skip
        self.teacher = guided_denoiser(self.teacher_model, self.student.with_net(net))

    def losses(self, step: int, student, x0: torch.Tensor, draws: StepDraws, cond: dict) -> torch.Tensor:
        """Per-example loss of ``step``: the student's N-step DDIM grid of this round, an interval i drawn
        from the keyed t, x = x_0 + σ_i·noise, and the two-teacher-step target; with a teacher pool, trajectory j
        drawn from the keyed u_label and its states at the interval's ends instead (x_0 and noise unused)."""
        r = self.round_of(step)
        if self.pool is not None:
            m = self.rounds[0] // self.rounds[r]
            i = _draw_index(draws.t, self.teacher_model.schedule.T, self.rounds[r]).to(self.pool.x.device)
            j = (draws.u_label.double() * self.d.pool).long().clamp(max=self.d.pool - 1).to(self.pool.x.device)
            x, x_next, sigma, nxt = (v.to(x0.device) for v in self.pool.pairs(j, i, m))
            return progressive_loss(student, ddim_target(x, x_next, sigma, nxt), x, sigma, cond)
        if r != self.round:
            self._enter_round(r, x0.device)
        fine = self.fine  # the teacher's 2N steps
        i = _draw_index(draws.t, self.teacher_model.schedule.T, self.rounds[r])
        sigma, mid, nxt = fine[2 * i], fine[2 * i + 1], fine[2 * i + 2]
        x = torch.where(append_dims(torch.isinf(sigma), x0), draws.noise, x0 + append_dims(sigma, x0) * draws.noise)
        with torch.no_grad():
            target = progressive_target(self.teacher, x, sigma, mid, nxt, cond)
        return progressive_loss(student, target, x, sigma, cond)


class ConsistencyObjective:
    """Consistency distillation's loss (Song et al. 2023, Alg. 2, with iCT's improvements) as a trainer objective."""

    def __init__(self, cfg: RunConfig, teacher: Model) -> None:
        self.d: DistillConfig = cfg.distill
        self.teacher_model = teacher
        self.teacher = guided_denoiser(teacher, teacher.denoiser)
        grid = make_sigmas(teacher.schedule, self.d.cd_steps, "karras")
        self.sigmas = grid[grid > 0]  # σ_max = σ_0 > … > σ_{N−1} = σ_min (Karras et al. 2022, ρ = 7)

    def setup(self, precond: nn.Module, ema_net: nn.Module, device: torch.device) -> None:
        self.teacher_model.denoiser.to(device)
        _copy_teacher(self.teacher_model, precond, ema_net)

    def losses(self, step: int, student, x0: torch.Tensor, draws: StepDraws, cond: dict) -> torch.Tensor:
        """Per-example loss: a pair (σ_{n+1}, σ_n) drawn log-normally from the keyed t, then
        :func:`undiffuse.losses.distill.consistency_loss` with c = huber_c·√d."""
        u = _uniform(draws.t, self.teacher_model.schedule.T)
        hi, lo = lognormal_pairs(u, self.sigmas, self.d.p_mean, self.d.p_std)
        c = self.d.huber_c * math.sqrt(x0[0].numel())
        return consistency_loss(student, self.teacher, x0, draws.noise, hi.to(x0.device), lo.to(x0.device), c, cond)


def _copy_teacher(teacher: Model, precond: nn.Module, ema_net: nn.Module) -> None:
    state = teacher.denoiser.net.state_dict()
    precond.net.load_state_dict(state, strict=True)
    ema_net.load_state_dict(state, strict=True)


def _frozen_copy(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net).eval().requires_grad_(False)


def _saved_round(path: Path) -> Optional[int]:
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        return int((f.metadata() or {}).get("round", -1))


def make_objective(cfg: RunConfig, run_dir: PathLike, device: Union[str, torch.device, None] = None):
    """The objective of a student config: its teacher loaded (EMA weights of ``distill.teacher_step``)."""
    d = cfg.distill
    if d.method not in METHODS:
        raise UserError(f"{run_dir} is not a distilled student (no distill.method) — pass a run made by `undiffuse distill`")
    if d.teacher_solver and d.method != "progressive":
        raise UserError("distill.teacher_solver (accurate-teacher targets) is for --method progressive — unset it")
    teacher = load(d.teacher, d.teacher_step or None, ema=True, device=device or "cpu")
    if d.method == "progressive":
        return ProgressiveObjective(cfg, teacher, run_dir)
    return ConsistencyObjective(cfg, teacher)


def default_start_steps(target_steps: int, teacher_solver: str) -> int:
    """The teacher steps that the first progressive round halves when --start-steps is not given: with
    accurate-teacher targets 2·target_steps — one round, the whole budget on the wanted student (measured better
    on Fashion-MNIST than rounds of 4, 2, 1 steps at the same cost, docs/distill.md) — else 64 (Salimans & Ho's
    halving from a many-step teacher)."""
    return 2 * target_steps if teacher_solver else 64


def student_config(
    teacher: Model, teacher_dir: PathLike, method: str, target_steps: int = 4, steps: Optional[int] = None,
    start_steps: Optional[int] = None, overrides: Iterable[str] = (), teacher_solver: Optional[str] = None,
) -> RunConfig:  # fmt: skip
    """The student's run configuration: the teacher's, with the ``distill`` and ``sample`` sections set, a
    v-prediction for an ε teacher, and training settings for distillation (half the teacher's learning rate, no
    preview grids or validation, a short EMA; progressive: a checkpoint at the end of every round). ``overrides``
    apply last.

    ``teacher_solver`` (progressive only): None for the default, ``unipc`` (accurate-teacher targets), or "" for
    Salimans & Ho's two DDIM steps of each round's teacher; ``start_steps`` None: :func:`default_start_steps`;
    ``steps`` None: 500 with the teacher pool, else 600. The default plan (accurate-teacher targets in one round)
    learns from :data:`DEFAULT_POOL` = 4096 teacher trajectories, solved under the student's ``train.precision``
    (:class:`TeacherPool`), with the learning rate cosine-decayed to 0 over its steps; rounds and consistency keep
    2048 and a constant rate (``--set distill.pool=2048 --set train.lr_schedule=constant`` is the earlier default;
    the measurements over training seeds are in docs/distill.md). A
    progressive student trains without dropout (its targets are deterministic; on Fashion-MNIST the 4-step
    student's FD was 19.2 without, 19.9 with the teacher's 0.1, one seed); a consistency student keeps the teacher's
    (iCT found dropout helps consistency training)."""
    if method not in METHODS:
        raise UserError(f"unknown distillation method {method!r} — choose one of {', '.join(METHODS)}")
    process = kind_of(teacher.data.kind).process
    if process != "gaussian":  # both methods step the probability-flow ODE in σ-space
        raise UserError(f"{teacher_dir} is a {teacher.data.kind} run of the {process!r} forward process; distillation "
                        "needs a Gaussian one (images, vectors) — distil a Gaussian-diffusion run")  # fmt: skip
    if method != "progressive" and teacher_solver:
        raise UserError("distill.teacher_solver (accurate-teacher targets) is for --method progressive — unset it")
    solver = (DEFAULT_TEACHER_SOLVER if teacher_solver is None else teacher_solver) if method == "progressive" else ""
    if start_steps is None:
        start_steps = default_start_steps(target_steps, solver)
    if steps is None:
        steps = 500 if solver else 600
    base = teacher.config
    n_rounds = len(progressive_rounds(start_steps, target_steps)) if method == "progressive" else 1
    one_round = bool(solver) and n_rounds == 1  # the default plan: one round on the teacher pool
    round_steps = math.ceil(steps / n_rounds) if method == "progressive" else 0
    d = DistillConfig(method=method, teacher=str(Path(teacher_dir).resolve()), teacher_step=teacher.step,
                      target_steps=target_steps, start_steps=start_steps, round_steps=round_steps,
                      teacher_solver=solver, pool=DEFAULT_POOL if one_round else DistillConfig.pool)  # fmt: skip
    sample = (SampleConfig("ddim", target_steps, d.grid) if method == "progressive"
              else SampleConfig("consistency", target_steps, None))  # fmt: skip
    param = "v" if base.diffusion.parameterization == "eps" else base.diffusion.parameterization
    tc = replace(base.train, steps=round_steps * n_rounds if method == "progressive" else steps, lr=base.train.lr / 2,
                 warmup_steps=10, ema_halflife_kimg=0.5, ema_warmup=0.0, sample_every=0, val_every=0,
                 ckpt_every=round_steps or max(steps // 4, 1), keep_last=n_rounds + 1,
                 lr_schedule="cosine" if one_round else "constant", decay_steps=steps if one_round else 0)  # fmt: skip
    model = replace(base.model, dropout=0.0) if method == "progressive" else base.model
    cfg = replace(base, model=model, diffusion=replace(base.diffusion, parameterization=param, weighting=None), train=tc,
                  sample=sample, distill=d)  # fmt: skip
    return apply_overrides(cfg, overrides)


def distill(
    teacher_dir: Optional[PathLike], out: PathLike, method: Optional[str] = None, target_steps: int = 4,
    steps: Optional[int] = None, resume: bool = False, start_steps: Optional[int] = None, overrides: Iterable[str] = (),
    teacher_checkpoint: Union[int, str, None] = None, device: Union[str, torch.device, None] = None,
    progress: bool = True, teacher_solver: Optional[str] = None,
) -> TrainSummary:  # fmt: skip
    """Distil the teacher run into a few-step student run at ``out`` (or, with ``resume``, continue one:
    the teacher, method and settings come from the student's saved config; ``steps`` may raise the total).

    Args:
        method: ``progressive`` or ``consistency``; target_steps: the student's sampling steps.
        steps: optimizer steps in all (default: 500 with the teacher pool, else 600; progressive: split evenly
            over its rounds).
        start_steps: the teacher's steps that the first progressive round halves (default
            :func:`default_start_steps`: 2·target_steps with accurate-teacher targets, else 64).
        teacher_solver: progressive only — None for the default (``unipc``: accurate-teacher targets), a sampler
            of the registry, or "" for two DDIM steps of each round's teacher (Salimans & Ho 2022).
        overrides: ``--set`` strings applied to the student's config (e.g. ``train.lr=2e-4``).
    """
    if resume:
        cfg = saved_config(out)
        objective = make_objective(cfg, out, device)
        return train(None, out, steps=steps, resume=True, device=device, progress=progress, objective=objective)
    if teacher_dir is None or method is None:
        raise UserError("distill needs a TEACHER run and --method (progressive or consistency) — or --resume")
    teacher = load(teacher_dir, teacher_checkpoint, ema=True, device="cpu")
    cfg = student_config(teacher, teacher_dir, method, target_steps, steps, start_steps, overrides, teacher_solver)
    objective = make_objective(cfg, out, device)
    return train(cfg, out, device=device, progress=progress, objective=objective)
