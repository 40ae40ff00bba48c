"""One GPU per parallel trial (runner/run/gpu_lease.py): real file locks held by real processes and
threads, with pretend device counts and CUDA_VISIBLE_DEVICES lists, so it runs on a CPU; the
sweeps on real GPUs are marked `cuda` and skipped without one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
from hydra.types import RunMode
from omegaconf import OmegaConf

from runner.run.gpu_lease import LEASE_FOLDER, GpuPool, lease_folder, physical_ids, preference
from tests.conftest import ROOT, run_cli

# A process that leases a slot, prints "index physical slot" and holds it until its stdin closes.
HOLDER = """
import sys
from pathlib import Path
from runner.run.gpu_lease import GpuPool
folder, count, visible, per_gpu = sys.argv[1:]
pool = GpuPool(Path(folder), int(count), None if visible == "-" else visible, int(per_gpu))
lease = pool.take(on_wait=lambda: print("waiting", flush=True), poll_s=0.05)
print(lease.index, lease.physical, lease.slot, flush=True)
sys.stdin.read()
"""


class Holder:
    def __init__(self, folder: Path, count: int, visible: str | None = None, per_gpu: int = 1) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(count), visible or "-",
                                      str(per_gpu)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})

    def line(self) -> str:
        return self.proc.stdout.readline().strip()

    def lease(self) -> tuple[int, str, int]:
        index, physical, slot = self.line().split()
        return int(index), physical, int(slot)

    def end(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture
def holders():
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.proc.kill()
        holder.proc.wait()


def test_visible_devices_name_the_machines_gpus():
    assert physical_ids(2, None) == ["0", "1"]
    assert physical_ids(2, "3,5") == ["3", "5"]
    assert physical_ids(1, "GPU-8e3f, GPU-11aa") == ["GPU-8e3f"]  # CUDA stops at the count it could open
    assert physical_ids(0, "") == []


def test_the_least_busy_gpu_comes_first():
    assert preference([1, 0, 2, 0]) == [1, 3, 0, 2]
    assert preference([0, 0]) == [0, 1]


@pytest.mark.parametrize("gpus,per_gpu", [(2, 1), (2, 2), (4, 1), (4, 2)])
def test_processes_spread_over_the_gpus_then_pack_up_to_trials_per_gpu(tmp_path, holders, gpus, per_gpu):
    leases = []
    for _ in range(gpus * per_gpu):
        holders.append(Holder(tmp_path, gpus, per_gpu=per_gpu))
        leases.append(holders[-1].lease())
    assert sorted(index for index, _, _ in leases[:gpus]) == list(range(gpus))  # one each before any doubles up
    for gpu in range(gpus):
        assert sorted(slot for index, _, slot in leases if index == gpu) == list(range(per_gpu))
    pool = GpuPool(tmp_path, gpus, None, per_gpu)
    assert pool.busy() == [per_gpu] * gpus
    assert pool.try_take() is None  # full: never a slot beyond trials_per_gpu
    holders[1].end()  # a trial that ends frees its slot for the next
    lease = pool.try_take()
    assert lease is not None and (lease.index, lease.slot) == (leases[1][0], leases[1][2])
    lease.release()


def test_a_full_pool_waits_and_a_killed_holder_frees_its_slot(tmp_path, holders):
    holders.append(Holder(tmp_path, 1))
    assert holders[0].lease() == (0, "0", 0)
    holders.append(Holder(tmp_path, 1))
    assert holders[1].line() == "waiting"  # told once, then it polls
    time.sleep(0.5)
    assert holders[1].proc.poll() is None  # still waiting: the slot is held
    holders[0].proc.kill()  # kill -9: no clean-up runs, the kernel drops the lock
    holders[0].proc.wait()
    assert holders[1].lease() == (0, "0", 0)


def test_cuda_visible_devices_map_to_physical_gpus_shared_across_pools(tmp_path, holders):
    for _ in range(2):
        holders.append(Holder(tmp_path, 2, "3,5"))
    assert sorted(h.lease()[:2] for h in holders) == [(0, "3"), (1, "5")]
    names = sorted(p.name for p in tmp_path.rglob("*.lock"))
    assert names == ["gpu-3.slot0.lock", "gpu-5.slot0.lock"]
    other = GpuPool(tmp_path, 2, "5,7", 1)  # a second sweep into this dir, seeing GPUs 5 and 7
    lease = other.try_take()
    assert (lease.index, lease.physical) == (1, "7")  # 5 is held; 7 is free
    assert GpuPool(tmp_path, 2, "3,5", 1).try_take() is None
    lease.release()


def test_threads_of_one_process_get_gpus_of_their_own(tmp_path):
    pool = GpuPool(tmp_path, 2, None, 1)
    start, got = threading.Barrier(3), []

    def trial() -> None:
        start.wait()
        got.append(pool.take(poll_s=0.05))

    threads = [threading.Thread(target=trial) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    assert sorted(lease.index for lease in got) == [0, 1]  # the third waits: a thread's lease excludes the others
    first = min(got, key=lambda lease: lease.index)
    first.release()
    for thread in threads:
        thread.join(timeout=10)
    assert len(got) == 3 and got[2].index == first.index
    for lease in got[1:]:
        lease.release()


LAUNCHERS = {"joblib": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
             "submitit": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
             "fused": "runner.fused.launcher.FusedLauncher"}


def _hydra(launcher: str, n_jobs: int | None, sweeper: str = "basic", sweeper_jobs: int = 1, cwd: str = "/x"):
    return OmegaConf.create({
        "mode": RunMode.MULTIRUN, "runtime": {"cwd": cwd}, "sweep": {"dir": "multirun/a"},
        "launcher": {"_target_": LAUNCHERS[launcher], "n_jobs": n_jobs},
        "sweeper": {"_target_": f"hydra_plugins.hydra_{sweeper}_sweeper.S", "n_jobs": sweeper_jobs}})


def test_only_trials_run_side_by_side_on_this_machine_lease_gpus():
    assert lease_folder(_hydra("joblib", 4), 4) == Path("/x/multirun/a") / LEASE_FOLDER
    assert lease_folder(_hydra("joblib", 1, "optuna", 3), 1) is not None  # the sweeper's trial threads
    assert lease_folder(_hydra("joblib", 1), 1) is None  # one at a time
    assert lease_folder(_hydra("joblib", 1, "optuna", 1), 1) is None
    assert lease_folder(_hydra("submitit", 4), 1) is None  # the cluster hands out GPUs
    assert lease_folder(_hydra("fused", None, "optuna", 3), 1) is None  # one job at a time, in the sweep's process


def test_trials_per_gpu_is_checked_in_one_line(tmp_path):
    proc = run_cli("compute.trials_per_gpu=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: compute.trials_per_gpu=0 is invalid: use how many trials of a parallel "
                                   "sweep may share one GPU, 1 or more, e.g. compute.trials_per_gpu=2")
    assert not (tmp_path / "run").exists()


def _summaries(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]


def test_a_cpu_run_in_a_parallel_sweep_records_no_gpu(make_cfg, tmp_path):
    from runner.run.train import train

    leases = tmp_path / "sweep" / LEASE_FOLDER  # what a joblib job with n_jobs=2 is given
    cfg = make_cfg("epochs=1", "device=auto", "compute.threads=1", "compute.trials_per_gpu=2")
    summary = train(cfg, tmp_path / "run", parallel_jobs=2, gpu_leases=leases)
    stored = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == stored["status"] == "completed"
    assert (stored["device"], stored["gpu"], stored["gpu_physical"]) == ("cpu", None, None)
    assert not leases.exists()  # nothing leased where there is no GPU


# ---------------------------------------------------------------- on real GPUs
LEASED = re.compile(r"^\[([^\]]+)\].*gpu (\d+) \(physical (\S+)\) leased for this run", re.M)
ENDED = re.compile(r"^\[([^\]]+)\].*run folder: ", re.M)


def _when(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _leases(sweep_dir: Path) -> list[tuple[float, float, str]]:
    """(leased at, ended at, physical GPU) of each job, from its log file."""
    spans = []
    for log in sorted(sweep_dir.glob("*/runner.log")):
        text = log.read_text()
        leased, ended = LEASED.search(text), ENDED.search(text)
        assert leased and ended, text
        spans.append((_when(leased.group(1)), _when(ended.group(1)), leased.group(3)))
    return spans


def _overlapping(spans):
    return [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:] if a[0] < b[1] and b[0] < a[1]]


def _gpu_sweep(sweep_dir: Path, jobs: int, env: dict[str, str] | None = None) -> list[dict]:
    lrs = ",".join(f"{0.01 * (i + 1):g}" for i in range(jobs))
    argv = ["-m", f"hydra.sweep.dir={sweep_dir}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            f"lr={lrs}", "epochs=3", "tensorboard=false", "progress=false"]
    proc = subprocess.run([sys.executable, "-m", "runner", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summaries = _summaries(sweep_dir)
    assert [s["status"] for s in summaries] == ["completed"] * jobs
    return summaries


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_parallel_trials_train_on_gpus_of_their_own(tmp_path):
    summaries = _gpu_sweep(tmp_path, 4)
    assert all(s["device"] == f"cuda:{s['gpu']}" for s in summaries)
    assert len({s["gpu"] for s in summaries}) >= 2
    spans = _leases(tmp_path)
    assert _overlapping(spans), spans  # two workers, four jobs: they ran side by side
    assert all(a[2] != b[2] for a, b in _overlapping(spans))  # and never on one GPU at once


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_two_workers_on_one_gpu_take_turns(tmp_path):
    first = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip()
    summaries = _gpu_sweep(tmp_path, 2, {"CUDA_VISIBLE_DEVICES": first})
    assert all((s["device"], s["gpu"], s["gpu_physical"]) == ("cuda:0", 0, first) for s in summaries)
    assert not _overlapping(_leases(tmp_path))  # compute.trials_per_gpu=1: one trial on the GPU at a time
