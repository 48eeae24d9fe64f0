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
| ``series:NAME`` / ``series:PATH.csv`` | windows of S&P 500 / NASDAQ log-returns (arch), US macro data (statsmodels) or a CSV (:mod:`undiffuse.data.series`) | – | – |
| ``text:kjv`` / ``text:file:PATH`` | windows of ``data.window`` (256) characters of the King James Bible (Debian bible-kjv) or a UTF-8 file (:mod:`undiffuse.data.textdata`) | – | – |
| ``audio:spoken-digits`` / ``audio:drums`` / ``audio:folder:PATH`` | 1 s mono clips at ``data.sample_rate`` (16 kHz): espeak-ng digits split by voice, sonic-pi drum one-shots, WAV/FLAC files (:mod:`undiffuse.data.audio`); ``mel:…`` the same as 32×32 log-mel images | digits: 10 | – |
| ``table:NAME`` / ``table:PATH.csv`` | rows of scikit-learn's breast-cancer, diabetes, wine or a CSV (:mod:`undiffuse.data.tablefiles`) | a categorical ``data.target`` | – |

Nothing is downloaded. ``discrete_8bit`` says the values lie on the 256-level grid u/127.5 − 1, which
the discretized decoder of Ho et al. (2020) and bits/dim assume; the digits have 17 levels, so False.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

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
    "SOURCES",
    "Source",
    "source_of",
    "spec_kind",
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

@dataclass
class Dataset:
    """A whole dataset in memory.

    x: float32 [N, C, H, W] in [-1, 1] (kind "image") or [N, D] in data units (kind "vector").
    y: int64 [N] class labels, or None.
    discrete_8bit: True when x lies on the 8-bit grid u/127.5 − 1 (u ∈ 0..255).
    """

    x: torch.Tensor
    y: Optional[torch.Tensor]
    kind: str  # a key of undiffuse.data.kinds.KINDS: "image", "vector", …
    name: str
    num_classes: Optional[int] = None
    class_names: Optional[list[str]] = None
    discrete_8bit: bool = False
    extra: dict = field(default_factory=dict)  # what a kind keeps beside the tensors (a table's schema)

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


def _fashion_mnist(arg: str, split: str, image_size: Optional[int] = None) -> Dataset:
    x, y = load_fashion_mnist(split, root=arg or None)
    if image_size is not None:
        x = resize_images(x, image_size, quantize=True)
    return Dataset(x, y, "image", f"fashion-mnist{':' + arg if arg else ''}", 10, list(FASHION_MNIST_CLASSES),
                   discrete_8bit=True)  # fmt: skip


def _digits(arg: str, split: str, image_size: Optional[int] = None) -> Dataset:
    x, y = load_digits(split)
    if image_size is not None:
        x = resize_images(x, image_size)
    return Dataset(x, y, "image", "digits", 10, [str(k) for k in range(10)], discrete_8bit=False)


def _bits_extra(bits: int) -> dict:
    """What a run keeps of its images' bit depth: ``{"bits": 16}`` for 16-bit data (its samples are then
    written as 16-bit levels), nothing for 8-bit."""
    return {"bits": bits} if bits != 8 else {}


def _folder(path: str, split: str, image_size: Optional[int] = None) -> Dataset:
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
    return Dataset(x, None, "image", f"folder:{path}", discrete_8bit=bits == 8, extra=_bits_extra(bits))


def _patches(prefix: str):
    def load(arg: str, split: str, image_size: Optional[int] = None, patch_size: Optional[int] = None,
             patches_per_image: Optional[int] = None) -> Dataset:  # fmt: skip
        sources = patch_sources(arg) if prefix == "patches" else medical_sources(arg)
        x, bits = cut_patches(sources, split, patch_size, patches_per_image, image_size)
        return Dataset(x, None, "image", f"{prefix}{':' + arg if arg else ''}", discrete_8bit=bits == 8,
                       extra=_bits_extra(bits))

    return load


def _table(arg: str, split: str, target: Optional[str] = None, categorical: Optional[tuple] = None) -> Dataset:
    from undiffuse.data.tablefiles import load_table

    return load_table(arg, split, target, categorical)


def _series(arg: str, split: str, window: Optional[int] = None) -> Dataset:
    from undiffuse.data.series import load_series

    return load_series(arg, split, window)


def _text(arg: str, split: str, window: Optional[int] = None) -> Dataset:
    from undiffuse.data.textdata import load_text

    return load_text(arg, split, window)


def _audio(mel: bool):
    def load(arg: str, split: str, sample_rate: Optional[int] = None) -> Dataset:
        from undiffuse.data.audio import load_audio

        return load_audio(arg, split, sample_rate, mel=mel)

    return load


def _toy(arg: str, split: str) -> Dataset:
    x, y = load_toy(arg, split)
    num_classes = None if y is None else int(len(toy_modes(arg)[0]) if arg != "moons" else 2)
    return Dataset(x, y, "vector", f"toy:{arg}", num_classes)


@dataclass(frozen=True)
class Source:
    """A family of datasets behind one spec prefix: the form users write, the kind of data it gives
    (a key of :data:`undiffuse.data.kinds.KINDS`), whether the part after ":" is required / optional /
    absent, and ``load(arg, split, **options)`` — whose keyword options are the ones it accepts."""

    form: str
    kind: str
    load: Callable[..., Dataset]
    arg: str = "none"  # "none" | "optional" | "required"
    choices: tuple[str, ...] = ()  # allowed args, if a closed set

    @property
    def options(self) -> tuple[str, ...]:
        params = list(inspect.signature(self.load).parameters)[2:]
        return tuple(params)


#: The registry of datasets: a new source (audio, text, tables…) is one entry here.
SOURCES: dict[str, Source] = {
    "fashion-mnist": Source("fashion-mnist[:DIR]", "image", _fashion_mnist, "optional"),
    "digits": Source("digits", "image", _digits),
    "folder": Source("folder:PATH", "image", _folder, "required"),
    "patches": Source("patches:PATH", "image", _patches("patches"), "required"),
    "medical": Source("medical[:NAME]", "image", _patches("medical"), "optional"),
    "toy": Source("toy:NAME", "vector", _toy, "required", tuple(sorted(TOYS))),
    "table": Source("table:breast-cancer|diabetes|wine|PATH.csv", "table", _table, "required"),
    "series": Source("series:sp500|nasdaq|macro|PATH.csv", "series", _series, "required"),
    "audio": Source("audio:spoken-digits|drums|folder:PATH", "audio", _audio(False), "required"),
    "mel": Source("mel:spoken-digits|drums|folder:PATH", "mel", _audio(True), "required"),
    "text": Source("text:kjv|file:PATH", "text", _text, "required"),
}
DATASET_SPECS = tuple(s.form for s in SOURCES.values() if not s.choices) + tuple(
    f"{p}:{c}" for p, s in SOURCES.items() for c in s.choices)


def source_of(spec: str) -> tuple[Source, str]:
    """The :class:`Source` of a dataset ``spec`` and its argument (DataError naming the valid specs)."""
    prefix, colon, arg = spec.partition(":")
    src = SOURCES.get(prefix)
    ok = src is not None and {"none": not colon, "optional": True, "required": bool(arg)}[src.arg]
    if not ok or (src.choices and arg not in src.choices):
        raise DataError(f"unknown dataset {spec!r}; valid: {', '.join(DATASET_SPECS)}")
    return src, arg


def spec_kind(spec: str) -> str:
    """The kind of data (``"image"``, ``"vector"``, …) that ``spec`` loads, without loading it."""
    return source_of(spec)[0].kind


def load_dataset(spec: str, split: str = "train", image_size: Optional[int] = None, **options: Any) -> Dataset:
    """Load a dataset by spec (see the module table and :data:`SOURCES`).

    ``image_size`` resizes image data (shorter side, then centre crop); None keeps the data's own size
    (for ``folder:``, the shorter side of the first image; patches are never resized). A folder is
    grey if every file is grey, else RGB; other channel counts must agree across files; it is 16-bit
    if any file is (:func:`undiffuse.data.images.folder_layout`); with ``train/`` and ``test/``
    subfolders those are the splits, else both splits are the whole folder. ``options`` (e.g.
    ``patch_size``, ``patches_per_image`` for ``patches:`` and ``medical``,
    :mod:`undiffuse.data.patches`) go to the sources that declare them; a set option that the source
    does not take is refused. Toys ignore ``image_size``.
    """
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}: use 'train' or 'test'")
    src, arg = source_of(spec)
    given = {k: v for k, v in {"image_size": image_size, **options}.items() if v is not None}
    foreign = sorted(k for k in given if k not in src.options and k != "image_size")
    if foreign:
        takers = [s.form for s in SOURCES.values() if set(foreign) <= set(s.options)] or ["no dataset"]
        raise DataError(f"{', '.join('data.' + k for k in foreign)} not for {spec} (only for {', '.join(takers)}) "
                        "— unset it")  # fmt: skip
    return src.load(arg, split, **{k: v for k, v in given.items() if k in src.options})
