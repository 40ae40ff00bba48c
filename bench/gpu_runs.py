"""One measurement each: a course-loop run, a runner run, a sweep; used by bench/gpu.py.

Every function runs a subprocess (so each measurement starts clean, as a user's command would)
and returns one flat row of figures. A failed or timed-out command becomes a row with `error`
set, not an exception: one broken configuration must not cost the check's other figures.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
COURSE_LOOP = REPO / "bench" / "course_loop.py"
# What the captured step adds to summary.json (which step ran, its capture cost, its self-check); read when present.
CAPTURE_FIELDS = ("step_path", "capture_s", "step_check", "step_check_update", "step_fallback")


class Deadline:
    """A wall-clock budget for one invocation: each command gets what is left of it.

    A machine that limits a command's time (a rented or shared GPU) keeps only what the command
    wrote before it was stopped, so a command that would overrun is cut short here instead, its
    row marked, and the table still printed and written.
    """

    def __init__(self, budget_s: float | None) -> None:
        self.end = None if budget_s is None else time.monotonic() + budget_s

    def left(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - time.monotonic())

    def spent(self) -> bool:
        left = self.left()
        return left is not None and left < 5.0


def run_command(command: list[str], deadline: Deadline, env: dict[str, str] | None = None
                ) -> tuple[float, str | None, str]:
    """(wall seconds, error or None, stdout) of one command, run from the repository root."""
    if deadline.spent():
        return 0.0, "skipped: --budget-s spent", ""
    started = time.perf_counter()
    # Its own process group, so a timeout stops `bash sweep.sh`'s python and DataLoader workers too,
    # not only the shell (they would go on holding the GPU).
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=deadline.left())
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return time.perf_counter() - started, "timed out: --budget-s spent", ""
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        return wall, f"exit {proc.returncode}: {' | '.join(tail)}", stdout
    return wall, None, stdout


def course_loop(root: Path, batch_size: int, epochs: int, workers: int, device: str, deadline: Deadline,
                lr: float = 0.001) -> dict[str, Any]:
    """The course's loop (bench/course_loop.py): training images/s over all epochs and the last one."""
    command = [sys.executable, str(COURSE_LOOP), str(root), "--epochs", str(epochs), "--batch-size", str(batch_size),
               "--lr", str(lr), "--workers", str(workers), "--device", device]
    wall, error, stdout = run_command(command, deadline)
    row: dict[str, Any] = {"wall_s": wall, "error": error, "command": " ".join(command[1:])}
    if error is None:
        figures = json.loads(stdout.strip().splitlines()[-1])
        row.update(img_s=figures["train_images_per_s"], last_epoch_img_s=figures["last_epoch_images_per_s"],
                   best_val_acc=figures["best_val_acc"], device=figures["device"])
    return row


def runner_run(root: Path, batch_size: int, epochs: int, device: str, overrides: list[str], n_train: int,
               deadline: Deadline) -> dict[str, Any]:
    """`python -m runner` once; images/s from its own recorded training time (metrics.csv's train_s per
    epoch: the training steps only, not start-up, data decoding, validation or checkpoints)."""
    with tempfile.TemporaryDirectory(prefix="gpu_bench_run_") as run_dir:
        command = [sys.executable, "-m", "runner", "dataset=miniplaces", f"dataset.root={root}",
                   f"batch_size={batch_size}", f"epochs={epochs}", f"device={device}", "tensorboard=false",
                   "progress=false", *overrides, f"hydra.run.dir={run_dir}"]
        wall, error, _ = run_command(command, deadline)
        row: dict[str, Any] = {"wall_s": wall, "error": error, "command": " ".join(command[1:-1])}
        summary_path = Path(run_dir) / "summary.json"
        if error is None and summary_path.exists():
            summary = json.loads(summary_path.read_text())
            epoch_train_s = list(pd.read_csv(Path(run_dir) / "metrics.csv")["train_s"])
            row.update(img_s=n_train * len(epoch_train_s) / sum(epoch_train_s),
                       last_epoch_img_s=n_train / epoch_train_s[-1], best_val_acc=summary.get("best_val_acc"),
                       run_wall_s=summary.get("wall_s"), compile_s=summary.get("compile_s"),
                       device=summary.get("device"), status=summary.get("status"))
            row.update({field: summary[field] for field in CAPTURE_FIELDS if field in summary})
    return row


def sweep(overrides: list[str], launcher: str, root: Path, device: str, deadline: Deadline,
          study: bool, n_images: int, fuse: str) -> dict[str, Any]:
    """A whole sweep end to end (process start, decoding, every trial, run folders, the collector):
    `bash sweep.sh` (the course study) when `study`, else `python -m runner -m` with `overrides`."""
    with tempfile.TemporaryDirectory(prefix=f"gpu_bench_{launcher}_") as sweep_dir, \
            tempfile.TemporaryDirectory(prefix="gpu_bench_bin_") as bin_dir:
        common = [f"dataset.root={root}", f"device={device}", "tensorboard=false", "progress=false",
                  f"hydra/launcher={launcher}", *(["hydra.launcher.fuse=" + fuse] if launcher == "fused" else [])]
        if study:  # sweep.sh picks its own sweep dir from SWEEP_DIR
            command = ["bash", "sweep.sh", "dataset=miniplaces", *common, *overrides]
        else:
            command = [sys.executable, "-m", "runner", "-m", "dataset=miniplaces", *common, *overrides,
                       f"hydra.sweep.dir={sweep_dir}"]
        env = {"SWEEP_DIR": sweep_dir}
        if study:
            env.update(python_first_on_path(Path(bin_dir)))
        wall, error, _ = run_command(command, deadline, env=env)
        shown = command[1:] if study else command[1:-1]
        row: dict[str, Any] = {"wall_s": wall, "error": error, "command": ("bash " if study else "") + " ".join(shown)}
        results = Path(sweep_dir) / "results.csv"
        if error is None and results.exists():
            table = pd.read_csv(results)
            images = float(table["epochs_done"].sum()) * n_images  # what the sweep delivered
            row.update(trials=len(table), best_val_acc=float(table["best_val_acc"].max()), wall_img_s=images / wall,
                       trial_accs=trial_accuracies(table))
            if not study:
                # A fused trial's train_s is its share of its group's time, so the sum over trials is
                # the time the sweep spent training. (Not for the study: under the fused launcher its
                # 5- and 10-epoch runs reuse the 20-epoch run's first epochs, and their train_s with them.)
                row.update(train_s=float(table["train_s"].sum()), img_s=images / float(table["train_s"].sum()))
    return row


def python_first_on_path(bin_dir: Path) -> dict[str, str]:
    """PATH with `bin_dir/python` first: a script that runs this bench's own interpreter.

    sweep.sh calls `python`, and a machine may have only `python3`. A script, not a symlink: a
    virtual environment's python linked from another folder no longer finds its pyvenv.cfg and
    loses the environment's packages; `exec` by its own path keeps them."""
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    wrapper.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def failures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose command failed; runs skipped or stopped because --budget-s was spent are not failures."""
    return [r for r in rows if r.get("error") and not str(r["error"]).startswith(("skipped:", "timed out:"))]


def trial_accuracies(table: pd.DataFrame) -> str:
    """Each trial's best validation accuracy, by learning rate where the sweep varies it ("0.001: 12.3, ...")."""
    if "lr" not in table.columns:
        return ", ".join(f"{acc:.2f}" for acc in table["best_val_acc"])
    ordered = table.sort_values("lr")
    return ", ".join(f"{lr:.3g}: {acc:.2f}" for lr, acc in zip(ordered["lr"], ordered["best_val_acc"]))
