"""Image datasets as float32 tensors in [-1, 1] shaped [N, C, H, W], and the uint8 view of them.

8-bit pixels u ∈ {0, …, 255} map to x = u/127.5 − 1, the data scaling of Ho et al. (2020, §3.3), so
the discretized decoder's bins have width 2/255 and ``to_uint8(from_uint8(u)) == u`` exactly.

Sources (nothing is downloaded):
- Fashion-MNIST (Xiao et al. 2017, MIT licence): the original IDX ``.gz`` files, from Debian's
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``) or any directory holding them.
- 8×8 digits (UCI optical digits, via ``sklearn.datasets.load_digits``, CC BY 4.0): 17 grey levels.
- Any folder of PNG/JPEG files.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image

from undiffuse.data.errors import DataError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "IMAGE_EXTENSIONS",
    "from_uint8",
    "list_images",
    "load_digits",
    "load_fashion_mnist",
    "load_folder",
    "make_grid",
    "open_image",
    "save_image_grid",
    "to_uint8",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip
DIGITS_TEST_SIZE = 297  # the last 297 of sklearn's 1,797 digits are the test split


# --------------------------------------------------------------------------------------------- uint8


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float [N, C, H, W] → uint8 [N, H, W, C], u = round((x + 1)·127.5), clipped to 0..255."""
    u = ((x.detach().float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return u.permute(0, 2, 3, 1).contiguous()


def from_uint8(u: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
    """uint8 [N, H, W, C] (or [N, H, W] for grey) → float32 [N, C, H, W] in [-1, 1], x = u/127.5 − 1."""
    u = torch.as_tensor(np.asarray(u) if not isinstance(u, torch.Tensor) else u)
    if u.ndim == 3:
        u = u[..., None]
    return (u.permute(0, 3, 1, 2).float() / 127.5 - 1).contiguous()


def make_grid(x: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: int = 0) -> Image.Image:
    """Tile [N, C, H, W] images in [-1, 1] (C = 1 or 3) into one PIL image, ``nrow`` per row."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"make_grid expects [N, 1|3, H, W], got {tuple(x.shape)}")
    u = to_uint8(x).numpy()  # [N, H, W, C]
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
    path.parent.mkdir(parents=True, exist_ok=True)
    img = make_grid(x, nrow)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format=fmt)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
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


def _resize_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (bicubic, antialiased), then centre-crop to size×size."""
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        w, h = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return img


def list_images(path: Union[str, os.PathLike]) -> list[Path]:
    """PNG/JPEG files under ``path`` (recursive, sorted, hidden files skipped)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    return sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )  # fmt: skip


_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def open_image(f: Path, mode: Optional[str] = None) -> Image.Image:
    """Open one image, or raise DataError naming the file. With ``mode`` the pixels are decoded and
    converted; without, only the header is read (``.size``, ``.mode``)."""
    try:
        with Image.open(f) as img:
            return img.convert(mode) if mode else img
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {f}: {e}") from e


def load_folder(path: Union[str, os.PathLike], size: int, channels: Optional[int] = 3) -> torch.Tensor:
    """All PNG/JPEG images under ``path`` (recursive) as float32 [N, channels, size, size] in [-1, 1].

    Each image is converted to grey (``channels=1``) or RGB (``channels=3``; ``None``: grey if every
    file is grey), resized so its shorter side is ``size`` and centre-cropped; values stay on the
    8-bit grid.
    """
    if channels not in (1, 3, None):
        raise DataError(f"channels must be 1, 3 or None, got {channels}")
    files = list_images(path)
    if not files:
        raise DataError(f"image folder {path} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
    if channels is None:
        channels = 1 if all(open_image(f).mode in _GREY_MODES for f in files) else 3
    out = np.empty((len(files), size, size, channels), np.uint8)
    for i, f in enumerate(files):
        arr = np.asarray(_resize_crop(open_image(f, "L" if channels == 1 else "RGB"), size), np.uint8)
        out[i] = arr[..., None] if channels == 1 else arr
    return from_uint8(out)
