"""One writer per run directory: an exclusive ``flock`` on ``RUN_DIR/.lock``.

::

    with lock_run(run_dir, new=True):   # refuses at once if another process holds it
        ...                              # train; a new run that fails before its first checkpoint
                                         # leaves nothing behind (what this start created is removed)

The lock file holds the holder's pid, host and command, so a refused second writer names it. The
kernel drops an ``flock`` when its holder dies (``kill -9`` included), so a stale lock file never
blocks. While the lock is held, the temporary files a killed writer left behind (``.NAME.*.tmp``
of :mod:`undiffuse.io`, ``checkpoints/.tmp-*``) are removed. On a system without ``fcntl`` the lock is
not taken.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Optional, Union

from undiffuse.errors import TrainingError
from undiffuse.io import remove_stale_temps
from undiffuse.runs.checkpoint import latest_checkpoint, remove_stale_checkpoint_temps
from undiffuse.runs.rundir import LOCK_NAME, check_new_run_dir

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunLock", "lock_run", "lock_holder"]


class RunLock:
    """The lock on one run directory, held by this process until :meth:`release`."""

    def __init__(self, run_dir: Path, fd: Optional[int], created: bool, new: bool) -> None:
        self.run_dir, self._fd, self.created, self.new = run_dir, fd, created, new

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def abandon(self) -> None:
        """Undo a new run's start that failed before its first checkpoint, so the directory can be used
        again: remove it if this start created it, else empty it (it was empty). Then release."""
        if self.new and self._fd is not None:
            if self.created:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            else:
                for p in self.run_dir.iterdir():
                    if p.name != LOCK_NAME:
                        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        self.release()

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and latest_checkpoint(self.run_dir) is None:
            self.abandon()  # a failed new start: the directory can be used again
        self.release()


def lock_holder(run_dir: Union[str, os.PathLike]) -> str:
    """Who holds (or last held) the lock: "process PID on HOST (COMMAND)", from the lock file."""
    try:
        text = (Path(run_dir) / LOCK_NAME).read_text()[:500]
        pid, host, command = (text.strip().split(" ", 2) + ["", "", ""])[:3]
        int(pid)
    except (OSError, ValueError):
        return "another process"
    return f"process {pid} on {host}" + (f" ({command})" if command else "")


def _command() -> str:
    entry = os.path.basename(sys.argv[0]) if sys.argv else ""
    return f"undiffuse {sys.argv[1]}" if entry in ("undiffuse", "main.py") and len(sys.argv) > 1 else "python"


def _flock(fd: int, run_dir: Path) -> None:
    """Take the lock on ``fd`` without waiting; TrainingError naming the holder (``fd`` closed) if taken."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TrainingError(
            f"run directory {run_dir} is in use by {lock_holder(run_dir)} — wait for it to finish or stop it "
            "(a second writer would corrupt its checkpoints and log), or choose another --out directory"
        ) from None


def _take(run_dir: Path) -> int:
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    _flock(fd, run_dir)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {_command()}\n".encode(), 0)
    return fd


def _refuse_if_held(run_dir: Path) -> None:
    """Name the process writing ``run_dir``, if any, before any other complaint (creates nothing)."""
    if fcntl is not None and (run_dir / LOCK_NAME).is_file():
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
        _flock(fd, run_dir)
        os.close(fd)


def lock_run(run_dir: Union[str, os.PathLike], *, new: bool) -> RunLock:
    """Lock ``run_dir`` for writing (creating it for a ``new`` run, which must be new or empty), then
    remove stale temporary files. TrainingError, naming the holder, if another process has it."""
    run_dir = Path(run_dir)
    if new:
        _refuse_if_held(run_dir)
        check_new_run_dir(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = _take(run_dir) if fcntl is not None else None
    lock = RunLock(run_dir, fd, created, new)
    try:
        if new:
            check_new_run_dir(run_dir)  # another process may have filled it before we took the lock
        remove_stale_temps(run_dir)
        remove_stale_checkpoint_temps(run_dir / "checkpoints")
    except BaseException:
        lock.release()
        raise
    return lock
