"""Request bodies (documented in the OpenAPI schema) and their checks: a body becomes a
:class:`~undiffuse.serve.work.SampleWork` or :class:`~undiffuse.serve.work.EditWork`, or a one-line 4xx
:class:`~undiffuse.serve.limits.ServeError` before anything is queued. Uploads are decoded in memory."""

from __future__ import annotations

import io
import math
from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from undiffuse.conditioning import conditioning
from undiffuse.errors import UserError
from undiffuse.samplers import registry
from undiffuse.serve.catalog import Catalog, editable
from undiffuse.serve.limits import Limits, ServeError, TooLarge
from undiffuse.serve.outputs import check_format
from undiffuse.serve.work import EditWork, SampleWork, TableWork

__all__ = ["SampleBody", "EditFields", "sample_work", "table_work", "edit_work", "decode_image"]


class SampleBody(BaseModel):
    """``POST /api/sample``: the arguments of ``undiffuse sample`` (the answer is the file itself)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    model: str = Field(description="a name of GET /api/models")
    n: int = Field(16, description="number of samples (at most the server's max_n)")
    seed: int = Field(0, ge=-(2**63), lt=2**64, description="sample i depends only on (seed, i)")
    sampler: Optional[str] = Field(None, description="a sampler of GET /api/models (default: the run's own — ddim, "
                                   "or a distilled student's few-step sampler)")
    steps: Optional[int] = Field(None, description="sampler steps (default: the run's own, 50 for ddim)")
    eta: Optional[float] = Field(None, description="η in [0, 1] for ddim and euler_ancestral")
    guidance: Optional[float] = Field(None, description="classifier-free guidance scale w (conditional runs)")
    class_label: Optional[int] = Field(None, alias="class", description="class label (class-conditional runs)")
    prompt: Optional[str] = Field(None, max_length=500, description="text prompt (text-conditional runs)")
    spacing: Optional[str] = Field(None, description="σ grid (default: the sampler's own)")
    format: str = Field("png", description="png (grid or scatter plot), npy, … (the model's formats)")


class EditFields(BaseModel):
    """``POST /api/edit`` form fields beside the ``image`` (and optional ``mask``) uploads: the arguments
    of ``undiffuse edit`` (inpainting with a mask — white = generate — else SDEdit at ``strength``)."""

    model: str
    strength: Optional[float] = None
    seed: int = 0
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    resample: int = 1
    jump: int = 1
    guidance: Optional[float] = None
    class_label: Optional[int] = None
    prompt: Optional[str] = None


def _check_common(model, sampler: str, steps: int, limits: Limits) -> None:
    if sampler not in registry.SPECS:
        raise ServeError(f"unknown sampler {sampler[:40]!r} — choose one of {', '.join(registry.SPECS)}")
    most = min(limits.max_steps, model.schedule.T)
    if not 1 <= steps <= most:
        raise ServeError(f"steps {steps} is out of range — use 1 to {most} for this model")


def _check_eta(eta: Optional[float], sampler: str) -> None:
    if eta is not None and not (math.isfinite(eta) and 0 <= eta <= 1):
        raise ServeError(f"eta {eta} must lie in [0, 1]")
    registry.resolve_options(sampler, eta=eta)  # ConfigError (400) for a sampler without η


def sample_work(body: SampleBody, catalog: Catalog, limits: Limits) -> tuple[SampleWork, str]:
    """The checked work of a sample request and its response format (ServeError/UserError → 4xx)."""
    model = catalog.model(body.model)
    if not 1 <= body.n <= limits.max_n:
        raise ServeError(f"n {body.n} is out of range — ask for 1 to {limits.max_n} samples per request")
    if model.data.kind == "table":
        return table_work(body, model, limits)
    from undiffuse.sampling import resolve_sampling

    resolved = resolve_sampling(model, body.sampler, body.steps, body.spacing)  # the run's own defaults
    body = body.model_copy(update=dict(zip(("sampler", "steps", "spacing"), resolved)))
    _check_common(model, body.sampler, body.steps, limits)
    _check_eta(body.eta, body.sampler)
    fmt = check_format(body.format, model.data.kind)
    kw = conditioning(model, body.n, body.class_label, body.prompt, body.guidance)
    if not kw and (body.class_label is not None or body.prompt is not None):
        raise ServeError("this run is unconditional — drop class/prompt")
    work = SampleWork(model, body.model, body.n, body.seed, body.sampler, body.steps, body.eta, body.spacing, kw,
                      limits.previews)  # fmt: skip
    if body.spacing is not None:
        from undiffuse.sampling import sigmas_for

        sigmas_for(model, body.sampler, body.steps, body.spacing)  # an unknown grid is refused here
    return work, fmt


def table_work(body: SampleBody, model, limits: Limits) -> tuple[TableWork, str]:
    """A table run's request: rows through the multinomial sampler, as ``undiffuse sample RUN --out rows.csv``."""
    from undiffuse.tables import TABLE_STEPS

    if body.sampler not in (None, "ddim", "multinomial"):
        raise ServeError(f"tables are sampled with the multinomial sampler (TabDDPM), not {body.sampler[:40]!r} — drop sampler")
    given = [k for k in ("eta", "guidance", "prompt", "spacing") if getattr(body, k) is not None]
    if given:
        raise ServeError(f"{', '.join(given)} do not apply to table runs — drop them")
    steps = body.steps if body.steps not in (None, 50) else TABLE_STEPS  # as the CLI: 50 is the image default
    _check_common(model, "multinomial", steps, limits)
    fmt = check_format(body.format, model.data.kind)
    return TableWork(model, body.n, body.seed, steps, body.class_label, limits.previews), fmt


def decode_image(data: bytes, what: str, mode: str, limits: Limits):
    """A PIL image in ``mode`` from uploaded bytes: PNG or JPEG, at most ``limits.max_pixels`` (read from the
    header before any decoding), else a 4xx naming the upload."""
    from PIL import Image

    if not data:
        raise ServeError(f"the {what} upload is empty — attach a PNG or JPEG file")
    try:
        img = Image.open(io.BytesIO(data))
        if img.format not in ("PNG", "JPEG"):
            raise ServeError(f"the {what} upload is {img.format or 'not an image'} — attach a PNG or JPEG file")
        if img.width * img.height > limits.max_pixels:
            raise TooLarge(f"the {what} upload is {img.width}×{img.height} pixels — send at most {limits.max_pixels:,}")
        return img.convert(mode)
    except ServeError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ServeError(f"the {what} upload is not a readable image ({type(e).__name__}) — attach a PNG or JPEG file") from None


def _as_input(img, shape) -> tuple:
    """The model's input [1, C, H, W] in [-1, 1] (resized and centre-cropped as `undiffuse edit` does) and
    the upload's own (width, height)."""
    from undiffuse.data.images import fit_pixels, from_levels

    a = np.asarray(img)
    a = a[..., None] if a.ndim == 2 else a
    return from_levels(fit_pixels(a, shape[1])[None], 8), img.size


def _check_edit(f: EditFields, has_mask: bool) -> None:
    if has_mask and f.strength is not None:
        raise ServeError("strength is for SDEdit (no mask); inpainting regenerates the white region — drop one")
    if f.strength is not None and not (math.isfinite(f.strength) and 0 <= f.strength <= 1):
        raise ServeError(f"strength {f.strength} must lie in [0, 1]")
    if (f.resample > 1 or f.jump > 1) and not has_mask:
        raise ServeError("resample/jump are RePaint options — they need a mask")
    if f.resample < 1 or f.jump < 1 or f.resample * f.steps > 4 * 1000:
        raise ServeError(f"resample {f.resample} and jump {f.jump} must be ≥ 1 (and resample × steps ≤ 4000)")


def edit_work(f: EditFields, image: bytes, mask: Optional[bytes], catalog: Catalog, limits: Limits) -> EditWork:
    """The checked work of an edit request (uploads decoded in memory and size-checked)."""
    from undiffuse.cli.cmd_edit import mask_from_image

    model = catalog.model(f.model)
    if not editable(model):
        raise ServeError(f"model {f.model!r} models {model.data.kind} data — editing needs an image model")
    _check_common(model, f.sampler, f.steps, limits)
    _check_eta(f.eta, "ddim")
    _check_edit(f, mask is not None)
    c = model.data.shape[0]
    x, size = _as_input(decode_image(image, "image", "L" if c == 1 else "RGB", limits), model.data.shape)
    m = mask_from_image(decode_image(mask, "mask", "L", limits), size, model.data.shape, "upload") if mask is not None else None
    given = f.class_label is not None or f.prompt is not None or f.guidance is not None
    try:
        kw = conditioning(model, 1, f.class_label, f.prompt, f.guidance) if given else {}
    except UserError as e:
        raise ServeError(str(e)) from None
    strength = 0.6 if f.strength is None else f.strength
    return EditWork(model, x, m, strength, f.seed, f.sampler, f.steps, f.eta, f.resample, f.jump, kw, limits.previews)
