"""Image files as pixel levels: what a file holds (:class:`ImageHeader`, read without decoding) and its
pixels as uint8 or uint16 [H, W, C] (:func:`read_pixels`), for every format ``folder:`` and ``patches:`` read.

| format | channels | bits |
|---|---|---|
| PNG / JPEG / TIFF, grey or colour (Pillow) | 1 (grey modes) or 3 (any other mode → RGB, alpha dropped) | 8 |
| 16-bit grey PNG / TIFF (Pillow modes I;16, I;16B, I, F) | 1 | 16 (integers 0..65535, else refused) |
| multi-page TIFF | one grey page per channel | 16 if any page is |
| ``.npy`` [H, W] or [C, H, W] (channels first, no pickle) | 1 or C | 8 for uint8, else 16 (integers 0..65535) |
| DICOM ``.dcm`` / ``.dicom`` (``pydicom``, the ``dicom`` extra) | 1, frames, or 3 (colour) | 8 if BitsStored ≤ 8, else 16 |

Pillow reads 16-bit colour PNG/TIFF as 8-bit RGB. Nothing here scales to [-1, 1]: that is
:func:`undiffuse.data.images.from_levels`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from undiffuse.data.errors import DataError

__all__ = [
    "DICOM_EXTENSIONS",
    "DTYPES",
    "GREY_MODES",
    "IMAGE_EXTENSIONS",
    "ImageHeader",
    "WIDE_MODES",
    "image_header",
    "open_image",
    "promote",
    "read_pixels",
]

DICOM_EXTENSIONS = (".dcm", ".dicom")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy", *DICOM_EXTENSIONS)
#: Pillow modes of one grey channel; the WIDE_MODES among them hold more than 8 bits (read as 16-bit).
WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
GREY_MODES = frozenset({"1", "L", "LA", "La"}) | WIDE_MODES
DTYPES = {8: np.uint8, 16: np.uint16}


@dataclass(frozen=True)
class ImageHeader:
    """What one image file holds, read without decoding its pixels: channels, bits (8 or 16), size."""

    channels: int
    bits: int
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow gives it."""
        return self.width, self.height


@contextlib.contextmanager
def _reading(f: Path) -> Iterator[None]:
    """Turn any failure to read ``f`` into a one-line DataError naming the file."""
    try:
        yield
    except (DataError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 — a file of any format can fail in many ways: each is the data's fault
        cause = " ".join(str(e).split())[:300]  # one line, whatever the decoder said
        raise DataError(f"cannot read image {f}: {cause} — replace or remove the file") from e


def open_image(f: Path, mode: Optional[str] = None) -> Image.Image:
    """Open one image, or raise DataError naming the file. With ``mode`` the pixels are decoded and
    converted; without, only the header is read (``.size``, ``.mode``)."""
    with _reading(f), Image.open(f) as img:
        return img.convert(mode) if mode else img


def image_header(f: Path) -> ImageHeader:
    """The :class:`ImageHeader` of one file (PNG/JPEG/TIFF, ``.npy``, DICOM), DataError if unreadable."""
    suffix = f.suffix.lower()
    with _reading(f):
        h = _npy_header(f) if suffix == ".npy" else _dicom_header(f) if suffix in DICOM_EXTENSIONS else _pil_header(f)
    if min(h.channels, h.width, h.height) < 1:
        raise DataError(f"image {f} is empty ({h.channels} channels, {h.width}×{h.height}) — remove it")
    return h


def read_pixels(f: Path, channels: Optional[int] = None) -> np.ndarray:
    """The pixels of one file as uint8 or uint16 [H, W, C] (8- or 16-bit levels, see the module
    docstring). ``channels`` converts grey ↔ RGB (ITU-R 601 luma, as Pillow's ``convert("L")``); any
    other mismatch with the file's own channel count is a DataError."""
    suffix = f.suffix.lower()
    with _reading(f):
        a = _npy_pixels(f) if suffix == ".npy" else _dicom_pixels(f) if suffix in DICOM_EXTENSIONS else _pil_pixels(f, channels)
    return _to_channels(a, channels, f)


def _to_channels(a: np.ndarray, channels: Optional[int], f: Path) -> np.ndarray:
    c = a.shape[-1]
    if channels is None or c == channels:
        return a
    if (c, channels) == (1, 3):
        return np.repeat(a, 3, axis=-1)
    if (c, channels) == (3, 1):
        luma = a.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.rint(luma)[..., None].astype(a.dtype)
    raise DataError(f"image {f} has {c} channels, not {channels} — give every image the same channels")


def promote(a: np.ndarray, bits: int) -> np.ndarray:
    """8-bit levels as ``bits``-bit levels: u·257 for 16 bits (the same x = u/127.5 − 1 exactly)."""
    return a.astype(np.uint16) * np.uint16(257) if bits == 16 and a.dtype == np.uint8 else a


def _wide_levels(a: np.ndarray, f: Path) -> np.ndarray:
    """Pixel values that must be integers in 0..65535 (16-bit Pillow modes, non-uint8 ``.npy``) as uint16."""
    if a.dtype.kind not in "uif":
        raise DataError(f"image {f} holds {a.dtype} values — save integer levels (uint8, or uint16 0..65535)")
    if a.dtype.kind == "f" and not (np.isfinite(a).all() and np.array_equal(a, np.rint(a))):
        raise DataError(f"image {f} holds non-integer values — save integer levels 0..65535 (a 16-bit PNG/TIFF or uint16 .npy)")
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise DataError(f"image {f} has values {a.min()}..{a.max()}, outside 0..65535 — rescale it to 16 bits")
    return a.astype(np.uint16)


def _stack_pages(pages: Sequence[np.ndarray], f: Path) -> np.ndarray:
    """Grey pages [H, W] → [H, W, pages], promoted to 16 bits if any page is 16-bit."""
    if len({p.shape for p in pages}) > 1:
        raise DataError(f"image {f} has pages of different sizes — give every page (channel) the same size")
    bits = 16 if any(p.dtype == np.uint16 for p in pages) else 8
    return np.stack([promote(p, bits) for p in pages], axis=-1)


# Pillow: PNG, JPEG, TIFF (one channel per page of a multi-page TIFF)


def _pages(img: Image.Image) -> int:
    return int(getattr(img, "n_frames", 1)) if img.format == "TIFF" else 1


def _pil_header(f: Path) -> ImageHeader:
    with Image.open(f) as img:
        n, (w, h) = _pages(img), img.size
        modes = []
        for k in range(n):
            img.seek(k)
            modes.append(img.mode)
    bits = 16 if any(m in WIDE_MODES for m in modes) else 8
    if n == 1:
        return ImageHeader(1 if modes[0] in GREY_MODES else 3, bits, w, h)
    colour = [m for m in modes if m not in GREY_MODES]
    if colour:
        raise DataError(f"image {f} is a multi-page TIFF with {colour[0]} pages — store one grey page per channel")
    return ImageHeader(n, bits, w, h)


def _grey_page(img: Image.Image, f: Path) -> np.ndarray:
    return _wide_levels(np.asarray(img), f) if img.mode in WIDE_MODES else np.asarray(img.convert("L"))


def _pil_pixels(f: Path, channels: Optional[int]) -> np.ndarray:
    with Image.open(f) as img:
        if _pages(img) == 1 and img.mode not in WIDE_MODES:  # 8-bit: Pillow converts grey ↔ RGB
            grey = channels == 1 or (channels is None and img.mode in GREY_MODES)
            a = np.asarray(img.convert("L" if grey else "RGB"))
            return a[..., None] if grey else a
        pages = []
        for k in range(_pages(img)):
            img.seek(k)
            pages.append(_grey_page(img, f))
    return _stack_pages(pages, f)


# NumPy: [H, W] or [C, H, W], channels first


def _npy_array(f: Path, mmap: bool) -> np.ndarray:
    a = np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
    if a.ndim not in (2, 3):
        raise DataError(f"{f} holds an array of shape {a.shape} — save one image as [H, W] or [C, H, W] (channels first)")
    return a


def _npy_header(f: Path) -> ImageHeader:
    a = _npy_array(f, mmap=True)
    return ImageHeader(1 if a.ndim == 2 else a.shape[0], 8 if a.dtype == np.uint8 else 16, a.shape[-1], a.shape[-2])


def _npy_pixels(f: Path) -> np.ndarray:
    a = _npy_array(f, mmap=False)
    a = np.moveaxis(a if a.ndim == 3 else a[None], 0, -1)
    return np.ascontiguousarray(a) if a.dtype == np.uint8 else _wide_levels(a, f)


# DICOM (pydicom, optional)


def _dcmread(f: Path, pixels: bool):
    try:
        import pydicom
    except ImportError:
        raise DataError(f"reading the DICOM file {f} needs pydicom — pip install 'undiffuse[dicom]'") from None
    return pydicom.dcmread(str(f), stop_before_pixels=not pixels)


def _modality_lut():
    try:
        from pydicom.pixels import apply_modality_lut  # pydicom ≥ 3
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    return apply_modality_lut


def _dicom_header(f: Path) -> ImageHeader:
    return _dicom_layout(_dcmread(f, pixels=False), f)


def _dicom_layout(ds, f: Path) -> ImageHeader:
    """The :class:`ImageHeader` of a DICOM dataset already read (with or without its pixels)."""
    frames, samples = int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("SamplesPerPixel", 1))
    if frames > 1 and samples > 1:
        raise DataError(f"DICOM file {f} has {frames} colour frames — give grey frames (one channel each) or one colour frame")
    if not 1 <= int(ds.BitsStored) <= 16:
        raise DataError(f"DICOM file {f} stores {int(ds.BitsStored)} bits per sample — only 1 to 16 are read; convert it")
    return ImageHeader(frames if samples == 1 else samples, 8 if int(ds.BitsStored) <= 8 else 16,
                       int(ds.Columns), int(ds.Rows))  # fmt: skip


def _dicom_pixels(f: Path) -> np.ndarray:
    """DICOM pixels as levels: grey frames through the modality transform (RescaleSlope/Intercept or a
    modality LUT), windowed to the transform's range over every storable value, so the full stored range
    spans 0..2^b − 1 (MONOCHROME1 inverted so that high is bright); colour scaled by the stored range."""
    ds = _dcmread(f, pixels=True)
    h = _dicom_layout(ds, f)
    b = int(ds.BitsStored)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    stored = np.arange(-(1 << (b - 1)), 1 << (b - 1)) if signed else np.arange(0, 1 << b)
    a = ds.pixel_array
    if int(ds.get("SamplesPerPixel", 1)) == 1:
        lut = _modality_lut()
        window = np.asarray(lut(stored, ds), np.float64)
        a = np.asarray(lut(a, ds), np.float64)
        a = np.moveaxis(a if a.ndim == 3 else a[None], 0, -1)  # frames → channels
    else:
        window = stored.astype(np.float64)
    lo, hi = float(window.min()), float(window.max())
    if hi <= lo:
        raise DataError(f"DICOM file {f} has a constant modality transform — check its RescaleSlope")
    u = np.clip((a - lo) / (hi - lo), 0, 1)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        u = 1 - u
    return np.rint(u * (2**h.bits - 1)).astype(DTYPES[h.bits])
