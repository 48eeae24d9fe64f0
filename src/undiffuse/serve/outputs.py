"""Response bytes through the writers of the data-kind seam (:mod:`undiffuse.data.kinds`), written into a private
folder in memory (/dev/shm) and read back: a sample answer is byte for byte the file ``undiffuse sample --out
samples.FORMAT`` writes with the same arguments, and x̂₀ previews are the kind's own ``.png`` (a grid for images,
a scatter plot for 2-D vectors)."""

from __future__ import annotations

import base64
import mimetypes
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

from undiffuse.data.kinds import KINDS, save_samples
from undiffuse.serve.catalog import formats_of
from undiffuse.serve.limits import ServeError

__all__ = ["check_format", "encode", "encode_edit", "preview_url", "media_type"]

_MEDIA = {"npy": "application/octet-stream", "csv": "text/csv", "txt": "text/plain", "wav": "audio/wav"}
#: where answers are written and read back: memory (/dev/shm) where the system has it, else the temp folder
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _scratch() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="undiffuse-serve-", dir=_SCRATCH)


def check_format(fmt: Any, kind: str) -> str:
    """``fmt`` if samples of ``kind`` can be answered in it (400 naming the formats otherwise)."""
    formats = formats_of(kind)
    if not isinstance(fmt, str) or fmt.lower().lstrip(".") not in formats:
        raise ServeError(f"format {str(fmt)[:40]!r} is not available for {kind} samples — use one of {', '.join(formats)}")
    return fmt.lower().lstrip(".")


def media_type(fmt: str) -> str:
    return _MEDIA.get(fmt) or mimetypes.guess_type(f"x.{fmt}")[0] or "application/octet-stream"


def encode(x: torch.Tensor, data: Any, fmt: str) -> bytes:
    """The bytes of samples ``x`` (model units) written as ``samples.FORMAT`` by the kind's writer (in a
    private temporary folder, read back and removed)."""
    with _scratch() as tmp:
        path = Path(tmp) / f"samples.{fmt}"
        save_samples(x, path, data)
        return path.read_bytes()


def preview_url(x: torch.Tensor, data: Any) -> Optional[str]:
    """A ``data:image/png;base64,…`` URL of x̂₀ (clamped to the data range for images), or None for a
    kind without a ``.png`` writer."""
    if ".png" not in KINDS[data.kind].writers:
        return None
    x = x.float().clamp(-1, 1) if data.kind == "image" else x.float()
    return "data:image/png;base64," + base64.b64encode(encode(x, data, "png")).decode("ascii")


def encode_edit(x: torch.Tensor) -> bytes:
    """The PNG bytes ``undiffuse edit --out edited.png`` writes for the edited image ``x`` [1, C, H, W]."""
    from undiffuse.cli.cmd_edit import save_image

    with _scratch() as tmp:
        path = Path(tmp) / "edited.png"
        save_image(x, str(path))
        return path.read_bytes()
