"""What the worker runs: a sample request (batched with others of equal settings) and an edit request
(inpainting or SDEdit, alone) — the same calls as ``undiffuse sample`` and ``undiffuse edit``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Optional

import torch

from undiffuse.model import Model
from undiffuse.sampling import sample

__all__ = ["SampleWork", "TableWork", "EditWork", "cat_cond"]


def cat_cond(conds: list[dict]) -> dict:
    """The per-sample conditions of several requests, row after row (tensors concatenated, scalars kept)."""
    out: dict = {}
    for k in conds[0] if conds else ():
        vals = [c[k] for c in conds]
        out[k] = torch.cat(vals) if isinstance(vals[0], torch.Tensor) and vals[0].ndim > 0 else vals[0]
    return out


def _cond_signature(cond: dict) -> tuple:
    return tuple(sorted((k, tuple(v.shape[1:]) if isinstance(v, torch.Tensor) else repr(v)) for k, v in cond.items()))


def _preview_every(steps: int, previews: int) -> int:
    return max(1, math.ceil(steps / previews))


def _progress(group: list, step: Callable[[dict], None], steps: int, previews: int,
              rows: list[tuple[int, int]]) -> Callable[[dict], None]:  # fmt: skip
    """The sampler callback of a group: ``step`` (the batcher's cancellation check), then its events."""
    every = _preview_every(steps, previews)

    def callback(d: dict) -> None:
        step(d)
        _emit_step(group, d, steps, every, rows)

    return callback


def _emit_step(group: list, d: dict, steps: int, every: int, rows: list[tuple[int, int]]) -> None:
    """Progress to every job; x̂₀ rows (or the state, where a move has none) to those that stream previews."""
    k = int(d["i"]) + 1
    for job, (lo, hi) in zip(group, rows):
        job.emit(("progress", k, steps))
        if job.previews and (k % every == 0 or k == steps):
            shown = d.get("denoised", d["x"])
            job.emit(("preview", k, steps, shown[lo:hi].detach().float().cpu().clone()))


@dataclass
class SampleWork:
    """``undiffuse sample`` of one request; ``kw`` is :func:`undiffuse.conditioning.conditioning`'s output."""

    model: Model
    name: str
    n: int
    seed: int
    sampler: str
    steps: int
    eta: Optional[float] = None
    spacing: Optional[str] = None
    kw: dict = field(default_factory=dict)
    previews: int = 8

    @property
    def rows(self) -> int:
        return self.n

    @property
    def key(self) -> Hashable:
        cond = self.kw.get("cond", {})
        return ("sample", self.name, self.sampler, self.steps, self.eta, self.spacing, self.kw.get("guidance"),
                _cond_signature(cond))  # fmt: skip

    def run(self, group: list, step: Callable[[dict], None]) -> list[torch.Tensor]:
        works = [j.work for j in group]
        seeds = [w.seed for w in works for _ in range(w.n)]
        indices = [i for w in works for i in range(w.n)]
        bounds, lo = [], 0
        for w in works:
            bounds.append((lo, lo + w.n))
            lo += w.n
        callback = _progress(group, step, self.steps, self.previews, bounds)
        cond = cat_cond([w.kw["cond"] for w in works]) if "cond" in self.kw else None
        x = sample(self.model, len(indices), seed=seeds, sampler=self.sampler, steps=self.steps, eta=self.eta,
                   batch_size=len(indices), cond=cond, guidance=self.kw.get("guidance"), spacing=self.spacing,
                   callback=callback, indices=indices)  # fmt: skip
        return [x[a:b] for a, b in bounds]


@dataclass
class TableWork:
    """``undiffuse sample`` of a table run: :func:`undiffuse.tables.sample_rows` (the multinomial sampler; its
    class draws are keyed to the request's seed, so a table request runs alone)."""

    model: Model
    n: int
    seed: int
    steps: int
    class_label: Optional[int] = None
    previews: int = 8
    key: Any = None

    @property
    def rows(self) -> int:
        return self.n

    def run(self, group: list, step: Callable[[dict], None]) -> list[torch.Tensor]:
        from undiffuse.tables import sample_rows

        callback = _progress(group, step, self.steps, self.previews, [(0, self.n)])
        # the CLI's batch (--batch-size 256, at least n): one batch, so the same rows
        return [sample_rows(self.model, self.n, self.seed, self.steps, self.class_label, batch_size=max(256, self.n),
                            callback=callback)]  # fmt: skip


@dataclass
class EditWork:
    """``undiffuse edit`` of one request: inpainting when ``mask`` is given, else SDEdit at ``strength``."""

    model: Model
    image: torch.Tensor  # [1, C, H, W] in [-1, 1]
    mask: Optional[torch.Tensor]  # [1, 1, H, W], 1 = generate
    strength: float
    seed: int
    sampler: str
    steps: int
    eta: float = 0.0
    resample: int = 1
    jump: int = 1
    kw: dict = field(default_factory=dict)
    previews: int = 8
    key: Any = None  # an edit runs alone
    rows: int = 1

    def moves(self) -> int:
        from undiffuse import editing
        from undiffuse.schedules.grids import discrete_sigmas

        if self.mask is not None:
            return len(editing.repaint_moves(self.steps, self.resample, self.jump))
        return self.steps - editing.sdedit_start(discrete_sigmas(self.model.schedule, self.steps), self.strength)

    def run(self, group: list, step: Callable[[dict], None]) -> list[torch.Tensor]:
        from undiffuse import editing
        from undiffuse.sampling import guided_denoiser
        from undiffuse.schedules.grids import discrete_sigmas

        dev = self.model.device
        sigmas = discrete_sigmas(self.model.schedule, self.steps).to(dev)
        gen = torch.Generator(device=dev).manual_seed(self.seed)  # as `undiffuse edit --seed`
        extra = {"eta": self.eta} if self.sampler == "ddim" else {}
        den = guided_denoiser(self.model, guidance=self.kw.get("guidance"))
        callback = _progress(group, step, max(1, self.moves()), self.previews, [(0, 1)])
        cond, image = self.kw.get("cond", {}), self.image.to(dev)
        with torch.no_grad():
            if self.mask is not None:
                out = editing.inpaint(den, image, self.mask.to(dev), sigmas, sampler=self.sampler, generator=gen, cond=cond,
                                      resample=self.resample, jump=self.jump, callback=callback, **extra)  # fmt: skip
            else:
                out = editing.sdedit(den, image, self.strength, sigmas, sampler=self.sampler, generator=gen, cond=cond,
                                     callback=callback, **extra)  # fmt: skip
        return [out.clamp(-1, 1).cpu()]
