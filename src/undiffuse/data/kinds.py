"""The seam for kinds of data: what a kind implements so that samplers, trainer, CLI and evaluation
handle it unchanged.

A :class:`DataKind` says how model tensors become data again and how samples are written (``writers``,
by output type), which network and preset it trains by default, which forward-process family it
diffuses with, and which metrics evaluate it by default. Datasets declare their kind
(:class:`undiffuse.data.Dataset.kind`, saved as ``DataInfo.kind`` in every checkpoint), so a run knows
its kind forever. Images and 2-D/tabular vectors are the first two kinds; audio, text, tables and
series add one entry to :data:`KINDS` each (and, for text, the discrete ``process`` family).

Output types: a suffix (``.png``, ``.npy``, later ``.wav``, ``.txt``, ``.csv``) or ``"dir"`` (a path
ending in "/" or an existing directory: one file per sample). :func:`check_output` refuses a path
before any sampling; :func:`save_samples` writes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch

from undiffuse.data.errors import DataError
from undiffuse.io import atomic_path, commit_temp, temp_beside, write_npy

__all__ = ["DataKind", "KINDS", "PROCESSES", "kind_of", "output_type", "check_output", "save_samples", "SampleStream"]

PathLike = Union[str, os.PathLike]
#: writer(x [N, ...] model units, path, info, reference=None, nrow=None) -> path
Writer = Callable[..., Path]

#: Forward-process families: "gaussian" (x = x0 + σ·n, every sampler of undiffuse.samplers) and
#: "masked" (absorbing-state discrete diffusion for tokens; reserved for text) and "mixed" (Gaussian on the
#: numeric coordinates, multinomial on one-hot blocks: tables, TabDDPM; undiffuse.diffusion.mixed).
PROCESSES = ("gaussian", "masked", "mixed")


@dataclass(frozen=True)
class DataKind:
    """One kind of data (see the module docstring)."""

    name: str
    arch: str  # the default network of build.build_network: "unet", "mlp", …
    preset: str  # the default preset of config.PRESETS
    writers: Mapping[str, Writer] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()  # default metrics of `undiffuse eval`
    process: str = "gaussian"
    describe: str = ""

    def __post_init__(self) -> None:
        if self.process not in PROCESSES:
            raise ValueError(f"unknown process family {self.process!r}; choose one of {PROCESSES}")


# --- writers ------------------------------------------------------------------------------------------


def _bits(info: Any) -> int:
    """The bit depth of a run's images (``DataInfo.extra["bits"]``; 8 unless the data was 16-bit)."""
    return int((getattr(info, "extra", None) or {}).get("bits", 8))


def _image_array(x: torch.Tensor, bits: int = 8) -> np.ndarray:
    from undiffuse.data.images import to_levels

    return to_levels(x, bits)  # uint8 (or uint16 for 16-bit data) [N, H, W, C]


def _image_npy(x: torch.Tensor, path: Path, info: Any, **_: Any) -> Path:
    """uint8 [N, H, W, C] levels in data units (uint16 for 16-bit data)."""
    return write_npy(_image_array(x, _bits(info)), path)


def _image_grid(x: torch.Tensor, path: Path, info: Any, nrow: Optional[int] = None, **_: Any) -> Path:
    """A grid of the images (written atomically)."""
    from undiffuse.data.images import save_image_grid

    return save_image_grid(x, path, nrow=nrow or max(1, math.ceil(math.sqrt(len(x)))))


def _image_dir(x: torch.Tensor, path: Path, info: Any, start: int = 0, total: Optional[int] = None,
               **_: Any) -> Path:  # fmt: skip
    """One PNG per sample, named by its index (zero-padded to the width of the last index)."""
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str((total or start + len(x)) - 1)))
    from undiffuse.data.images import display_channels

    shown = display_channels(x)  # a PNG shows 1 or 3 channels (16-bit only for grey); .npy keeps all
    for k, u in enumerate(_image_array(shown, _bits(info) if shown.shape[1] == 1 else 8)):
        with atomic_path(path / f"{start + k:0{width}d}.png") as tmp:
            Image.fromarray(u[..., 0] if u.shape[-1] == 1 else u).save(tmp, format="PNG")
    return path


def _vector_npy(x: torch.Tensor, path: Path, info: Any, **_: Any) -> Path:
    """float32 [N, D] in data units."""
    return write_npy(x.detach().cpu().float().numpy().astype(np.float32), path)


def _vector_scatter(x: torch.Tensor, path: Path, info: Any, reference: Optional[torch.Tensor] = None,
                    **_: Any) -> Path:  # fmt: skip
    """A scatter plot of the first two coordinates (over ``reference`` data, if given)."""
    from undiffuse.plots import scatter_plot

    if x.shape[1] < 2:
        raise DataError(f"cannot plot {x.shape[1]}-D samples — write .npy instead")
    return scatter_plot(x, path, reference, title=f"{len(x)} samples of {info.name}")


def _table_csv(x: torch.Tensor, path: Path, info: Any, **kw: Any) -> Path:
    """The rows as a CSV with the training table's columns, order and types."""
    from undiffuse.data.tablefiles import write_csv

    return write_csv(x, path, info, **kw)


def _lazy(module: str, prefix: str, fmt: str) -> Writer:
    """The writer ``undiffuse.data.<module>.<prefix><fmt>``, imported on first use: text (.txt blank-line
    separated, .jsonl; textdata.write_*), series (.npy [N, L, C], a .csv of blocks, a .png of paths;
    series.write_series_*) and audio (waveforms, or log-mel images vocoded by Griffin-Lim: one .wav with 0.25 s
    of silence between samples, one WAV per sample (dir), float32 [N, L] .npy, a .png of spectrograms;
    audio.write_audio_*)."""

    def write(x: torch.Tensor, path: Path, info: Any, **kw: Any) -> Path:
        import importlib

        return getattr(importlib.import_module(f"undiffuse.data.{module}"), f"{prefix}{fmt}")(x, path, info, **kw)

    return write


def _text(fmt: str) -> Writer:
    return _lazy("textdata", "write_", fmt)


def _series(fmt: str) -> Writer:
    return _lazy("series", "write_series_", fmt)


def _audio(fmt: str) -> Writer:
    return _lazy("audio", "write_audio_", fmt)


_GRID = {".png": _image_grid, ".jpg": _image_grid, ".jpeg": _image_grid}
_AUDIO = {".wav": _audio("wav"), "dir": _audio("dir"), ".npy": _audio("npy"), ".png": _audio("png")}

#: The registry of kinds. A new kind of data is one entry here (plus its datasets and, if new, network).
KINDS: dict[str, DataKind] = {
    "image": DataKind("image", "unet", "fmnist", {**_GRID, ".npy": _image_npy, "dir": _image_dir},
                      ("fd", "precision_recall", "nll"), describe="[C, H, W] in [-1, 1]"),  # fmt: skip
    "vector": DataKind("vector", "mlp", "toy",
                       {".png": _vector_scatter, ".jpg": _vector_scatter, ".npy": _vector_npy},
                       ("modes", "precision_recall", "nll"), describe="[D] in data units"),  # fmt: skip
    "series": DataKind("series", "mlp", "series", {".npy": _series("npy"), ".csv": _series("csv"), ".png": _series("png")},
                       ("stylised_facts", "discriminative"), describe="[L·C] standardised windows"),  # fmt: skip
    "table": DataKind("table", "mlp", "table", {".csv": _table_csv}, ("columns", "efficacy", "privacy", "detection"),
                      process="mixed", describe="[W]: quantile-normal numbers, one-hot categories"),  # fmt: skip
    "audio": DataKind("audio", "wavenet", "audio", _AUDIO, ("digit_accuracy", "fd", "nll"),
                      describe="[L] waveform in [-1, 1] at DataInfo.extra['audio']['rate']"),  # fmt: skip
    "mel": DataKind("mel", "unet", "audio-mel", _AUDIO, ("digit_accuracy", "fd", "nll"),
                    describe="[1, 32, 32] log-mel image in [-1, 1], vocoded by Griffin-Lim"),  # fmt: skip
    "text": DataKind("text", "transformer", "text", {".txt": _text("txt"), ".jsonl": _text("jsonl")},
                     ("bits_per_char", "gen_ppl", "infill"), process="masked", describe="[L] character ids"),  # fmt: skip
}


def kind_of(name: str) -> DataKind:
    """The :class:`DataKind` called ``name`` (DataError for an unknown one)."""
    if name not in KINDS:
        raise DataError(f"unknown kind of data {name!r} — known: {', '.join(KINDS)}")
    return KINDS[name]


def output_type(path: PathLike) -> str:
    """"dir" for a path ending in a separator or an existing directory, else the lower-case suffix."""
    text = str(path)
    if text.endswith(("/", os.sep)) or Path(path).is_dir():
        return "dir"
    return Path(path).suffix.lower()


def check_output(path: PathLike, kind: str) -> str:
    """Refuse, before any work, an output ``path`` that samples of ``kind`` cannot be written to: an
    unknown type, or a parent that is a regular file. Returns the output type."""
    k = kind_of(kind)
    typ = output_type(path)
    if typ not in k.writers:
        shown = ", ".join("a directory ending in /" if t == "dir" else t for t in k.writers)
        if typ == "dir":
            per_sample = ", ".join(name for name, other in KINDS.items() if "dir" in other.writers)
            raise DataError(f"one file per sample is not available for {kind} data (only for {per_sample} data) — use {shown}")
        raise DataError(f"unknown output type {typ or str(path)!r} for {kind} samples — use {shown}")
    for parent in Path(path).parents:
        if parent.exists():
            if not parent.is_dir():
                raise DataError(f"cannot write {path}: {parent} is a file, not a directory — choose another --out")
            break
    return typ


def save_samples(x: torch.Tensor, path: PathLike, data: Any, reference: Optional[torch.Tensor] = None,
                 nrow: Optional[int] = None) -> Path:  # fmt: skip
    """Write samples ``x`` (model units) of a run with data info ``data`` (its ``kind`` and ``name``) to
    ``path`` with the writer its kind declares for the path's output type (see :func:`check_output`)."""
    typ = check_output(path, data.kind)
    path = Path(path)
    if typ != "dir":
        path.parent.mkdir(parents=True, exist_ok=True)
    return KINDS[data.kind].writers[typ](x, path, data, reference=reference, nrow=nrow)


class SampleStream:
    """A per-batch writer for :func:`undiffuse.samplers.driver.drive` (``write=stream``) that holds at
    most one batch in memory: ``.npy`` → one array [n, …] through ``numpy.lib.format.open_memmap``
    (uint8 [n, H, W, C] for images — uint16 for 16-bit data — float32 otherwise) in a temporary file renamed onto ``path`` by
    :meth:`close`; ``dir`` → one file per sample as it comes. Use as a context manager."""

    def __init__(self, path: PathLike, data: Any, n: int) -> None:
        self.typ = check_output(path, data.kind)
        if self.typ not in (".npy", "dir"):
            raise DataError(f"streaming writes .npy or a directory, not {self.typ} — use save_samples for grids")
        self.path, self.data, self.n, self.arr = Path(path), data, n, None
        self._tmp: Optional[str] = None
        if self.typ == ".npy":
            c, *rest = data.shape
            shape = (n, *rest, c) if data.kind == "image" else (n, *data.shape)
            if data.kind == "mel":  # written as the vocoded waveforms [n, L]
                shape = (n, data.extra["audio"]["length"])
            self._tmp = temp_beside(self.path)
            dtype = (np.uint16 if _bits(data) == 16 else np.uint8) if data.kind == "image" else np.float32
            self.arr = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=dtype, shape=shape)

    def __call__(self, start: int, x: torch.Tensor) -> None:
        if self.arr is None:
            KINDS[self.data.kind].writers["dir"](x, self.path, self.data, start=start, total=self.n)
            return
        if self.data.kind == "image":
            self.arr[start : start + len(x)] = _image_array(x.cpu(), _bits(self.data))
        elif self.data.kind in ("audio", "mel"):
            from undiffuse.data.audio import waveforms

            self.arr[start : start + len(x)] = waveforms(x, self.data).numpy()
        else:
            self.arr[start : start + len(x)] = x.float().cpu().numpy()

    def close(self, ok: bool = True) -> Path:
        if self._tmp is not None:
            self.arr.flush()
            self.arr = None  # closes the memory map
            tmp, self._tmp = self._tmp, None
            commit_temp(tmp, self.path, ok)  # ok: moved onto path; aborted: removed, path untouched
        return self.path

    def __enter__(self) -> "SampleStream":
        return self

    def __exit__(self, typ, value, tb) -> None:
        self.close(ok=typ is None)
