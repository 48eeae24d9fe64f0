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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from undiffuse.errors import ConfigError
from undiffuse.rng import derive_seed

__all__ = [
    "TEXT_CACHE",
    "caption_templates_for",
    "CaptionTable",
    "sr_condition",
    "run_text_encoder",
]

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
