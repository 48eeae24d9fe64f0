"""Patch datasets: square patches cut from a few large images (``patches:PATH``, ``medical[:NAME]``).

Each image gives ``patches_per_image`` patches of ``patch_size`` × ``patch_size`` pixels at full
resolution (``patch_size`` defaults to ``image_size``, then 32; the two may not differ: patches are never
resized, so any loader that knows only the spec and the image size — ``undiffuse eval`` — cuts the same
kind of patches). The patches are a fixed set, not fresh random crops
each epoch: the top-left corner of patch k of a file is a pure function of (file, split, k)
(:func:`undiffuse.rng.derive_seed`), the same for every run and every seed. So resume stays exact, and
``sample``/``nll``/``eval`` reload exactly the patches a run trained on; asking for more patches per
image keeps the first ones.

Train and test are split by position: a centred strip of max(⌈W/10⌉, patch_size) columns of every
image is its test region and the columns left and right of it its training region, so no test patch
shares a pixel with a training patch (a folder's ``train/``/``test/`` subfolders are not used as splits
here). The strip is central because edges are often unlike the rest: of 256 retina patches (32 px), 54 %
are > 90 % black background in the right tenth, none in the centre strip, 18 % in the training columns.

``medical`` is a documented demo on the three medical images scikit-image's wheel bundles (BSD-3; the
``medical`` extra): ``retina.jpg`` (fundus photograph, 1411×1411 RGB), ``ihc.png``
(immunohistochemistry, 512×512 RGB) and ``microaneurysms.png`` (retina crop, 102×102 grey), each too
few to train on as whole images and enough as patches.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from undiffuse.data.errors import DataError
from undiffuse.data.imagefiles import DTYPES, ImageHeader, image_header, promote, read_pixels
from undiffuse.data.images import folder_layout, from_levels, list_images
from undiffuse.rng import derive_seed

__all__ = [
    "MEDICAL_IMAGES",
    "PATCHES_PER_IMAGE",
    "PATCH_SIZE",
    "TEST_FRACTION",
    "cut_patches",
    "medical_sources",
    "patch_corners",
    "patch_sources",
    "split_columns",
]

PATCH_SIZE = 32  # data.patch_size when neither it nor data.image_size is set
PATCHES_PER_IMAGE = 256  # data.patches_per_image when unset (per image and split)
TEST_FRACTION = 0.1  # the centre tenth of each image's columns (at least one patch wide) is its test region
MEDICAL_IMAGES = {"retina": "retina.jpg", "ihc": "ihc.png", "microaneurysms": "microaneurysms.png"}

Source = tuple[str, Path]  # (key, file): the key names the file in the patch positions' seed


def patch_sources(path: Union[str, os.PathLike]) -> list[Source]:
    """One image file, or every image file under a folder (keys: paths relative to it)."""
    p = Path(path)
    if p.is_file():
        return [(p.name, p)]
    files = list_images(p)
    if not files:
        raise DataError(f"no image files under {p} to cut patches from — give an image file or a folder of them")
    return [(f.relative_to(p).as_posix(), f) for f in files]


def medical_sources(name: str = "") -> list[Source]:
    """scikit-image's bundled medical images: ``name`` in :data:`MEDICAL_IMAGES`, or all three for ""."""
    names = [name] if name else list(MEDICAL_IMAGES)
    unknown = [n for n in names if n not in MEDICAL_IMAGES]
    if unknown:
        raise DataError(f"unknown medical image {unknown[0]!r} — use medical (all three) or medical:NAME with NAME in {', '.join(MEDICAL_IMAGES)}")
    spec = importlib.util.find_spec("skimage")  # locate the package's data folder without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataError("medical data are scikit-image's bundled images — pip install 'undiffuse[medical]'")
    root = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = [(MEDICAL_IMAGES[n], root / MEDICAL_IMAGES[n]) for n in names]
    missing = [str(f) for _, f in files if not f.is_file()]
    if missing:
        raise DataError(f"{missing[0]} is missing from scikit-image — reinstall it: pip install 'undiffuse[medical]'")
    return files


def split_columns(width: int, patch: int, split: str) -> list[tuple[int, int]]:
    """Column intervals [lo, hi) of an image's ``split`` region that can hold a patch: the centred strip
    of max(⌈W·TEST_FRACTION⌉, patch) columns for test, the columns left and right of it for train
    (ValueError when the training columns cannot hold a patch)."""
    strip = max(math.ceil(TEST_FRACTION * width), patch)
    lo = (width - strip) // 2
    parts = [(lo, lo + strip)] if split == "test" else [(0, lo), (lo + strip, width)]
    parts = [(a, b) for a, b in parts if b - a >= patch]
    if not parts:
        raise ValueError(f"{width} px wide is too narrow for {patch}-px patches beside a held-out strip")
    return parts


def patch_corners(key: str, split: str, n: int, height: int, parts: list[tuple[int, int]], patch: int) -> list[tuple[int, int]]:
    """(top, left) of patches k = 0..n−1 inside rows 0..height and the column intervals ``parts``: uniform
    over every position where a patch fits, drawn from derive_seed("patches", key, split, k) alone (a
    63-bit value, so the modulo bias is below 1e-13)."""
    rows = height - patch + 1
    lefts = [range(a, b - patch + 1) for a, b in parts]
    total = sum(len(r) for r in lefts)
    corners = []
    for k in range(n):
        r = derive_seed("patches", key, split, k)
        j = (r // rows) % total
        for cols in lefts:
            if j < len(cols):
                break
            j -= len(cols)
        corners.append((r % rows, cols[j]))
    return corners


def _region(f: Path, h: ImageHeader, patch: int, split: str) -> list[tuple[int, int]]:
    try:
        if h.height < patch:
            raise ValueError(f"{h.height} px high is lower than {patch}-px patches")
        return split_columns(h.width, patch, split)
    except ValueError as e:
        raise DataError(f"image {f}: {e} — lower data.patch_size") from e


def cut_patches(
    sources: list[Source], split: str, patch_size: Optional[int] = None, per_image: Optional[int] = None,
    image_size: Optional[int] = None,
) -> tuple[torch.Tensor, int]:  # fmt: skip
    """Patches of every source as float32 [len(sources)·per_image, C, P, P] in [-1, 1] (P = patch_size,
    else image_size, else :data:`PATCH_SIZE`), and their bits. Channels and bits follow
    :func:`undiffuse.data.images.folder_layout` (grey and RGB mix as RGB; 8-bit promoted where any
    image is 16-bit)."""
    if patch_size and image_size and patch_size != image_size:
        raise DataError(f"patches are cut at full resolution, never resized: data.image_size = {image_size} and "
                        f"data.patch_size = {patch_size} differ — set one of them (downscale the images to see more per patch)")
    patch, n = patch_size or image_size or PATCH_SIZE, per_image or PATCHES_PER_IMAGE
    headers = [(f, image_header(f)) for _, f in sources]
    channels, bits = folder_layout(headers)
    out = np.empty((len(sources) * n, patch, patch, channels), DTYPES[bits])
    for i, ((key, f), (_, h)) in enumerate(zip(sources, headers)):
        cols = _region(f, h, patch, split)
        a = promote(read_pixels(f, channels), bits)
        for k, (top, left) in enumerate(patch_corners(key, split, n, h.height, cols, patch)):
            out[i * n + k] = a[top : top + patch, left : left + patch]
    return from_levels(out, bits), bits
