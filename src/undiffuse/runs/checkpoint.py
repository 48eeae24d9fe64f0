"""Checkpoints: safetensors weights + JSON state, written atomically, the last K kept.

Layout of one checkpoint (a directory named by its step)::

    RUN_DIR/checkpoints/step_0001000/
        model.safetensors   raw network weights
        ema.safetensors     EMA weights (what sampling uses by default)
        optimizer.pt        optimizer state (torch.save; loaded with torch.load(weights_only=True) only)
        state.json          resolved config, data info, step, examples seen, RNG states (as lists),
                            architecture signature, grad-scaler state; written last

(a diffusion run; a GAN/VAE baseline writes ``model.safetensors`` and ``train_state.safetensors`` —
optimizer moments and RNG state as tensors — and no ``optimizer.pt``). Weights are checked to be finite
before they are written and when they are read: a NaN/inf network is never the "last good checkpoint".

Atomicity: everything is written into a temporary sibling directory, each file fsync'ed, then the
directory is renamed into place with ``os.replace`` and the parent fsync'ed. A crash or a full disk
mid-save leaves the previous checkpoints untouched (and at worst a ``.tmp-*`` directory, removed on the
next start); the failure is reported as a :class:`~undiffuse.errors.TrainingError`.
Weights carry their config as safetensors metadata, so an ``ema.safetensors`` alone is self-describing.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from undiffuse.errors import CheckpointError, TrainingError

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
    "resolve_checkpoint",
    "step_dir_name",
    "read_newest",
    "read_state",
    "read_weights",
    "nonfinite",

    "remove_stale_checkpoint_temps",
    "check_signature",
    "load_weights_into",
]

T = TypeVar("T")
_STEP_RE = re.compile(r"^step_(\d+)$")
FORMAT_VERSION = 1
MAX_STATE_BYTES = 64 << 20  # a state.json holds a config and RNG states: kilobytes, never this much


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


@dataclass
class Checkpoint:
    """A loaded checkpoint: weight files (name → CPU tensors), optimizer state (or None), the JSON state."""

    path: Path
    weights: dict[str, dict[str, torch.Tensor]]
    optimizer: Optional[dict]
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def model(self) -> dict[str, torch.Tensor]:
        return self.weights.get("model", {})

    @property
    def ema(self) -> dict[str, torch.Tensor]:
        return self.weights.get("ema", {})


def _write_bytes(path: Path, data: bytes) -> None:
    """Write and fsync one file."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def nonfinite(tensors: Mapping[str, torch.Tensor]) -> Optional[str]:
    """The name of the first floating-point tensor holding a NaN or ±inf, or None if all are finite."""
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            return k
    return None


def _refuse_nonfinite(root: Path, step: int, weights: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    for name, tensors in weights.items():
        bad = nonfinite(tensors)
        if bad is not None:
            last = latest_checkpoint(root.parent)
            raise TrainingError(
                f"the weights became non-finite (NaN/inf in {name}:{bad}) at step {step}, so they were not saved; "
                f"last good checkpoint: {last or 'none saved yet'} — lower train.lr or use train.precision=fp32, "
                "then resume from the last good checkpoint"
            )


def save_checkpoint(
    root: Union[str, os.PathLike],
    step: int,
    weights: Mapping[str, Mapping[str, torch.Tensor]],
    optimizer: Optional[dict],
    state: dict[str, Any],
    keep_last: int = 3,
    metadata: Optional[dict[str, str]] = None,
) -> Path:
    """Atomically write ``root/step_XXXXXXX`` and keep the newest ``keep_last`` checkpoints.

    ``weights`` maps a file stem ("model", "ema", …) to its tensors, each file a safetensors file with
    ``metadata`` (str → str) in its header. Non-finite weights are refused (TrainingError naming the step
    and the last good checkpoint). On an OS error (e.g. ENOSPC) the partial write is removed, older
    checkpoints stay intact, and a TrainingError names the problem.
    """
    root = Path(root)
    _refuse_nonfinite(root, step, weights)
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_checkpoint_temps(root)
        tmp.mkdir()
        meta = {"format": "pt", **(metadata or {})}
        for name, tensors in weights.items():
            _write_bytes(tmp / f"{name}.safetensors", st_save(_tensors(tensors), metadata=meta))
        if optimizer is not None:
            buf = io.BytesIO()
            torch.save(optimizer, buf)
            _write_bytes(tmp / "optimizer.pt", buf.getvalue())
        full_state = {"format_version": FORMAT_VERSION, **state, "step": int(step)}
        _write_bytes(tmp / "state.json", json.dumps(full_state, indent=1).encode())
        _fsync_dir(tmp)
        _move_into_place(tmp, final)
        _fsync_dir(root)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingError(_os_error_message(e, final)) from e
    _prune(root, keep_last)
    return final


def _os_error_message(e: OSError, final: Path) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        what = f"the disk is full (no space left on device for {final.parent})"
        fix = "free space or move the run, then resume with --resume"
    else:
        what = f"{e.strerror or e} ({final.parent})"
        fix = "check the run directory is writable, then resume with --resume"
    return f"could not save checkpoint {final.name}: {what}; the previous checkpoints are intact — {fix}"


def _move_into_place(tmp: Path, final: Path) -> None:
    """os.replace a directory over an existing one (re-saving a step) without losing either on failure."""
    if not final.exists():
        os.replace(tmp, final)
        return
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_checkpoint_temps(root: Union[str, os.PathLike]) -> None:
    """Delete ``.tmp-*`` / ``.old-*`` directories a killed save left in ``root`` (hold the run's lock)."""
    root = Path(root)
    for p in root.iterdir() if root.is_dir() else ():
        if p.name.startswith((".tmp-", ".old-")) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _prune(root: Path, keep_last: int) -> None:
    for p in list_checkpoints(root.parent)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(p, ignore_errors=True)


def list_checkpoints(run_dir: Union[str, os.PathLike]) -> list[Path]:
    """Complete checkpoints of a run (those with a state.json), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / "state.json").exists():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Union[str, os.PathLike]) -> Optional[Path]:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(run_dir: Union[str, os.PathLike], checkpoint: Union[str, os.PathLike, int, None] = None) -> Path:
    """The checkpoint directory meant by ``checkpoint``: None → the latest; an int or "step_N"/"N" →
    that step of the run; a path → that directory. Raises CheckpointError if there is none."""
    run_dir = Path(run_dir)
    if checkpoint is None:
        if not run_dir.is_dir():
            raise CheckpointError(f"run directory {run_dir} does not exist — give the --out directory of a training run")
        found = latest_checkpoint(run_dir)
        if found is None:
            raise CheckpointError(f"no checkpoint in {run_dir} — train first (undiffuse train --out {run_dir})")
        return found
    text = str(checkpoint)
    m = re.fullmatch(r"(?:step_)?(\d+)", text)
    path = run_dir / "checkpoints" / step_dir_name(int(m.group(1))) if m else Path(text)
    if not path.is_dir():
        have = ", ".join(p.name for p in list_checkpoints(run_dir)) or "none"
        raise CheckpointError(f"checkpoint {path} does not exist — available in {run_dir}: {have}")
    return path


def read_newest(run_dir: Union[str, os.PathLike], checkpoint: Union[str, os.PathLike, int, None],
                read: Callable[[Path], T]) -> T:  # fmt: skip
    """``read(path)`` of the checkpoint meant by ``checkpoint`` (:func:`resolve_checkpoint`). For the
    latest (None), a checkpoint that fails because a newer save pruned it meanwhile is not reported as
    corrupt: the newest one is read instead."""
    path = resolve_checkpoint(run_dir, checkpoint)
    for _ in range(10) if checkpoint is None else ():
        try:
            return read(path)
        except CheckpointError:
            newest = latest_checkpoint(run_dir)
            if newest is None or newest == path and path.is_dir():
                raise  # still the newest and still there: really unreadable
            path = newest
    return read(path)


def _corrupt(path: Path, detail: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} is truncated or corrupt ({detail[:200]}) — delete it to fall back to an earlier one, "
        "or pass another checkpoint"
    )


def read_weights(path: Union[str, os.PathLike], name: str) -> dict[str, torch.Tensor]:
    """The tensors of ``path/name`` (a safetensors file); CheckpointError if missing, corrupt or non-finite."""
    path = Path(path)
    f = path / name
    if not f.is_file():
        raise _corrupt(path, f"{name} is missing")
    try:
        tensors = st_load(f.read_bytes())
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _corrupt(path, f"{name}: {e}") from e
    bad = nonfinite(tensors)
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {path} holds non-finite weights (NaN/inf in {name}:{bad}) — they cannot be used; "
            "pass an earlier checkpoint (--checkpoint STEP) or train again with a lower train.lr"
        )
    return tensors


def _valid_state(state: Any) -> Optional[str]:
    """What is wrong with a parsed state.json, or None."""
    if not isinstance(state, dict) or "step" not in state or "config" not in state:
        return "state.json lacks step/config"
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"state.json step {str(step)[:40]!r} is not a non-negative integer"
    if not isinstance(state["config"], dict):
        return "state.json config is not an object"
    return None


def read_state(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """The state.json of a checkpoint directory (CheckpointError if missing, unreadable or malformed)."""
    path = Path(path)
    f = path / "state.json"
    if not f.is_file():
        raise _corrupt(path, "state.json is missing")
    try:
        if f.stat().st_size > MAX_STATE_BYTES:
            raise _corrupt(path, f"state.json is larger than {MAX_STATE_BYTES >> 20} MB")
        state = json.loads(f.read_bytes())
    except (OSError, ValueError) as e:
        raise _corrupt(path, f"state.json: {e}") from e
    problem = _valid_state(state)
    if problem:
        raise _corrupt(path, problem)
    return state


def load_checkpoint(
    path: Union[str, os.PathLike], *, weights: Sequence[str] = ("model", "ema"), optimizer: bool = True,
    map_location: Union[str, torch.device] = "cpu",
) -> Checkpoint:  # fmt: skip
    """Load a checkpoint directory. ``weights`` picks which ``NAME.safetensors`` files to read; the
    optimizer state is loaded with ``torch.load(weights_only=True)`` (no code runs on load)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist — pass a checkpoint directory of a run")
    state = read_state(path)
    tensors = {name: read_weights(path, f"{name}.safetensors") for name in weights}
    opt = None
    if optimizer:
        f = path / "optimizer.pt"
        if not f.is_file():
            raise _corrupt(path, "optimizer.pt is missing")
        try:
            opt = torch.load(f, map_location=map_location, weights_only=True)
        except Exception as e:  # truncated zip, unpickling refused, …
            raise _corrupt(path, f"optimizer.pt: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    return Checkpoint(path, tensors, opt, state)


def check_signature(path: Union[str, os.PathLike], state: dict[str, Any], expected: str) -> None:
    """Refuse a checkpoint whose architecture signature differs from the model being loaded into."""
    got = state.get("signature")
    if got != expected:
        raise CheckpointError(
            f"checkpoint {path} holds a different architecture (signature {got}, expected {expected}) — "
            "load it with its own run directory, or pass a checkpoint of this run"
        )


def load_weights_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Union[str, os.PathLike]) -> None:
    """``module.load_state_dict(tensors)`` with a CheckpointError when names or shapes do not match."""
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {path} does not fit this network ({first[1].strip() if len(first) > 1 else first[0]}) — "
            "it belongs to another architecture; pass a checkpoint of this run"
        ) from e
