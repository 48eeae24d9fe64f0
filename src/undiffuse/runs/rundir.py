"""A run directory: its kind, its ``config.json``, and the rules for starting and resuming a run.

Layout (every kind)::

    RUN_DIR/config.json      {"kind": "diffusion" | "gan" | "vae" | …, …the kind's configuration}
    RUN_DIR/log.jsonl        one JSON record per logged step
    RUN_DIR/checkpoints/step_XXXXXXX/   weights (safetensors) + state.json (see :mod:`undiffuse.runs.checkpoint`)
    RUN_DIR/.lock            held (flock) by the process writing the run (see :mod:`undiffuse.runs.lock`)

Rules: a new run refuses an existing non-empty directory (nothing is overwritten) and a path under a
regular file; a checkpoint's own configuration (in its state.json) is what its weights were trained
with, so a ``config.json`` that contradicts it (edited by hand) is refused rather than followed;
``config.json`` is read once, through :func:`read_config_json`, and never if larger than 1 MB.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from undiffuse.errors import CheckpointError, ConfigError, TrainingError, brief
from undiffuse.io import write_json, write_text
from undiffuse.runs.checkpoint import latest_checkpoint, read_state

__all__ = ["CONFIG_NAME", "LOCK_NAME", "MAX_CONFIG_BYTES", "check_new_run_dir", "read_config_json", "run_kind",
           "write_config_json", "config_diff", "describe_diff", "refuse_config_edit", "truncate_log"]  # fmt: skip

CONFIG_NAME = "config.json"
LOCK_NAME = ".lock"
MAX_CONFIG_BYTES = 1 << 20
PathLike = Union[str, os.PathLike]


def _file_ancestor(path: Path) -> Optional[Path]:
    """The first existing ancestor of ``path`` (or ``path``) that is not a directory, if any."""
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else p
    return None


def check_new_run_dir(run_dir: PathLike) -> None:
    """Refuse an existing, non-empty run directory (a left-over lock file does not count) and a path
    that is, or lies under, a regular file."""
    run_dir = Path(run_dir)
    blocker = _file_ancestor(run_dir)
    if blocker is not None:
        raise TrainingError(f"cannot create run directory {run_dir}: {blocker} is a file, not a directory — "
                            "choose another --out path")  # fmt: skip
    if run_dir.is_dir() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        raise TrainingError(
            f"run directory {run_dir} already exists and is not empty — choose a new --out directory, "
            "or pass --resume to continue that run"
        )


def read_config_json(run_dir: PathLike) -> Optional[dict]:
    """``RUN_DIR/config.json`` as a dict, or None if there is none. ConfigError (one line) when it is
    larger than 1 MB, truncated, not JSON or not an object."""
    f = Path(run_dir) / CONFIG_NAME
    if not f.is_file():
        return None
    fix = "restore it, or delete it to use the checkpoint's own configuration"
    try:
        with open(f, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {f}: {e.strerror or e} — check its permissions") from e
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{f} is larger than {MAX_CONFIG_BYTES >> 20} MB, which no run configuration is — {fix}")
    try:
        d = json.loads(data)
    except ValueError as e:
        raise ConfigError(f"{f} is truncated or not valid JSON ({brief(str(e))}) — {fix}") from e
    if not isinstance(d, dict):
        raise ConfigError(f"{f} is not a JSON object — {fix}")
    return d


def _kind_of(d: Mapping[str, Any]) -> str:
    """The kind a config.json (or state.json) declares; files of older versions are recognised by shape."""
    kind = d.get("kind")
    if kind is None and isinstance(d.get("config"), dict):  # baselines before the "kind" key
        kind = d["config"].get("kind")
    if kind is None:
        return "diffusion"
    if not isinstance(kind, str) or not kind.isidentifier():
        raise ConfigError(f"run kind {brief(kind)} is not a name — restore config.json")
    return kind


def run_kind(run_dir: PathLike) -> str:
    """What a run directory holds: "diffusion", "gan", "vae", … — from its config.json, else from its
    latest checkpoint. CheckpointError when ``run_dir`` is not a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist — give the --out directory of a training run")
    d = read_config_json(run_dir)
    if d is None:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise CheckpointError(f"{run_dir} is not a run directory (no config.json, no checkpoint) — "
                                  "give the --out directory of a training run")  # fmt: skip
        d = read_state(ckpt)
    return _kind_of(d)


def write_config_json(run_dir: PathLike, kind: str, body: Mapping[str, Any]) -> Path:
    """Write ``RUN_DIR/config.json`` = {"kind": kind, **body} atomically."""
    return write_json(Path(run_dir) / CONFIG_NAME, {"kind": kind, **body})


def config_diff(a: Any, b: Any, ignore: Iterable[str] = (), prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted keys where two nested JSON-like dicts differ: {key: (a_value, b_value)} (missing → None)."""
    ignore = set(ignore)
    if isinstance(a, dict) and isinstance(b, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for k in sorted(set(a) | set(b), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if key not in ignore:
                out.update(config_diff(a.get(k), b.get(k), ignore, key))
        return out
    return {} if a == b else {prefix: (a, b)}


def describe_diff(diff: Mapping[str, tuple[Any, Any]], left: str, right: str, most: int = 3) -> str:
    """``key: left A, right B; …`` for at most ``most`` keys, each value cut to 40 characters."""
    parts = [f"{k}: {left} {brief(a, 40)}, {right} {brief(b, 40)}" for k, (a, b) in list(diff.items())[:most]]
    more = len(diff) - most
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def refuse_config_edit(run_dir: PathLike, checkpoint: Path, diff: Mapping[str, tuple[Any, Any]]) -> None:
    """CheckpointError when config.json (diff side a) contradicts the checkpoint's own config (side b)."""
    if diff:
        raise CheckpointError(
            f"{Path(run_dir) / CONFIG_NAME} contradicts the configuration checkpoint {checkpoint.name} was trained "
            f"with ({describe_diff(diff, 'config.json', 'checkpoint')}) — the checkpoint's configuration rules: "
            "restore config.json (or delete it), and start a new run for a new configuration"
        )


def truncate_log(path: PathLike, step: int) -> None:
    """On resume, drop the records of ``log.jsonl`` past ``step`` (they will be produced again) and any
    line a crash left unfinished; written atomically."""
    path = Path(path)
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step", 0), int) and rec.get("step", 0) <= step:
            keep.append(line + "\n")
    write_text(path, "".join(keep))
