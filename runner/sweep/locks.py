"""One live sweep per sweep dir, one live run per run folder: exclusive `flock`s.

A grid sweep holds `SWEEP_DIR/.sweep.lock` while it runs; a run holds `RUN_DIR/.run.lock`.

The kernel drops the lock when its holder exits, however it exits (kill -9 included), so a
killed sweep never leaves a stale lock behind: re-running the command simply takes it again.
Optuna sweeps are the exception: several workers on one study share a sweep dir by design,
and each of their jobs gets a job number of its own, so they take no lock.
(`flock` is per machine: on a network file system, sweeps on two machines are not kept apart.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig

from common.errors import ConfigError

LOCK_NAME = ".sweep.lock"
RUN_LOCK_NAME = ".run.lock"  # the same, per run folder: two runs never write one folder
_held: dict[Path, int] = {}   # sweep dir -> open file descriptor holding its lock
_refused: set[Path] = set()   # sweep dirs this process was refused (their collector must not run either)


def is_shared_sweep(hydra_cfg: DictConfig) -> bool:
    """An Optuna sweep: its sweep dir is meant to be shared by several live processes."""
    return "optuna" in str(hydra_cfg.sweeper.get("_target_", "")).lower()


def try_flock(path: Path) -> int | None:
    """An exclusive lock on `path` through a descriptor of its own (so it also excludes other threads
    of this process), or None if it is held; closing the descriptor releases it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _lock(path: Path) -> tuple[int | None, str]:
    """Try to take an exclusive lock on `path`: (its descriptor, "") or (None, who holds it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = try_flock(path)
    if fd is None:
        try:
            holder = path.read_text(errors="replace")[:200].strip()
        except OSError:
            holder = ""
        return None, holder or "another process"
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    return fd, ""


def acquire(sweep_dir: str | Path) -> None:
    """Take the sweep dir's lock, or raise ConfigError naming the process that holds it."""
    sweep_dir = Path(sweep_dir).resolve()
    fd, holder = _lock(sweep_dir / LOCK_NAME)
    if fd is None:
        _refused.add(sweep_dir)
        raise ConfigError(f"hydra.sweep.dir={sweep_dir} is in use by a running sweep ({holder}); "
                          f"wait for it to end or pick another hydra.sweep.dir")
    _held[sweep_dir] = fd


@contextlib.contextmanager
def holding_run_folder(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir/.run.lock` while a run uses the folder; ConfigError if another live run holds it."""
    fd, holder = _lock(Path(run_dir) / RUN_LOCK_NAME)
    if fd is None:
        raise ConfigError(f"run folder {run_dir} is in use by a running run ({holder}); "
                          f"wait for it to end or pick another hydra.run.dir / hydra.sweep.dir")
    try:
        yield
    finally:
        os.close(fd)


def release(sweep_dir: str | Path) -> None:
    fd = _held.pop(Path(sweep_dir).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the lock; the file stays, harmless


def refused(sweep_dir: str | Path) -> bool:
    return Path(sweep_dir).resolve() in _refused
