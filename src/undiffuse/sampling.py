"""Sampling a trained :class:`~undiffuse.model.Model`: guidance and clipping around its denoiser, the σ
grid, then the one driver (:func:`undiffuse.samplers.driver.drive`).

Sample i depends only on (seed, i): it has its own generator, seeded from (seed, i), for its initial
noise and every noise draw of the sampler, so neither n, the batch size nor the other indices change it.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch

from undiffuse.errors import UserError
from undiffuse.model import Model
from undiffuse.samplers import registry
from undiffuse.samplers.driver import drive, registry_batch
from undiffuse.schedules.grids import GRIDS, make_sigmas

__all__ = ["sample", "resolve_sampling", "sampler_names", "sigmas_for", "guided_denoiser", "null_cond"]


def sampler_names() -> tuple[str, ...]:
    """The sampler names :func:`sample` accepts."""
    return tuple(registry.SPECS)


def sigmas_for(model: Model, sampler: str, steps: int, spacing: Optional[str] = None) -> torch.Tensor:
    """The σ grid of ``steps`` sampler steps on the model's schedule: ``spacing`` (any grid of
    :func:`~undiffuse.schedules.grids.make_sigmas`) or, when None, the sampler's default grid."""
    if steps < 1:
        raise UserError(f"--steps {steps} must be at least 1")
    if steps > model.schedule.T:
        raise UserError(f"--steps {steps} exceeds the model's T = {model.schedule.T} — use at most {model.schedule.T}")
    grid = spacing or registry.default_grid(sampler)
    if grid not in GRIDS:
        raise UserError(f"unknown grid {grid!r} — choose one of {', '.join(GRIDS)}")
    return make_sigmas(model.schedule, steps, grid).to(model.device)


def resolve_sampling(model: Model, sampler: Optional[str] = None, steps: Optional[int] = None,
                     spacing: Optional[str] = None) -> tuple[str, int, Optional[str]]:  # fmt: skip
    """(sampler, steps, grid) with the run's defaults (its config's ``sample`` section) for those not given;
    the run's grid applies only to the run's own sampler (None: that sampler's default grid)."""
    own = model.config.sample
    sampler = sampler or own.sampler
    grid = spacing or (own.grid if sampler == own.sampler else None)
    return sampler, (steps if steps is not None else own.steps), grid


@torch.no_grad()
def sample(
    model: Model, n: int, seed: int = 0, sampler: Optional[str] = None, steps: Optional[int] = None,
    eta: Optional[float] = None,
    batch_size: int = 256, cond: Optional[dict] = None, callback: Optional[Callable[[dict], None]] = None,
    var_type: Optional[str] = None, clip: Union[str, tuple[float, float], None] = "auto",
    spacing: Optional[str] = None, info: Optional[dict] = None, guidance: Optional[float] = None,
    threshold: Optional[float] = None, indices: Optional[Sequence[int]] = None,
    write: Optional[Callable[[int, torch.Tensor], None]] = None,
    on_batch: Optional[Callable[[int, int], None]] = None, **options,
) -> Optional[torch.Tensor]:  # fmt: skip
    """Draw ``n`` samples [n, *shape] in model units ([-1, 1] images, data units for vectors).

    Args:
        sampler: any name of :data:`undiffuse.samplers.registry.SPECS`; ``eta``, ``var_type`` and
            ``**options`` are its declared options (an option it does not declare is refused).
            None: the run's own default (``sample.sampler`` of its config: ddim, or a distilled student's).
        steps: sampler steps (None: the run's ``sample.steps``); ``spacing`` the σ grid (None: the run's
            ``sample.grid`` for its own sampler, else the sampler's default, chosen by measurement).
        cond: conditioning passed to the denoiser, e.g. {"class_labels": LongTensor [n]}.
        callback: called at every step with dict(i, x, sigma, sigma_next, denoised, offset) where
            offset is the position of the batch's first sample.
        clip: "auto" (the config's ``diffusion.clip``), None, or (lo, hi): clipping of x̂_0.
        info: if a dict, receives "nfe" (network evaluations per sample), "steps", "sampler", "grid".
        guidance: classifier-free guidance scale w (None: no guidance, i.e. w = 1; 0: unconditional).
        threshold: Imagen's dynamic thresholding at this percentile (e.g. 0.995) instead of ``clip``.
        indices: draw the samples with these numbers instead of 0..n−1 (``n`` is then ignored).
        write: stream each batch to ``write(start, x)`` instead of returning them (returns None).
        on_batch: progress, called as on_batch(done, total) after each batch.
    :func:`undiffuse.conditioning.conditioning` builds ``cond`` / ``guidance`` from a class or a prompt.
    """
    sampler, steps, spacing = resolve_sampling(model, sampler, steps, spacing)
    idx = list(range(n)) if indices is None else [int(i) for i in indices]
    if (indices is None and n < 1) or batch_size < 1:
        raise UserError(f"n and batch_size must be positive (got {n}, {batch_size}) — pass positive counts")
    if var_type is None and "var_type" in registry.spec(sampler).options:
        var_type = model.config.diffusion.sample_var_type  # the run's Σ_θ convention for DDPM
    registry.resolve_options(sampler, eta=eta, var_type=var_type, **options)  # refuse before any work
    sigmas = sigmas_for(model, sampler, steps, spacing)
    den = guided_denoiser(model, None, guidance, threshold, clip)
    run_batch, counted = registry_batch(sampler, den, sigmas, callback, eta=eta, var_type=var_type, **options)
    out = drive(run_batch, model.data.shape, idx, seed=seed, sigma_max=sigmas[0], device=model.device,
                batch_size=batch_size, cond=cond, write=write, counted=counted, on_batch=on_batch)  # fmt: skip
    if info is not None:
        info.update(nfe=out.nfe, steps=steps, sampler=sampler, grid=spacing or registry.default_grid(sampler))
    return out.x


def null_cond(model: Model) -> dict:
    """The classifier-free-guidance null condition of ``model`` as scalars that
    :class:`~undiffuse.diffusion.guidance.ClassifierFreeGuidance` broadcasts to any batch: the null label
    ``num_classes``, or zero context with an all-False mask (what caption dropout trained)."""
    m = model.config.model
    if m.class_cond:
        return {"class_labels": int(model.data.num_classes)}
    if getattr(m, "text_cond", False):
        return {"context": 0.0, "context_mask": False}
    raise UserError("classifier-free guidance needs a class- or text-conditional run, and this one is neither — drop --guidance")


def guided_denoiser(
    model: Model, denoiser: Optional[Callable] = None, guidance: Optional[float] = None,
    threshold: Optional[float] = None, clip: Union[str, tuple[float, float], None] = "auto",
) -> Callable:  # fmt: skip
    """``denoiser`` (default: the model's) with classifier-free guidance at scale ``guidance`` (None: none),
    then Imagen's dynamic thresholding at percentile ``threshold`` or else static clipping to ``clip``
    ("auto": the config's ``diffusion.clip``). Any sampler accepts the result."""
    from undiffuse.diffusion.guidance import ClassifierFreeGuidance, Clipped, Thresholded

    den = model.denoiser if denoiser is None else denoiser
    if guidance is not None:
        if not math.isfinite(guidance) or guidance < 0:
            raise UserError(f"--guidance {guidance} must be a finite scale ≥ 0 (0: unconditional, 1: conditional)")
        den = ClassifierFreeGuidance(den, float(guidance), null_cond(model))
    if threshold is not None:
        if not 0 < threshold <= 1:
            raise UserError(f"dynamic-thresholding percentile {threshold} must lie in (0, 1] — e.g. 0.995")
        return Thresholded(den, threshold)
    clip = model.config.diffusion.clip if clip == "auto" else clip
    return Clipped(den, *clip) if clip is not None else den
