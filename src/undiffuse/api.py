"""The Python API of trained models: load a run, sample from it, save samples, measure its NLL.

Everything the CLI does is one of these functions::

    import undiffuse
    model = undiffuse.load("runs/fmnist")                 # EMA weights of the latest checkpoint
    x = undiffuse.api.sample(model, 64, seed=0)           # [64, 1, 28, 28] in [-1, 1]
    undiffuse.api.save_samples(x, "grid.png", model.data)
    print(undiffuse.api.nll(model, undiffuse.api.eval_data(model, n=500)))

Sample i depends only on (seed, i): it has its own generator, seeded from (seed, i), for its initial
noise and every noise draw of the sampler, so neither n nor the batch size changes it.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from undiffuse.build import DataInfo, architecture_signature, build_denoiser
from undiffuse.config import RunConfig, from_dict
from undiffuse.diffusion.precond import DenoiserOutput, Precond, denoise
from undiffuse.errors import UserError
from undiffuse.schedules.discrete import Schedule
from undiffuse.schedules.grids import discrete_sigmas
from undiffuse.training.checkpoint import (
    _read_weights,
    check_signature,
    load_weights_into,
    read_state,
    resolve_checkpoint,
)
from undiffuse.training.distributed import pick_device
from undiffuse.training.keyed import derive_seed

__all__ = ["Model", "load", "sample", "save_samples", "nll", "eval_data", "sampler_names", "conditioning",
           "guided_denoiser", "null_cond", "text_encoder"]



@dataclass
class Model:
    """A trained model: the denoiser (network + preconditioning), its schedule, config and data info."""

    denoiser: Precond
    schedule: Schedule
    config: RunConfig
    data: DataInfo
    step: int
    checkpoint: Optional[Path] = None
    ema: bool = True

    @property
    def precond(self) -> Precond:
        return self.denoiser

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def sample(self, n: int, seed: int = 0, **kw: Any) -> torch.Tensor:
        """:func:`sample` with this model."""
        return sample(self, n, seed, **kw)

    def nll(self, x0: torch.Tensor, **kw: Any) -> dict:
        """:func:`nll` with this model."""
        return nll(self, x0, **kw)


def load(
    run_dir: Union[str, os.PathLike], checkpoint: Union[str, os.PathLike, int, None] = None, ema: bool = True,
    device: Union[str, torch.device, None] = None,
) -> Model:  # fmt: skip
    """Load a trained model from a run directory.

    Args:
        run_dir: the training run's output directory.
        checkpoint: None for the latest; a step number, "step_N", or a checkpoint directory.
        ema: the EMA weights (default) or the raw weights.
        device: where to put it (default: cuda, mps or cpu, whichever is available).
    Raises:
        CheckpointError: missing, truncated or corrupt checkpoint, or one of another architecture.
    """
    path = resolve_checkpoint(run_dir, checkpoint)
    state = read_state(path)
    cfg, info = from_dict(state["config"]), DataInfo.from_dict(state["data_info"])
    run_cfg_file = Path(run_dir) / "config.json"
    if run_cfg_file.is_file():  # a checkpoint from elsewhere must fit this run's architecture
        import json

        cfg = from_dict(json.loads(run_cfg_file.read_text()))
    check_signature(path, state, architecture_signature(cfg, info))
    precond = build_denoiser(cfg, info)
    load_weights_into(precond.net, _read_weights(path, "ema.safetensors" if ema else "model.safetensors"), path)
    precond.to(pick_device(device)).eval().requires_grad_(False)
    return Model(precond, precond.schedule, cfg, info, int(state["step"]), path, ema)


class _Clipped:
    """A denoiser whose x̂_0 is clipped to [lo, hi] (static thresholding, Ho et al. 2020)."""

    def __init__(self, denoiser: Callable, lo: float, hi: float) -> None:
        self.denoiser, self.lo, self.hi = denoiser, lo, hi

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> DenoiserOutput:
        out = denoise(self.denoiser, x, sigma, **cond)
        return DenoiserOutput(out.denoised.clamp(self.lo, self.hi), out.var_frac)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        return self.denoise(x, sigma, **cond).denoised


def sampler_names() -> tuple[str, ...]:
    """The sampler names :func:`sample` accepts (those of ``undiffuse.samplers.registry`` if present)."""
    from undiffuse.samplers.registry import SAMPLERS as REGISTERED

    return tuple(REGISTERED)


def _run_sampler(name: str, denoiser, x, sigmas, gens, callback, cond, eta: Optional[float], var_type: str):
    """Dispatch by name through the sampler registry (which warns when a σ-space sampler meets a learned
    variance). ``eta`` reaches only samplers that take it, and only when given, so Euler-ancestral keeps
    its own default; ``var_type`` only DDPM."""
    from undiffuse.samplers import registry

    if name not in registry.SAMPLERS:
        raise UserError(f"unknown sampler {name!r} — choose one of {', '.join(registry.SAMPLERS)}")
    kw = dict(generator=gens, callback=callback, cond=cond)
    accepted = inspect.signature(registry.SAMPLERS[name]).parameters
    if eta is not None and "eta" in accepted:
        kw["eta"] = eta
    if "var_type" in accepted:
        kw["var_type"] = var_type
    return registry.sample(name, denoiser, x, sigmas, **kw)


def sample_generators(seed: int, start: int, stop: int, device: torch.device) -> list[torch.Generator]:
    """One generator per sample index i in [start, stop), seeded from (seed, i)."""
    return [torch.Generator(device=device).manual_seed(derive_seed(seed, "sample", i)) for i in range(start, stop)]


@torch.no_grad()
def sample(
    model: Model, n: int, seed: int = 0, sampler: str = "ddim", steps: int = 50, eta: Optional[float] = None,
    batch_size: int = 256, cond: Optional[dict] = None, callback: Optional[Callable[[dict], None]] = None,
    var_type: Optional[str] = None, clip: Union[str, tuple[float, float], None] = "auto",
    spacing: str = "uniform", info: Optional[dict] = None, guidance: Optional[float] = None,
    threshold: Optional[float] = None,
) -> torch.Tensor:  # fmt: skip
    """Draw ``n`` samples [n, *shape] in model units ([-1, 1] images, data units for vectors).

    Args:
        sampler: "ddim" (η = ``eta``; 0 is deterministic) or "ddpm" (ancestral, ``var_type``), or any
            name known to ``undiffuse.samplers.registry``.
        steps: sampler steps (a respaced subset of the T training steps, ``spacing`` as in
            :func:`undiffuse.schedules.discrete_steps`).
        cond: conditioning passed to the denoiser, e.g. {"class_labels": LongTensor [n]}.
        callback: called at every step with dict(i, x, sigma, sigma_next, denoised, offset) where
            offset is the index of the batch's first sample.
        clip: "auto" (the config's ``diffusion.clip``), None, or (lo, hi): clipping of x̂_0.
        info: if a dict, receives "nfe" (network evaluations per sample) and "steps".
        guidance: classifier-free guidance scale w (None: no guidance, i.e. w = 1, the plain conditional
            model; 0: unconditional); the conditional and null rows run as one batch of 2n.
        threshold: Imagen's dynamic thresholding at this percentile (e.g. 0.995) instead of ``clip``.
    :func:`conditioning` builds ``cond`` / ``guidance`` from a class, a prompt or a low-res image.
    """
    if n < 1 or steps < 1 or batch_size < 1:
        raise UserError(f"n, steps and batch_size must be positive (got {n}, {steps}, {batch_size}) — pass positive counts")
    if steps > model.schedule.T:
        raise UserError(f"--steps {steps} exceeds the model's T = {model.schedule.T} — use at most {model.schedule.T}")
    clip = model.config.diffusion.clip if clip == "auto" else clip
    var_type = var_type or model.config.diffusion.sample_var_type
    from undiffuse.samplers import Counted

    counted = Counted(model.denoiser)
    den = guided_denoiser(model, counted, guidance, threshold, clip)
    sigmas = discrete_sigmas(model.schedule, steps, spacing).to(model.device)
    out, nfe = [], 0
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        gens = sample_generators(seed, start, stop, model.device)
        noise = torch.stack([torch.randn(model.data.shape, generator=g, device=model.device) for g in gens])
        x = noise if torch.isinf(sigmas[0]) else noise * sigmas[0].float()
        c = {k: v[start:stop] for k, v in (cond or {}).items()}
        cb = (lambda d, s=start: callback({**d, "offset": s})) if callback is not None else None
        counted.nfe = 0
        out.append(_run_sampler(sampler, den, x, sigmas, gens, cb, c, eta, var_type).float().cpu())
        nfe = max(nfe, counted.nfe)
    if info is not None:
        info.update(nfe=nfe, steps=steps, sampler=sampler)
    return torch.cat(out)


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
    from undiffuse.diffusion.guidance import ClassifierFreeGuidance, Thresholded

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
    return _Clipped(den, *clip) if clip is not None else den


_ENCODERS: dict = {}


def text_encoder(model: Model):
    """The frozen sentence encoder for ``model``'s prompts, with its run's embedding cache (loaded once
    per run directory; raises TextEncoderUnavailable naming the extra when the package is absent)."""
    from undiffuse.conditioning import run_text_encoder

    run_dir = model.checkpoint.parent.parent if model.checkpoint is not None else None
    key = str(run_dir)
    if key not in _ENCODERS:
        enc = run_text_encoder(run_dir)
        enc.cache_path = None  # read the run's cache, never write to it from sampling
        _ENCODERS[key] = enc
    return _ENCODERS[key]


def _rows_of(value: Any, n: int, what: str) -> list:
    """A scalar repeated n times, or a sequence of length 1 or n as a list of n."""
    if isinstance(value, torch.Tensor):
        value = value.reshape(-1).tolist() if value.ndim else value.item()
    if isinstance(value, (list, tuple)):
        if len(value) not in (1, n):
            raise UserError(f"{len(value)} {what}s for {n} samples — give one, or one per sample")
        return list(value) * (n if len(value) == 1 else 1)
    return [value] * n


def _load_lowres(model: Model, lowres: Any, n: int) -> torch.Tensor:
    """A low-resolution input (a tensor [B, C, h, w] in [-1, 1] or an image path) at sr_from² → x_cond
    [n, C, H, W] on the model's device; a larger image is first area-downsampled to sr_from."""
    from undiffuse.editing import downsample, upsample_condition

    s = model.config.model.sr_from
    c, h, _ = model.data.shape
    if isinstance(lowres, (str, os.PathLike)):
        from undiffuse.data import from_uint8
        from undiffuse.data.images import open_image

        img = open_image(Path(lowres), "L" if c == 1 else "RGB")
        lowres = from_uint8(np.array(img)[None])
    x = torch.as_tensor(lowres, dtype=torch.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != c or x.shape[-1] != x.shape[-2]:
        raise UserError(f"low-res input of shape {tuple(x.shape)} does not fit: need [B, {c}, {s}, {s}] (square, {c} channel(s))")
    if x.shape[-1] < s:
        raise UserError(f"low-res input is {x.shape[-1]}×{x.shape[-1]}, smaller than the model's {s}×{s} — give a {s}×{s} image")
    if x.shape[-1] > s:
        x = downsample(x, s)
    if len(x) not in (1, n):
        raise UserError(f"{len(x)} low-res images for {n} samples — give one, or one per sample")
    return upsample_condition(x.expand(n, -1, -1, -1), h).to(model.device)


def conditioning(
    model: Model, n: int, class_label: Any = None, prompt: Any = None, guidance: Optional[float] = None,
    lowres: Any = None,
) -> dict:  # fmt: skip
    """The extra keyword arguments of :func:`sample` (``cond`` and ``guidance``) for ``n`` samples.

    - class-conditional runs: ``class_label`` an int or one per sample; None cycles through the classes
      (sample i gets class i mod K);
    - text-conditional runs: ``prompt`` a string or one per sample; None samples unconditionally;
    - super-resolution runs: ``lowres`` the low-resolution image(s) (a tensor in [-1, 1] or a path);
    - ``guidance``: the classifier-free guidance scale w (None: plain conditional sampling, w = 1).

    Refused with a one-line UserError: a prompt for a class model, a class for a text model, either for
    an unconditional model, a class out of range, guidance without anything to guide, a missing or
    misplaced low-res image. An unconditional run with nothing given returns {}.
    """
    m, info = model.config.model, model.data
    text = bool(getattr(m, "text_cond", False))
    sr = getattr(m, "sr_from", None)
    cond: dict = {}
    if prompt is not None and not text:
        what = "class-conditional — use --class" if m.class_cond else "not text-conditional"
        raise UserError(f"this run is {what}; a prompt needs a run trained with --cond text")
    if class_label is not None and not m.class_cond:
        what = "text-conditional — use --prompt" if text else "not class-conditional"
        raise UserError(f"this run is {what}; a class label needs a run trained with --cond class")
    if lowres is not None and not sr:
        raise UserError("this run is not a super-resolution model (model.sr_from) — drop the low-res input")
    if sr and lowres is None:
        raise UserError(f"this run super-resolves {sr}×{sr} images — pass the low-res input image")
    if m.class_cond:
        K = int(info.num_classes)
        labels = [i % K for i in range(n)] if class_label is None else _rows_of(class_label, n, "class label")
        bad = [y for y in labels if not isinstance(y, int) or isinstance(y, bool) or not 0 <= y < K]
        if bad:
            names = f" ({', '.join(f'{k}={v}' for k, v in enumerate(info.class_names))})" if info.class_names else ""
            raise UserError(f"class {bad[0]!r} is out of range — this run has classes 0..{K - 1}{names}")
        cond["class_labels"] = torch.tensor(labels, dtype=torch.long, device=model.device)
    if text and prompt is not None:
        prompts = [str(p) for p in _rows_of(prompt, n, "prompt")]
        if any(not p.strip() for p in prompts):
            raise UserError("empty prompt — describe the image, e.g. --prompt 'a pair of ankle boots'")
        cond.update(text_encoder(model).condition(prompts, device=model.device))
    if sr:
        cond["x_cond"] = _load_lowres(model, lowres, n)
    if guidance is not None and not ("class_labels" in cond or "context" in cond):
        raise UserError("--guidance needs a condition to guide: a class-conditional run, or --prompt for a text run")
    if not cond:
        return {}
    out: dict = {"cond": cond}
    if guidance is not None:
        out["guidance"] = float(guidance)
    return out


def save_samples(
    x: torch.Tensor, path: Union[str, os.PathLike], data: DataInfo, reference: Optional[torch.Tensor] = None,
    nrow: Optional[int] = None,
) -> Path:  # fmt: skip
    """Write samples in model units to ``path``:

    - ``*.npy``: data units — float32 [N, D] for vectors, uint8 [N, H, W, C] for images;
    - ``*.png`` / ``*.jpg``: a grid of images, or for 2-D vectors a scatter plot (over ``reference``
      data, if given);
    - a directory (a path ending in "/" or an existing directory): one PNG per image, named by index.
    """
    from undiffuse.data import save_image_grid, to_uint8
    from undiffuse.training.plots import scatter_plot

    text = str(path)
    path = Path(path)
    if text.endswith(("/", os.sep)) or path.is_dir():
        if data.kind != "image":
            raise UserError(f"one PNG per sample needs image data, and {data.name} is vectors — write .npy or .png")
        from PIL import Image

        path.mkdir(parents=True, exist_ok=True)
        width = max(6, len(str(len(x) - 1)))
        for i, u in enumerate(to_uint8(x).numpy()):
            Image.fromarray(u[..., 0] if u.shape[-1] == 1 else u).save(path / f"{i:0{width}d}.png")
        return path
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        arr = to_uint8(x).numpy() if data.kind == "image" else x.detach().cpu().float().numpy().astype(np.float32)
        np.save(path, arr)
        return path
    if suffix in (".png", ".jpg", ".jpeg"):
        if data.kind == "image":
            return save_image_grid(x, path, nrow=nrow or max(1, math.ceil(math.sqrt(len(x)))))
        if x.shape[1] < 2:
            raise UserError(f"cannot plot {x.shape[1]}-D samples — write .npy instead")
        return scatter_plot(x, path, reference, title=f"{len(x)} samples of {data.name}")
    raise UserError(f"unknown output type {suffix or text!r} — use .png, .npy or a directory ending in /")


def eval_data(model: Model, spec: Optional[str] = None, split: str = "test", n: Optional[int] = None) -> torch.Tensor:
    """Held-out data for :func:`nll`: the first ``n`` examples of ``split`` of ``spec`` (default: the
    run's own data), on the model's device; refuses data of another shape."""
    from undiffuse.data import load_dataset

    try:
        ds = load_dataset(spec or model.data.name, split, image_size=model.config.data.image_size)
    except Exception as e:  # DataError and friends: one line for the user
        if isinstance(e, UserError):
            raise
        raise UserError(str(e)) from e
    if tuple(ds.shape) != tuple(model.data.shape):
        raise UserError(f"data {ds.name} has shape {ds.shape} but the model expects {model.data.shape} — pass matching data")
    if n is not None and n < 1:
        raise UserError(f"--n must be positive, got {n}")
    x = ds.x[:n] if n is not None else ds.x
    return x.to(model.device)



def _strata(T: int, n_t: int) -> list[tuple[int, int]]:
    """Split the steps 2..T into min(n_t, T − 1) contiguous strata [lo, hi] of near-equal size."""
    m = T - 1
    k = max(1, min(n_t, m))
    edges = [2 + (j * m) // k for j in range(k + 1)]
    return [(edges[j], edges[j + 1] - 1) for j in range(k)]


def _group(strata: list[tuple[int, int]], shown: list[tuple[int, int]], values: torch.Tensor) -> list[dict]:
    """Sum per-stratum contributions (bits/dim) into the ``shown`` strata (which are unions of them)."""
    out = []
    for lo, hi in shown:
        v = sum(float(values[j]) for j, (a, b) in enumerate(strata) if lo <= a and b <= hi)
        out.append({"t": [lo, hi], "bpd": v})
    return out


@torch.no_grad()
def nll(
    model: Model, x0: torch.Tensor, n_t: int = 50, exact: bool = False, seed: int = 0,
    generator: Optional[torch.Generator] = None, batch_size: int = 256, cond: Optional[dict] = None,
) -> dict:  # fmt: skip
    """Negative log-likelihood bound (the VLB) of ``x0`` in bits/dim, with its standard error and parts.

    L = L_T + Σ_{t=2..T} L_{t−1} + L_0 (Ho et al. 2020, Eq. 5). The prior L_T is exact; the decoder L_0
    and each KL term use one draw x_t ~ q(x_t|x_0). By default the sum over t is an unbiased
    stratified Monte-Carlo estimate: steps 2..T are cut into ``n_t`` strata, one t is drawn per stratum
    and example, and its term is weighted by the stratum's size (≈ (T − 1)/n_t), so each example costs
    n_t + 1 network evaluations instead of T. ``exact=True`` evaluates all T terms.
    ``stderr`` is the standard error of the mean over examples (it includes the Monte-Carlo noise).
    Units: "discrete" bits/dim for 8-bit data (discretized decoder, ≥ 0), "continuous" otherwise
    (a density; can be negative). Returns a JSON-ready dict.
    """
    if n_t < 1 or batch_size < 1 or len(x0) < 1:
        raise UserError(f"nll needs n_t ≥ 1, batch_size ≥ 1 and at least one example — got {n_t}, {batch_size}, {len(x0)}")
    from undiffuse.diffusion.process import q_sample
    from undiffuse.losses.vlb import LN2, prior_kl, vlb_term

    sched, dev = model.schedule, model.device
    decoder = "discrete" if model.data.discrete_8bit else "continuous"
    var_type = model.config.diffusion.sample_var_type
    strata = _strata(sched.T, sched.T if exact else n_t)
    shown = _strata(sched.T, n_t)  # the strata reported (for exact, sums of its single steps)
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    gdev = gen.device
    parts: dict[str, list[torch.Tensor]] = {"prior": [], "decoder": [], "kl": [], "strata": []}

    def term(x, t_int: torch.Tensor, c: dict) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=gen, device=gdev).to(dev)
        x_t = q_sample(sched, x, t_int, noise)
        return vlb_term(model.denoiser, sched, x, x_t, t_int, var_type, decoder, **c).double()

    for start in range(0, len(x0), batch_size):
        x = x0[start : start + batch_size].to(dev).float()
        c = {k: v[start : start + batch_size].to(dev) for k, v in (cond or {}).items()}
        b = len(x)
        parts["prior"].append(prior_kl(sched, x).double())
        parts["decoder"].append(term(x, torch.ones(b, dtype=torch.long, device=dev), c))
        per_stratum = []
        for lo, hi in strata:
            size = hi - lo + 1
            u = torch.rand(b, generator=gen, device=gdev, dtype=torch.float64).to(dev)
            t_int = (lo + (u * size).long().clamp(max=size - 1)).long()
            per_stratum.append(size * term(x, t_int, c))
        stacked = torch.stack(per_stratum, 1)  # [b, strata]
        parts["strata"].append(stacked)
        parts["kl"].append(stacked.sum(1))
    cat = {k: torch.cat(v).cpu() for k, v in parts.items()}
    to_bpd = 1.0 / (model.data.dims * LN2)
    total = (cat["prior"] + cat["decoder"] + cat["kl"]) * to_bpd  # [N] bits/dim per example
    n = len(total)
    stderr = float(total.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return {
        "bits_per_dim": float(total.mean()),
        "stderr": stderr,
        "units": decoder,
        "estimator": "exact" if exact else "stratified",
        "n": n,
        "T": sched.T,
        "n_t": len(strata),
        "prior_bpd": float(cat["prior"].mean() * to_bpd),
        "decoder_bpd": float(cat["decoder"].mean() * to_bpd),
        "kl_terms_bpd": float(cat["kl"].mean() * to_bpd),
        "kl_strata": _group(strata, shown, cat["strata"].mean(0) * to_bpd),
        "nfe_per_example": len(strata) + 1,
        "var_type": var_type,
        "step": model.step,
    }
