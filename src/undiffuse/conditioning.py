"""Conditioning inputs for training and sampling: captions of labelled data for text-conditional
models, and the low-resolution image of super-resolution (SR3) models.

Text (``model.text_cond``). Each training example gets a caption drawn from its class's TRAIN phrasings
(:func:`undiffuse.text.captions_for` for Fashion-MNIST; generic templates from the class names for
other labelled data). The draw is keyed to the example's position in the global batch of its step,
(seed, "caption", step) → uniforms [B], like the step's t and noise (:mod:`undiffuse.training.keyed`),
so resume and DDP stay exact. Every distinct training caption is encoded ONCE by the frozen
:class:`~undiffuse.text.TextEncoder` (its ``.safetensors`` cache lives in the run directory) into one
table of token embeddings [N, L, 384] + masks [N, L]; a batch indexes that table. Caption dropout
(``train.cond_drop``) gives the null condition of :func:`undiffuse.diffusion.guidance.null_condition`:
zero context with an all-False mask.

Super-resolution (``model.sr_from = s``): the network also gets ``x_cond`` =
``upsample_condition(downsample(x0, s), H)`` (Saharia et al. 2021), which is never dropped.

At sampling time :func:`conditioning` turns a class, a prompt or a low-resolution image into the
``cond`` / ``guidance`` arguments of :func:`undiffuse.sampling.sample`, refusing what the run cannot use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import torch

from undiffuse.errors import ConfigError, UserError
from undiffuse.rng import derive_seed

__all__ = [
    "TEXT_CACHE",
    "caption_templates_for",
    "CaptionTable",
    "sr_condition",
    "run_text_encoder",
    "conditioning",
    "text_encoder",
]

if TYPE_CHECKING:
    from undiffuse.model import Model

TEXT_CACHE = "text_embeddings.safetensors"
_GENERIC = ("{}", "a {}", "a photo of a {}", "an image of a {}", "a picture of a {}", "a small {}")


def _is_fashion(class_names: Optional[Sequence[str]]) -> bool:
    from undiffuse.text import FASHION_MNIST_CLASSES

    return class_names is not None and tuple(class_names) == FASHION_MNIST_CLASSES


def caption_templates_for(info, split: str = "train") -> dict[int, tuple[str, ...]]:
    """Class id → phrasings for labelled data ``info`` (a :class:`~undiffuse.build.DataInfo`): the
    Fashion-MNIST captions of :mod:`undiffuse.text`, else generic templates from the class names."""
    from undiffuse.text import caption_templates

    if not info.num_classes:
        raise ConfigError(f"model.text_cond needs labelled data to caption, and {info.name} has none — "
                          "set model.text_cond=false")  # fmt: skip
    if _is_fashion(info.class_names):
        return caption_templates(split)
    names = info.class_names or tuple(str(k) for k in range(info.num_classes))
    if split != "train":
        raise ConfigError(f"held-out phrasings exist only for Fashion-MNIST, not {info.name}")
    return {k: tuple(t.format(str(n).lower()) for t in _GENERIC) for k, n in enumerate(names)}


def run_text_encoder(run_dir: Union[str, os.PathLike, None], device: str = "cpu"):
    """The frozen sentence encoder with the run directory's embedding cache (raises
    :class:`~undiffuse.text.TextEncoderUnavailable` naming the extra to install when it is absent)."""
    from undiffuse.text import TextEncoder

    return TextEncoder(device=device, cache_path=None if run_dir is None else Path(run_dir) / TEXT_CACHE)


class CaptionTable:
    """Every training caption of labelled data, embedded once: ``context`` [N, L, 384] and ``mask``
    [N, L] (padded to the longest caption), with the caption indices of each class.

    :meth:`draw` picks one caption per example keyed to (seed, step, position); :meth:`condition` gives
    the UNet kwargs for caption indices, with dropped rows set to the null condition.
    """

    def __init__(self, info, encoder, device: Union[str, torch.device] = "cpu", save: bool = True) -> None:
        templates = caption_templates_for(info, "train")
        self.captions: list[str] = [c for k in sorted(templates) for c in templates[k]]
        counts = [len(templates[k]) for k in sorted(templates)]
        self.counts = torch.tensor(counts, dtype=torch.long)  # [K]
        self.offsets = torch.cumsum(torch.tensor([0] + counts[:-1]), 0)  # [K]
        encoder.precompute(self.captions, save=save and getattr(encoder, "cache_path", None) is not None)
        context, mask = encoder.tokens(self.captions)
        self.context, self.mask = context.to(device), mask.to(device)

    def __len__(self) -> int:
        return len(self.captions)

    def draw(self, seed: int, step: int, labels: torch.Tensor, stream: str = "caption") -> torch.Tensor:
        """Caption indices [B] for the global batch of ``step`` with class ``labels`` [B]: example j takes
        phrasing ⌊u_j·n_class⌋ of its class with u from (seed, stream, step) — independent of ranks."""
        g = torch.Generator().manual_seed(derive_seed(seed, stream, step))
        u = torch.rand(len(labels), generator=g, dtype=torch.float64)
        y = labels.detach().long().cpu()
        n = self.counts[y]
        return self.offsets[y] + (u * n).long().clamp(max=n - 1)  # fmt: skip

    def condition(self, ids: torch.Tensor, drop: Optional[torch.Tensor] = None) -> dict:
        """``context`` [B, L, 384] and ``context_mask`` [B, L] of caption ``ids``; rows with ``drop``
        True get zero context and an all-False mask (the null condition)."""
        ids = ids.to(self.context.device)
        context, mask = self.context[ids], self.mask[ids]
        if drop is not None:
            keep = ~drop.to(self.context.device).bool()
            context = context * keep[:, None, None].to(context.dtype)
            mask = mask & keep[:, None]
        return {"context": context, "context_mask": mask}


def sr_condition(x0: torch.Tensor, sr_from: int, size: Optional[int] = None) -> torch.Tensor:
    """SR3's ``x_cond``: ``x0`` [B, C, H, W] area-downsampled to sr_from × sr_from and upsampled
    bilinearly back to H × W (or ``size``)."""
    from undiffuse.editing import downsample, upsample_condition

    return upsample_condition(downsample(x0, sr_from), size or x0.shape[-1])


# --- at sampling time -------------------------------------------------------------------------------

_ENCODERS: dict = {}


def text_encoder(model: "Model"):
    """The frozen sentence encoder for ``model``'s prompts, with its run's embedding cache (loaded once
    per run directory; raises TextEncoderUnavailable naming the extra when the package is absent)."""
    key = str(model.run_dir)
    if key not in _ENCODERS:
        enc = run_text_encoder(model.run_dir)
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


def _load_lowres(model: "Model", lowres: Any, n: int) -> torch.Tensor:
    """A low-resolution input (a tensor [B, C, h, w] in [-1, 1] or an image path) at sr_from² → x_cond
    [n, C, H, W] on the model's device; a larger image is first area-downsampled to sr_from."""
    from undiffuse.editing import downsample, upsample_condition

    s = model.config.model.sr_from
    c, h, _ = model.data.shape
    if isinstance(lowres, (str, os.PathLike)):
        from undiffuse.data.images import read_image

        lowres = read_image(lowres, c)[0]  # full bit depth
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


def _clip_mel(model: "Model", clip: Any, n: int) -> torch.Tensor:
    """A vocoder's condition: the log-mel [n, M, frames] of a clip (waveforms [B, L] in [-1, 1] or a WAV/FLAC path,
    prepared like the training clips)."""
    from undiffuse.data.audio import SECONDS, prepare, read_audio, vocoder_condition

    rate = model.data.extra["audio"]["rate"]
    if isinstance(clip, (str, os.PathLike)):
        x, r = read_audio(clip)
        clip = prepare(x, r, rate, int(rate * SECONDS))
    x = torch.as_tensor(clip, dtype=torch.float32)
    x = x[None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] != model.data.shape[0]:
        raise UserError(f"a clip of shape {tuple(x.shape)} does not fit: need [B, {model.data.shape[0]}] samples")
    if len(x) not in (1, n):
        raise UserError(f"{len(x)} clips for {n} samples — give one, or one per sample")
    return vocoder_condition(x.expand(n, -1), rate).to(model.device)


def conditioning(
    model: "Model", n: int, class_label: Any = None, prompt: Any = None, guidance: Optional[float] = None,
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
    vocoder = bool(getattr(m, "mel_cond", False))
    if lowres is not None and not (sr or vocoder):
        raise UserError("this run is not a super-resolution model (model.sr_from) — drop the low-res input")
    if vocoder and lowres is None:
        raise UserError("this run is a diffusion vocoder — pass the clip whose mel spectrogram to vocode (--lowres CLIP.wav)")
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
    if vocoder:
        cond["mel"] = _clip_mel(model, lowres, n)
    if guidance is not None and not ("class_labels" in cond or "context" in cond):
        raise UserError("--guidance needs a condition to guide: a class-conditional run, or --prompt for a text run")
    if not cond:
        return {}
    out: dict = {"cond": cond}
    if guidance is not None:
        out["guidance"] = float(guidance)
    return out
