"""Run directories — one owner for every kind of run (diffusion, GAN, VAE, …).

- :mod:`~undiffuse.runs.rundir`: the layout, :func:`run_kind`, ``config.json`` (read once, size-capped),
  the rules for new runs, log truncation on resume.
- :mod:`~undiffuse.runs.checkpoint`: checkpoints — safetensors + JSON state, atomic, the last K kept,
  finite weights only, the newest read even while a save prunes.
- :mod:`~undiffuse.runs.lock`: one writer per run directory; stale temporary files cleared on start.
- :mod:`~undiffuse.runs.diffusion`: opening a diffusion checkpoint (the checkpoint's config rules) and
  resolving a resume, once.
"""

from undiffuse.runs.checkpoint import (
    Checkpoint,
    check_signature,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_weights_into,
    read_newest,
    read_state,
    read_weights,
    resolve_checkpoint,
    save_checkpoint,
)
from undiffuse.runs.diffusion import (
    Opened,
    ResumePoint,
    given_config,
    merge_resume_config,
    open_checkpoint,
    resume_point,
    saved_config,
)
from undiffuse.runs.lock import RunLock, lock_holder, lock_run
from undiffuse.runs.optim import load_optimizer_tensors, optimizer_tensors
from undiffuse.runs.rundir import (
    check_new_run_dir,
    config_diff,
    read_config_json,
    refuse_config_edit,
    run_kind,
    truncate_log,
    write_config_json,
)

__all__ = [
    "Checkpoint",
    "Opened",
    "ResumePoint",
    "RunLock",
    "check_new_run_dir",
    "check_signature",
    "config_diff",
    "given_config",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_optimizer_tensors",
    "load_weights_into",
    "lock_holder",
    "lock_run",
    "merge_resume_config",
    "open_checkpoint",
    "optimizer_tensors",
    "read_config_json",
    "read_newest",
    "read_state",
    "read_weights",
    "refuse_config_edit",
    "resolve_checkpoint",
    "resume_point",
    "run_kind",
    "save_checkpoint",
    "saved_config",
    "truncate_log",
    "write_config_json",
]
