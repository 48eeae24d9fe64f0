"""Datasets as tensors: images in [-1, 1] shaped [N, C, H, W]; 2-D toys in data units [N, 2].

``load_dataset(spec, split)`` is the one entry point; ``spec`` is one of

| spec | data | classes | 8-bit |
|---|---|---|---|
| ``fashion-mnist`` / ``fashion-mnist:DIR`` | 60k/10k 28×28 grey (Xiao et al. 2017, MIT) | 10 | yes |
| ``digits`` | 1,500/297 8×8 grey, 17 levels (scikit-learn, CC BY 4.0) | 10 | no |
| ``folder:PATH`` | image files under PATH (or PATH/train, PATH/test), resized + cropped: PNG/JPEG/TIFF incl. 16-bit grey and multi-page, ``.npy`` [C, H, W], DICOM | – | if all 8-bit |
| ``patches:PATH`` | ``data.patches_per_image`` fixed patches of ``data.patch_size`` px per image (a file or a folder); test = a centred strip of each image | – | if all 8-bit |
| ``medical`` / ``medical:NAME`` | patches of scikit-image's bundled retina.jpg, ihc.png, microaneurysms.png (NAME: retina, ihc, microaneurysms) | – | yes |
| ``toy:NAME`` | 2-D toy, NAME in 25gaussians, 8gaussians, moons, swissroll | mixtures: K | – |

Nothing is downloaded. ``discrete_8bit`` says the values lie on the 256-level grid u/127.5 − 1, which
the discretized decoder of Ho et al. (2020) and bits/dim assume; the digits have 17 levels, so False.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F

from undiffuse.data.errors import DataError
from undiffuse.data.images import (
    FASHION_MNIST_CLASSES,
    from_uint8,
    image_header,
    list_images,
    load_digits,
    load_fashion_mnist,
    load_folder,
    make_grid,
    read_folder,
    save_image_grid,
    to_uint8,
)
from undiffuse.data.patches import cut_patches, medical_sources, patch_sources
from undiffuse.data.toys import TOYS, load_toy, sample_toy, toy_modes

__all__ = [
    "DATASET_SPECS",
    "DataError",
    "Dataset",
    "FASHION_MNIST_CLASSES",
    "TOYS",
    "from_uint8",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_folder",
    "load_toy",
    "make_grid",
    "resize_images",
    "sample_toy",
    "save_image_grid",
    "to_uint8",
    "toy_modes",
]

DATASET_SPECS = ("fashion-mnist", "fashion-mnist:DIR", "digits", "folder:PATH", "patches:PATH", "medical[:NAME]",
                 *(f"toy:{name}" for name in sorted(TOYS)))  # fmt: skip


@dataclass
class Dataset:
    """A whole dataset in memory.

    x: float32 [N, C, H, W] in [-1, 1] (kind "image") or [N, D] in data units (kind "vector").
    y: int64 [N] class labels, or None.
    discrete_8bit: True when x lies on the 8-bit grid u/127.5 − 1 (u ∈ 0..255).
    """

    x: torch.Tensor
    y: Optional[torch.Tensor]
    kind: Literal["image", "vector"]
    name: str
    num_classes: Optional[int] = None
    class_names: Optional[list[str]] = None
    discrete_8bit: bool = False

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. (1, 28, 28) or (2,)."""
        return tuple(self.x.shape[1:])


def resize_images(x: torch.Tensor, size: int, quantize: bool = False) -> torch.Tensor:
    """Resize square-or-not [N, C, H, W] images so the shorter side is ``size`` and centre-crop to
    size×size (bilinear, antialiased); ``quantize`` snaps the result back onto the 8-bit grid."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top : top + size, left : left + size].clamp(-1, 1)
    return from_uint8(to_uint8(x)) if quantize else x.contiguous()


def _folder(path: str, split: str, image_size: Optional[int]) -> Dataset:
    root = Path(path)
    if (root / "train").is_dir() and (root / "test").is_dir():
        root = root / split  # a folder with train/ and test/ subfolders is split by them
    # otherwise both splits are the whole folder
    if image_size is None:  # the data's own size: the shorter side of the first image
        files = list_images(root)
        if not files:
            raise DataError(f"image folder {root} holds no image files")
        image_size = min(image_header(files[0]).size)
    x, bits = read_folder(root, image_size)
    return Dataset(x, None, "image", f"folder:{path}", discrete_8bit=bits == 8)


def load_dataset(
    spec: str, split: str = "train", image_size: Optional[int] = None, *,
    patch_size: Optional[int] = None, patches_per_image: Optional[int] = None,
) -> Dataset:  # fmt: skip
    """Load a dataset by spec (see the module table).

    ``image_size`` resizes image data (shorter side, then centre crop); None keeps the data's own size
    (for ``folder:``, the shorter side of the first image; patches are never resized). A folder is
    grey if every file is grey, else RGB; other channel counts must agree across files; it is 16-bit
    if any file is (:func:`undiffuse.data.images.folder_layout`); with ``train/`` and ``test/``
    subfolders those are the splits, else both splits are the whole folder. ``patch_size`` and
    ``patches_per_image`` (None: ``image_size`` or 32, and 256) apply to ``patches:`` and ``medical`` only
    (:mod:`undiffuse.data.patches`). Toys ignore ``image_size``.
    """
    kind, _, arg = spec.partition(":")
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}: use 'train' or 'test'")
    if kind in ("patches", "medical") and (arg or kind == "medical"):
        sources = patch_sources(arg) if kind == "patches" else medical_sources(arg)
        x, bits = cut_patches(sources, split, patch_size, patches_per_image, image_size)
        return Dataset(x, None, "image", spec, discrete_8bit=bits == 8)
    if patch_size is not None or patches_per_image is not None:
        raise DataError(f"data.patch_size and data.patches_per_image apply to patches:PATH and medical data, not {spec} — unset them")
    if kind == "fashion-mnist":
        x, y = load_fashion_mnist(split, root=arg or None)
        if image_size is not None:
            x = resize_images(x, image_size, quantize=True)
        return Dataset(x, y, "image", spec, 10, list(FASHION_MNIST_CLASSES), discrete_8bit=True)
    if kind == "digits" and not arg:
        x, y = load_digits(split)
        if image_size is not None:
            x = resize_images(x, image_size)
        return Dataset(x, y, "image", spec, 10, [str(k) for k in range(10)], discrete_8bit=False)
    if kind == "folder" and arg:
        return _folder(arg, split, image_size)
    if kind == "toy" and arg in TOYS:
        x, y = load_toy(arg, split)
        num_classes = None if y is None else int(len(toy_modes(arg)[0]) if arg != "moons" else 2)
        return Dataset(x, y, "vector", spec, num_classes)
    raise DataError(f"unknown dataset {spec!r}; valid: {', '.join(DATASET_SPECS)}")
