"""The benchmarks' shared training step: train once per run folder, timed, and reuse it on a rerun."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterable


def timed_train(spec: str, run: Path, overrides: Iterable[str] = ()) -> dict:
    """Train ``spec``'s default preset (plus ``overrides``) into ``run`` and record its CPU and wall seconds, steps,
    losses and 1-minute load in ``run/train_time.json``; a run that already has checkpoints is reused (its record,
    with ``"reused": True``)."""
    from undiffuse.config import resolve_config
    from undiffuse.training import train

    record = run / "train_time.json"
    if (run / "checkpoints").is_dir():
        return {**(json.loads(record.read_text()) if record.is_file() else {}), "reused": True}
    load, cpu, wall = os.getloadavg()[0], time.process_time(), time.perf_counter()
    s = train(resolve_config(spec, overrides=list(overrides)), run, progress=False)
    out = {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall, "steps": s.step,
           "loss": s.loss, "val_loss": s.val_loss, "load_1min": load}  # fmt: skip
    record.write_text(json.dumps(out))
    return out
