"""Atomic file writes: write to a temporary file in the same directory, fsync, then ``os.replace``.

A reader never sees a half-written file, and a failure (full disk, Ctrl-C) leaves the previous
version of the file intact. The temporary file is ``.NAME.XXXXXXXX.tmp`` beside ``NAME`` (one pattern
for every kind of file, so :func:`remove_stale_temps` can clear what a killed process left behind) and
is created with mode 0666 & ~umask, so the result has the permissions a plain ``open(path, "w")``
would give it.

This module imports only the standard library; every package may use it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
from pathlib import Path
from typing import Any, Callable, Iterator, Union

__all__ = ["cache_root", "write_npy", "temp_beside", "commit_temp", "atomic_path", "atomic_write", "write_text", "write_json", "jsonable", "is_temp_name",
           "remove_stale_temps"]  # fmt: skip

PathLike = Union[str, os.PathLike]
# ".NAME.XXXXXXXX.tmp" (ours); ".STEM.XXXXXXXX.png" was written by older versions' plot and grid writers
_TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|png)$")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary file of :func:`atomic_path`."""
    return bool(_TEMP_RE.match(name))


def _create_temp(path: Path) -> str:
    """Create an empty ``.NAME.XXXXXXXX.tmp`` beside ``path`` (mode 0666 & ~umask) and return its path."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def temp_beside(path: PathLike) -> str:
    """A new empty temporary file beside ``path`` (its folder created), for :func:`commit_temp`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _create_temp(path)


def commit_temp(tmp: str, path: PathLike, ok: bool = True) -> None:
    """Finish a :func:`temp_beside` file: if ``ok``, flush it to disk and move it onto ``path`` atomically;
    otherwise (or if that fails) remove it, leaving ``path`` as it was."""
    try:
        if ok:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    tmp = temp_beside(path)
    ok = False
    try:
        yield tmp
        ok = True
    finally:
        commit_temp(tmp, path, ok)


def atomic_write(path: PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def jsonable(obj: Any) -> Any:
    """``obj`` with what JSON cannot hold made plain: tensors and numpy values → lists/numbers (via
    ``tolist``), tuples → lists, paths → strings, NaN → null and ±inf → "inf"/"-inf"."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # torch / numpy arrays and scalars
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def write_json(path: PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` (made :func:`jsonable`) as indented JSON plus a newline to ``path`` atomically."""
    return write_text(path, json.dumps(jsonable(obj), indent=indent) + "\n")


def remove_stale_temps(root: PathLike) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` under ``root`` (recursively), e.g. left by a
    process killed mid-write. Only safe while no other process writes there (hold the run's lock)."""
    removed = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if is_temp_name(name):
                p = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


def cache_root() -> Path:
    """Where undiffuse keeps what it builds once (datasets, classifiers, FID statistics): ``$UNDIFFUSE_CACHE`` if
    set, else ``~/.cache/undiffuse``."""
    return Path(os.environ.get("UNDIFFUSE_CACHE") or Path.home() / ".cache" / "undiffuse")


def write_npy(arr: Any, path: Union[str, os.PathLike]) -> Path:
    """``numpy.save(path, arr)`` written atomically (:func:`atomic_path`); no pickled objects."""
    import numpy as np

    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
    return path
