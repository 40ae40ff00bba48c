"""A GPU of its own for each trial when a sweep runs trials side by side on this machine.

With `hydra/launcher=joblib` (n_jobs > 1, or the Optuna sweeper's n_jobs trial threads), every
job would otherwise train on the first GPU. Instead each job leases one slot of one GPU for as
long as it trains: `compute.trials_per_gpu` slots per GPU (default 1). A slot is an exclusive
`flock` on a file in `<sweep dir>/.gpu_leases/<host>/`, taken through a descriptor of its own,
so leases exclude each other across worker processes and across threads of one process alike,
and the kernel drops a lease when its holder exits however it exits (a crash, kill -9).
When every slot is held, a job waits for one (one log line), it never shares a GPU beyond
`compute.trials_per_gpu`. A new lease goes to the least busy GPU, so trials spread before they pack.

Only `device=auto` is leased, and only in such a sweep: a run alone, `device=cpu` and a typed
`device=cuda:N` pick their device as before (runner/run/compute.py `pick_device`). Files are named
by the GPU as the machine knows it (its CUDA_VISIBLE_DEVICES entry), so two sweeps that share a
sweep dir but see different GPUs only wait for the GPUs they share.

The pure parts (`physical_ids`, `preference`, `GpuPool`) take the device count and the visible
list as arguments, so they run and are tested without a GPU; `JobGpu` is what a run uses.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from runner.sweep.locks import try_flock

log = logging.getLogger("runner")

LEASE_FOLDER = ".gpu_leases"  # in the sweep dir; runner/collect.py skips folders starting with a dot
POLL_S = 0.5  # how often a waiting job looks for a free slot


def physical_ids(device_count: int, visible: str | None) -> list[str]:
    """What this process's cuda:0, cuda:1, ... are called on the machine: the entries of
    CUDA_VISIBLE_DEVICES in order (indices, or GPU-/MIG- UUIDs), or the indices themselves when unset."""
    if visible is None:
        return [str(i) for i in range(device_count)]
    return [entry.strip() for entry in visible.split(",") if entry.strip()][:device_count]


def preference(busy: list[int]) -> list[int]:
    """GPU indices to try, the least busy first (ties: the lowest index)."""
    return sorted(range(len(busy)), key=lambda i: (busy[i], i))


@dataclass
class GpuLease:
    """One held slot: this process trains on cuda:`index`, the machine's GPU `physical`."""
    index: int
    physical: str
    slot: int
    fd: int | None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None


class GpuPool:
    """The slots of one sweep's GPUs on this host: `trials_per_gpu` per visible GPU."""

    def __init__(self, folder: Path, device_count: int, visible: str | None, trials_per_gpu: int) -> None:
        self.ids = physical_ids(device_count, visible)
        self.trials_per_gpu = trials_per_gpu
        self.folder = Path(folder) / _file_name(socket.gethostname())  # flock on a shared disk may reach other hosts

    def _path(self, index: int, slot: int) -> Path:
        return self.folder / f"gpu-{_file_name(self.ids[index])}.slot{slot}.lock"

    def busy(self) -> list[int]:
        """Slots held per GPU, as seen now (a glance: only taking a slot is exclusive)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        counts = []
        for index in range(len(self.ids)):
            held = 0
            for slot in range(self.trials_per_gpu):
                fd = try_flock(self._path(index, slot))
                if fd is None:
                    held += 1
                else:
                    os.close(fd)
            counts.append(held)
        return counts

    def try_take(self) -> GpuLease | None:
        """A free slot on the least busy GPU, held until released; None if every slot is held."""
        for index in preference(self.busy()):
            for slot in range(self.trials_per_gpu):
                fd = try_flock(self._path(index, slot))
                if fd is not None:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"pid {os.getpid()}\n".encode())  # who holds it, for a person looking
                    return GpuLease(index, self.ids[index], slot, fd)
        return None

    def take(self, on_wait: Callable[[], None] | None = None, poll_s: float = POLL_S) -> GpuLease:
        """A free slot, waiting for one if all are held (`on_wait()` is called once, when waiting starts)."""
        if not self.ids:
            raise ValueError("no GPU to lease")  # else it would wait for ever
        lease = self.try_take()
        if lease is None and on_wait is not None:
            on_wait()
        while lease is None:
            time.sleep(poll_s)
            lease = self.try_take()
        return lease


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "_"


def lease_folder(hydra_cfg: DictConfig, parallel_jobs: int) -> Path | None:
    """`<sweep dir>/.gpu_leases` when this job may run beside others of its sweep on this machine:
    a launcher whose jobs share this machine (joblib; its traits, runner/hydra_adapter.py) with n_jobs > 1
    (`parallel_jobs`), or with the Optuna sweeper's n_jobs > 1 (its trials run from threads). None
    otherwise: the basic and fused launchers run one job at a time, and cluster launchers (submitit,
    ray) get their GPUs from the cluster."""
    from runner.hydra_adapter import traits_of

    launcher, sweeper = hydra_cfg.launcher, hydra_cfg.sweeper
    if not traits_of(launcher).shares_machine:
        return None
    trial_threads = int(sweeper.get("n_jobs") or 1) if "optuna" in str(sweeper.get("_target_", "")).lower() else 1
    if max(parallel_jobs, trial_threads) <= 1:
        return None
    return Path(hydra_cfg.runtime.cwd) / str(hydra_cfg.sweep.dir) / LEASE_FOLDER  # the job's cwd may be its folder


def gpu_fields(device: Any) -> dict[str, Any]:
    """For summary.json: `gpu` (this process's CUDA index) and `gpu_physical` (the machine's name for
    it, through CUDA_VISIBLE_DEVICES); both None for a run that did not train on a GPU."""
    import torch

    if device.type != "cuda":
        return {"gpu": None, "gpu_physical": None}
    index = device.index if device.index is not None else torch.cuda.current_device()
    ids = physical_ids(torch.cuda.device_count(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    return {"gpu": index, "gpu_physical": ids[index] if index < len(ids) else None}


class JobGpu:
    """A run's device, leased when `folder` is given (a parallel sweep) and the run asks for device=auto.

    Used as a context around the run: on leaving, the GPU's cached memory is handed back to the
    driver and the lease released, so the next trial on that GPU finds its memory free.
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.lease: GpuLease | None = None

    def pick(self, cfg: DictConfig) -> Any:
        """The torch.device to train on (waits for a free GPU slot when every slot is held)."""
        import torch

        from runner.run.compute import pick_device

        device_count = torch.cuda.device_count() if str(cfg.device) == "auto" and self.folder is not None else 0
        if device_count == 0:
            return pick_device(str(cfg.device))
        per_gpu = int(cfg.compute.get("trials_per_gpu", 1))
        pool = GpuPool(self.folder, device_count, os.environ.get("CUDA_VISIBLE_DEVICES"), per_gpu)
        if not pool.ids:
            return pick_device(str(cfg.device))
        started = time.perf_counter()

        def waiting() -> None:
            log.info("waiting for a free GPU: each of the %d GPU(s) runs compute.trials_per_gpu=%d trial(s) "
                     "of this sweep", device_count, per_gpu)

        self.lease = pool.take(on_wait=waiting)
        torch.cuda.set_device(self.lease.index)  # for what allocates on the current device (cuDNN, compile)
        waited = time.perf_counter() - started
        log.info("gpu %d (physical %s) leased for this run: slot %d of %d (compute.trials_per_gpu)%s",
                 self.lease.index, self.lease.physical, self.lease.slot + 1, per_gpu,
                 f", after waiting {waited:.1f}s" if waited >= 1 else "")
        return torch.device("cuda", self.lease.index)

    def __enter__(self) -> JobGpu:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.lease is None:
            return
        import torch

        try:
            gc.collect()  # the run's tensors held in reference cycles go before the cache is emptied
            with torch.cuda.device(self.lease.index):
                torch.cuda.empty_cache()
        finally:
            self.lease.release()
            self.lease = None
