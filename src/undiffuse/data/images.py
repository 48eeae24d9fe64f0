"""Image datasets as float32 tensors in [-1, 1] shaped [N, C, H, W], and the uint8 view of them.

Pixels of b bits, u ∈ {0, …, 2^b − 1}, map to x = u/((2^b − 1)/2) − 1 (:func:`from_levels`). For 8 bits
that is x = u/127.5 − 1, the data scaling of Ho et al. (2020, §3.3), so the discretized decoder's bins
have width 2/255 and ``to_uint8(from_uint8(u)) == u`` exactly; 16-bit pixels map by their full range,
x = u/32767.5 − 1, and an 8-bit value promoted to 16 bits (u·257) keeps its x exactly.

Sources (nothing is downloaded):
- Fashion-MNIST (Xiao et al. 2017, MIT licence): the original IDX ``.gz`` files, from Debian's
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``) or any directory holding them.
- 8×8 digits (UCI optical digits, via ``sklearn.datasets.load_digits``, CC BY 4.0): 17 grey levels.
- Any folder of image files (:func:`read_folder`): PNG/JPEG/TIFF (8-bit grey or RGB, 16-bit grey,
  multi-page), ``.npy`` arrays and DICOM files, read by :mod:`undiffuse.data.imagefiles`.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from undiffuse.data.errors import DataError
from undiffuse.data.imagefiles import (
    DTYPES,
    GREY_MODES,
    IMAGE_EXTENSIONS,
    ImageHeader,
    image_header,
    open_image,
    promote,
    read_pixels,
)
from undiffuse.io import atomic_path

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "GREY_MODES",
    "IMAGE_EXTENSIONS",
    "display_channels",
    "fit_pixels",
    "folder_layout",
    "from_levels",
    "from_uint8",
    "list_images",
    "load_digits",
    "load_fashion_mnist",
    "read_image",
    "to_levels",
    "load_folder",
    "make_grid",
    "open_image",
    "read_folder",
    "resize_crop",
    "save_image_grid",
    "to_uint8",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip
DIGITS_TEST_SIZE = 297  # the last 297 of sklearn's 1,797 digits are the test split


# --------------------------------------------------------------------------------------------- levels


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float [N, C, H, W] → uint8 [N, H, W, C], u = round((x + 1)·127.5), clipped to 0..255."""
    u = ((x.detach().float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return u.permute(0, 2, 3, 1).contiguous()


def to_levels(x: torch.Tensor, bits: int = 8) -> np.ndarray:
    """[-1, 1] float [N, C, H, W] → ``bits``-bit levels [N, H, W, C] (uint8, or uint16 for 16 bits),
    u = round((x + 1)·(2^bits − 1)/2) clipped: the inverse of :func:`from_levels`."""
    if bits == 8:
        return to_uint8(x).numpy()
    top = 2**bits - 1
    u = ((x.detach().double() + 1) * (top / 2)).round_().clamp_(0, top)
    return u.permute(0, 2, 3, 1).numpy().astype(DTYPES[bits])


def from_levels(u: Union[torch.Tensor, np.ndarray], bits: int = 8) -> torch.Tensor:
    """Unsigned ``bits``-bit pixels [N, H, W, C] (or [N, H, W] for grey) → float32 [N, C, H, W] in
    [-1, 1], x = u/((2^bits − 1)/2) − 1: u/127.5 − 1 for 8 bits, u/32767.5 − 1 for 16."""
    t = u.float() if isinstance(u, torch.Tensor) else torch.from_numpy(np.asarray(u, dtype=np.float32))
    if t.ndim == 3:
        t = t[..., None]
    return (t.permute(0, 3, 1, 2) / ((2**bits - 1) / 2) - 1).contiguous()


def from_uint8(u: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
    """uint8 [N, H, W, C] (or [N, H, W] for grey) → float32 [N, C, H, W] in [-1, 1], x = u/127.5 − 1."""
    return from_levels(u, 8)


def display_channels(x: torch.Tensor) -> torch.Tensor:
    """The channels an image file shows of [N, C, H, W] images: all of them for C = 1 or 3; else the
    first three as RGB (C > 3) or the first as grey (C = 2). ``.npy`` outputs keep every channel."""
    c = x.shape[1]
    return x if c in (1, 3) else x[:, : 3 if c > 3 else 1]


def make_grid(x: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: int = 0) -> Image.Image:
    """Tile [N, C, H, W] images in [-1, 1] into one PIL image, ``nrow`` per row; C ∉ {1, 3} shows
    :func:`display_channels`."""
    if x.ndim != 4:
        raise ValueError(f"make_grid expects [N, C, H, W], got {tuple(x.shape)}")
    u = to_uint8(display_channels(x)).numpy()  # [N, H, W, 1|3]
    n, h, w, c = u.shape
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    grid = np.full((nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), pad_value, np.uint8)
    for i in range(n):
        r, k = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[top : top + h, left : left + w] = u[i]
    return Image.fromarray(grid[..., 0] if c == 1 else grid, mode="L" if c == 1 else "RGB")


def save_image_grid(x: torch.Tensor, path: Union[str, os.PathLike], nrow: int = 8) -> Path:
    """Write :func:`make_grid` to ``path`` atomically (temp file in the same directory, then
    ``os.replace``), so a reader never sees a half-written image. The format follows the suffix."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown image suffix {path.suffix!r} for {path}")
    img = make_grid(x, nrow)
    with atomic_path(path) as tmp:  # ``.NAME.XXXXXXXX.tmp``, mode 0666 & ~umask, cleared on a run's next start
        img.save(tmp, format=fmt)
    return path


# ------------------------------------------------------------------------------------ Fashion-MNIST


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}: use 'train' or 'test'")


def _read_idx(directory: Path, stem: str, magic: int, ndim: int) -> np.ndarray:
    """Read one IDX file (``stem.gz`` or ``stem``): big-endian magic, ``ndim`` sizes, then uint8 data."""
    path = directory / f"{stem}.gz"
    if not path.exists():
        path = directory / stem
    if not path.exists():
        raise DataError(f"{directory / (stem + '.gz')} is missing (Fashion-MNIST IDX file)")
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is corrupt or truncated ({e}); reinstall dataset-fashion-mnist") from e
    header = 4 + 4 * ndim
    if len(raw) < header or struct.unpack(">I", raw[:4])[0] != magic:
        raise DataError(f"{path} is not an IDX file with magic {magic}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {len(raw) - header} bytes of data for shape {dims}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()


def load_fashion_mnist(
    split: str = "train", root: Optional[Union[str, os.PathLike]] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST (Xiao et al. 2017): x float32 [N, 1, 28, 28] in [-1, 1], y int64 [N].

    60,000 train / 10,000 test images, 10 classes (:data:`FASHION_MNIST_CLASSES`).
    ``root`` defaults to :data:`FASHION_MNIST_DIR`.
    """
    _check_split(split)
    directory = Path(root if root is not None else FASHION_MNIST_DIR)
    if not directory.is_dir():
        raise DataError(
            f"Fashion-MNIST directory {directory} not found: `apt-get install dataset-fashion-mnist`, "
            "or pass fashion-mnist:DIR with the IDX .gz files"
        )
    images_stem, labels_stem = _IDX_FILES[split]
    images = _read_idx(directory, images_stem, 2051, 3)  # [N, 28, 28]
    labels = _read_idx(directory, labels_stem, 2049, 1)  # [N]
    if len(images) != len(labels):
        raise DataError(f"{directory}: {len(images)} images but {len(labels)} labels for split {split!r}")
    return from_uint8(images), torch.from_numpy(labels.astype(np.int64))


# ------------------------------------------------------------------------------------------- digits


def load_digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The 8×8 digits of scikit-learn: x float32 [N, 1, 8, 8] in [-1, 1], y int64 [N].

    Pixels have 17 grey levels v ∈ {0, …, 16}, mapped to x = v/8 − 1 (so not 8-bit data). The split is
    deterministic: the first 1,500 images train, the last 297 test.
    """
    _check_split(split)
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 8.0 - 1.0)[:, None]  # [1797, 1, 8, 8]
    y = torch.from_numpy(bunch.target.astype(np.int64))
    cut = len(x) - DIGITS_TEST_SIZE
    return (x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:])


# ------------------------------------------------------------------------------------------- folder


def resize_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (bicubic, antialiased), then centre-crop to size×size."""
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        w, h = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return img


def fit_pixels(a: np.ndarray, size: int) -> np.ndarray:
    """:func:`resize_crop` uint8/uint16 pixels [H, W, C] to [size, size, C], channel by channel (8-bit
    in Pillow mode L, which equals resizing RGB; 16-bit in mode F, rounded back to levels)."""
    if a.shape[:2] == (size, size):
        return a
    if a.dtype == np.uint8:
        chans = [np.asarray(resize_crop(Image.fromarray(np.ascontiguousarray(a[..., k])), size)) for k in range(a.shape[-1])]
        return np.stack(chans, axis=-1)
    chans = [np.asarray(resize_crop(Image.fromarray(a[..., k].astype(np.float32)), size)) for k in range(a.shape[-1])]
    return np.rint(np.clip(np.stack(chans, axis=-1), 0, 65535)).astype(np.uint16)


def list_images(path: Union[str, os.PathLike]) -> list[Path]:
    """Image files (:data:`IMAGE_EXTENSIONS`) under ``path`` (recursive, sorted, hidden files skipped)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    return sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )  # fmt: skip


def folder_layout(headers: Sequence[tuple[Path, ImageHeader]], channels: Optional[int] = None) -> tuple[int, int]:
    """(channels, bits) of a set of files read together.

    Bits: 16 if any file is 16-bit (8-bit files are promoted, u·257, which keeps their x exactly), else 8.
    Channels: grey and RGB files mix as RGB (``channels`` = 1 or 3 forces grey or RGB); any other count
    (multi-page TIFF, ``.npy`` stacks, multi-frame DICOM) must be the same in every file, or ``channels``.
    """
    bits = max(h.bits for _, h in headers)
    counts = {h.channels for _, h in headers}
    if counts <= {1, 3} and channels in (None, 1, 3):
        return channels or max(counts), bits
    want, ref = (headers[0][1].channels, headers[0][0]) if channels is None else (channels, None)
    for f, h in headers:
        if h.channels != want:
            than = f"{ref} has {want}" if ref is not None else f"{want} were asked for"
            raise DataError(f"inconsistent channels: {f} has {h.channels} but {than} — give every image the same channels")
    return want, bits


def read_folder(path: Union[str, os.PathLike], size: int, channels: Optional[int] = None) -> tuple[torch.Tensor, int]:
    """All image files under ``path`` (recursive) as float32 [N, C, size, size] in [-1, 1], and their bits.

    C and bits follow :func:`folder_layout`; each image is resized so its shorter side is ``size`` and
    centre-cropped (:func:`fit_pixels`), 8-bit values staying on the 8-bit grid.
    """
    files = list_images(path)
    if not files:
        raise DataError(f"image folder {path} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
    channels, bits = folder_layout([(f, image_header(f)) for f in files], channels)
    out = np.empty((len(files), size, size, channels), DTYPES[bits])
    for i, f in enumerate(files):
        out[i] = promote(fit_pixels(read_pixels(f, channels), size), bits)
    return from_levels(out, bits), bits


def read_image(path: Union[str, os.PathLike], channels: Optional[int] = None,
               size: Optional[int] = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """One image file at its full bit depth (8- or 16-bit levels, any format of :func:`read_folder`) as
    float32 [1, C, H, W] in [-1, 1], optionally converted to ``channels`` and resized + centre-cropped to
    ``size`` (:func:`fit_pixels`), and the file's own (width, height)."""
    a = read_pixels(Path(path), channels)
    own = (a.shape[1], a.shape[0])
    if size is not None:
        a = fit_pixels(a, size)
    return from_levels(a[None], 16 if a.dtype == np.uint16 else 8), own


def load_folder(path: Union[str, os.PathLike], size: int, channels: Optional[int] = None) -> torch.Tensor:
    """The images of :func:`read_folder` (float32 [N, C, size, size] in [-1, 1]) without their bits."""
    return read_folder(path, size, channels)[0]
