#!/usr/bin/env python3
"""The runner on a GPU against the course's loop, and the fused launcher against the basic one, in one run.

    python bench/gpu.py --out DIR [--only throughput,ablation,resnet,study,grid] [--train-per-class 1000]
                        [--val-per-class 100] [--epochs 2] [--batch-sizes 8 32 128] [--device auto]
                        [--budget-s SECONDS] [runner overrides for every run ...]

On MiniPlaces-shaped data (bench/make_data.py; 100 classes, 1,000 + 100 images a class by default:
100k/10k, written once under bench/data/), LeNet unless said otherwise. Pieces (--only):
  throughput  training images/s at each --batch-sizes: the course loop (bench/course_loop.py)
              with --course-workers 0 and 8, the runner eager (compute.cuda_graph=false) and
              captured (compute.cuda_graph=true)
  ablation    the runner at batch 32, one compute switch changed at a time, eager and captured
  resnet      ResNet-50 at 32 px, batch 128, eager against captured
  study       `bash sweep.sh dataset=miniplaces ...` end to end, basic launcher against fused
  grid        a --grid-points learning-rate grid at batch 32, basic launcher against fused
Images/s are the runner's own recorded training time (metrics.csv's train_s: training steps
only, not start-up, decoding or validation) and the course loop's timed epochs; wall_s is the
whole command. Ratios use the last epoch's images/s (steady state: epoch 1 also holds cuDNN
autotuning and graph capture), against the course loop with no workers at the same batch size
(vs_course), and against each row's `baseline` row (ratio); sweeps compare wall times against
the basic launcher. Prints a table and writes figures.json, figures.csv and table.md to --out
after every measurement, so a command stopped part-way still leaves what it measured. Exits 1
when any run failed (one `error:` line naming the first), after writing the rest.
bench/gpu_check.sh runs every GPU check in one command (bench/gpu_check.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))  # a script's folder is on the path, but not when imported
sys.path.insert(1, str(REPO))

import course_loop  # noqa: E402
from gpu_runs import CAPTURE_FIELDS, Deadline, course_loop as run_course_loop, failures, runner_run, sweep  # noqa: E402
from make_data import ensure_miniplaces, fail  # noqa: E402

from common.io import atomic_write_json, atomic_write_text  # noqa: E402

PIECES = ("throughput", "ablation", "resnet", "study", "grid")
ABLATION = [("defaults", []), ("compute.amp=false", ["compute.amp=false"]),
            ("compute.channels_last=false", ["compute.channels_last=false"]),
            ("compute.data_on_device=false", ["compute.data_on_device=false"]),
            ("compute.compile=true", ["compute.compile=true"]),
            ("compute.cudnn_benchmark=false", ["compute.cudnn_benchmark=false"])]
COURSE_W0 = "course loop, workers 0"
COLUMNS = ["piece", "label", "batch", "img_s", "last_epoch_img_s", "vs_course", "ratio", "baseline", "wall_s",
           "wall_img_s", "best_val_acc", "acc_diff", "trial_accs", *CAPTURE_FIELDS, "compile_s", "error"]


class Bench:
    """The rows measured so far, written to --out after each one."""

    def __init__(self, args: argparse.Namespace, root: Path, n_train: int, extra: list[str]) -> None:
        self.args, self.root, self.n_train, self.extra = args, root, n_train, extra
        self.deadline = Deadline(args.budget_s)
        self.rows: list[dict[str, Any]] = []
        self.meta = environment(args, root, n_train, extra)
        self.cuda = bool(self.meta["cuda"]) and args.device != "cpu"

    def paths(self) -> dict[str, list[str] | None]:
        """Overrides for the eager and the captured step; captured is None without a GPU
        (compute.cuda_graph=true refuses a CPU)."""
        return {"eager": ["compute.cuda_graph=false"], "captured": ["compute.cuda_graph=true"] if self.cuda else None}

    def add(self, piece: str, label: str, batch: int | None, row: dict[str, Any], baseline: str | None = None) -> None:
        self.rows.append({"piece": piece, "label": label, "batch": batch, "baseline": baseline, **row})
        add_ratios(self.rows)
        shown = {k: v for k, v in self.rows[-1].items() if k in COLUMNS and v is not None}
        print(format_row(shown), flush=True)
        self.write()

    def write(self) -> None:
        out: Path = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "figures.json", {"meta": self.meta, "rows": self.rows})
        frame = pd.DataFrame(self.rows)
        atomic_write_text(out / "figures.csv", frame.to_csv(index=False))
        atomic_write_text(out / "table.md", table(self.rows) + "\n")

    def course(self, batch: int, workers: int) -> None:
        row = run_course_loop(self.root, batch, self.args.epochs, workers, self.args.device, self.deadline)
        self.add("throughput", f"course loop, workers {workers}", batch, row,
                 baseline=None if workers == 0 else COURSE_W0)

    def runner(self, piece: str, label: str, batch: int, overrides: list[str], baseline: str | None = None) -> None:
        row = runner_run(self.root, batch, self.args.epochs, self.args.device, [*overrides, *self.extra],
                         self.n_train, self.deadline)
        self.add(piece, label, batch, row, baseline)


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """vs_course: last-epoch images/s over the course loop's (workers 0, same batch); ratio: over the
    row's baseline (images/s), or for sweeps the baseline's wall time over this row's; acc_diff: best
    validation accuracy minus the baseline's, in points (not yet measured on a GPU)."""
    by_label = {(r["label"], r["batch"]): r for r in rows if r.get("error") is None}
    for row in rows:
        if row.get("error") is not None:
            continue
        course = by_label.get((COURSE_W0, row["batch"]))
        if row["piece"] in ("throughput", "ablation") and course and row.get("last_epoch_img_s"):
            row["vs_course"] = row["last_epoch_img_s"] / course["last_epoch_img_s"]
        base = by_label.get((row["baseline"], row["batch"])) if row.get("baseline") else None
        if base is None:
            continue
        if row.get("best_val_acc") is not None and base.get("best_val_acc") is not None:
            row["acc_diff"] = row["best_val_acc"] - base["best_val_acc"]
        if row["piece"] in ("study", "grid"):
            row["ratio"] = base["wall_s"] / row["wall_s"]
        elif row.get("last_epoch_img_s") and base.get("last_epoch_img_s"):
            row["ratio"] = row["last_epoch_img_s"] / base["last_epoch_img_s"]


def format_row(row: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: ratios as 1.23x, images/s and seconds with thousands separators, blanks for missing."""
    frame = pd.DataFrame(rows)
    frame = frame[[c for c in COLUMNS if c in frame.columns]].astype(object)

    def cell(column: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        if column in ("vs_course", "ratio"):
            return f"{value:.2f}x"
        if column == "batch":
            return str(int(value))
        if column == "step_check_update":
            return f"{value:.2g}"
        if isinstance(value, float):
            return f"{value:,.0f}" if column.endswith("img_s") else f"{value:,.2f}"
        return str(value)

    for column in frame.columns:
        frame[column] = [cell(column, v) for v in frame[column]]
    return frame.to_markdown(index=False, disable_numparse=True)


def environment(args: argparse.Namespace, root: Path, n_train: int, extra: list[str]) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    return {"command": " ".join(sys.argv), "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "torch": torch.__version__, "cuda": cuda, "gpu": torch.cuda.get_device_name() if cuda else None,
            "cpus": os.cpu_count(), "machine": platform.platform(), "commit": commit.strip() or None,
            "data": str(root), "train_images": n_train, "epochs": args.epochs, "extra_overrides": extra}


def warm_caches(bench: Bench) -> None:
    """Decode both loops' image caches before anything is timed (each decodes once per data set)."""
    started = time.perf_counter()
    course_loop.load_split(bench.root, "train")
    course_loop.load_split(bench.root, "val")
    if not any((bench.root / ".sweep_runner_cache").glob("miniplaces_32px_*")):
        runner_run(bench.root, 128, 1, bench.args.device, bench.extra, bench.n_train, bench.deadline)
    print(f"decode caches ready in {time.perf_counter() - started:.1f} s", flush=True)


def throughput(bench: Bench) -> None:
    for batch in bench.args.batch_sizes:
        for workers in bench.args.course_workers:
            bench.course(batch, workers)
        for path, overrides in bench.paths().items():
            if overrides is not None:
                # vs_course compares every row with the course loop; `ratio` puts captured against eager
                bench.runner("throughput", f"runner {path}", batch, overrides,
                             baseline="runner eager" if path == "captured" else None)


def ablation(bench: Bench, batch: int = 32) -> None:
    if not any(r["label"] == COURSE_W0 and r["batch"] == batch for r in bench.rows):
        bench.course(batch, 0)  # the reference this invocation's figures are a ratio against
    for path, path_overrides in bench.paths().items():
        if path_overrides is None:
            continue
        for name, overrides in ABLATION:
            bench.runner("ablation", f"{path}: {name}", batch, [*path_overrides, *overrides],
                         baseline=None if name == "defaults" else f"{path}: defaults")


def resnet(bench: Bench) -> None:
    model = bench.args.resnet_model  # resnet50; bench/gpu_check.sh --tiny swaps in a small one on a CPU
    name = "ResNet-50" if model == "resnet50" else model
    for path, overrides in bench.paths().items():
        if overrides is not None:
            bench.runner("resnet", f"{name} 32px {path}", bench.args.resnet_batch,
                         [f"model={model}", "dataset.image_size=32", *overrides],
                         baseline=None if path != "captured" else f"{name} 32px eager")


def sweeps(bench: Bench, study: bool) -> None:
    args = bench.args
    if study:
        piece, name, batch, overrides = "study", "sweep.sh (course study)", None, []
    else:
        grid = ",".join(f"{lr:.4g}" for lr in np.geomspace(0.001, 0.1, args.grid_points))
        piece, name, batch = "grid", f"{args.grid_points}-point lr grid", args.grid_batch
        overrides = [f"lr={grid}", f"batch_size={batch}", f"epochs={args.grid_epochs}"]
    # Fused first: it is the short one, so a budget spent on the basic launcher still leaves its figure.
    for launcher in ("fused", "basic"):
        row = sweep([*overrides, *bench.extra], launcher, bench.root, args.device, bench.deadline, study,
                    bench.n_train, args.fuse)
        bench.add(piece, f"{name}, {launcher} launcher", batch, row,
                  baseline=None if launcher == "basic" else f"{name}, basic launcher")


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for figures.json, figures.csv, table.md")
    parser.add_argument("--only", default=",".join(PIECES), help=f"comma-separated pieces: {','.join(PIECES)}")
    parser.add_argument("--root", type=Path, default=None, help="data set folder (default: bench/data/...)")
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2, help="per run (throughput, ablation, resnet)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--course-workers", type=int, nargs="+", default=[0, 8])
    parser.add_argument("--resnet-batch", type=int, default=128)
    parser.add_argument("--resnet-model", default="resnet50", help="the resnet piece's model (conf/model)")
    parser.add_argument("--grid-points", type=int, default=16)
    parser.add_argument("--grid-batch", type=int, default=32)
    parser.add_argument("--grid-epochs", type=int, default=1)
    parser.add_argument("--fuse", default="auto", choices=["auto", "true", "false"], help="hydra.launcher.fuse")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N, for every run")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="stop starting runs after this many seconds (a GPU command has 600)")
    args, extra = parser.parse_known_args()
    pieces = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in pieces if p not in PIECES]
    if unknown or not pieces:
        fail(f"--only {args.only}: pick from {','.join(PIECES)}")
    if 0 not in args.course_workers and {"throughput", "ablation"} & set(pieces):
        fail("--course-workers must include 0: the course loop with no workers is what ratios are against")
    if min(args.epochs, args.train_per_class, args.val_per_class, args.grid_points, *args.batch_sizes) < 1:
        fail("--epochs, --train-per-class, --val-per-class, --grid-points and --batch-sizes must be at least 1")
    unknown_flags = [e for e in extra if e.startswith("-")]
    if unknown_flags:
        fail(f"unknown option {unknown_flags[0]}; runner overrides look like key=value")
    args.pieces = pieces
    return args, extra


def main() -> None:
    args, extra = parse_args()
    root = (args.root or REPO / "bench" / "data" / f"miniplaces_{args.train_per_class}x{args.val_per_class}").absolute()
    n_train, n_val = ensure_miniplaces(root, args.train_per_class, args.val_per_class)
    bench = Bench(args, root, n_train, extra)
    meta = bench.meta
    print(f"{n_train} train / {n_val} val images under {root}; torch {meta['torch']}, {meta['cpus']} CPUs, "
          f"GPU: {meta['gpu'] or 'none'}; pieces: {','.join(args.pieces)}", flush=True)
    if not bench.cuda:
        print("note: no GPU, so the captured rows (compute.cuda_graph=true) are skipped", flush=True)
    warm_caches(bench)
    for piece in args.pieces:
        print(f"\n== {piece}", flush=True)
        if piece in ("study", "grid"):
            sweeps(bench, study=piece == "study")
        else:
            {"throughput": throughput, "ablation": ablation, "resnet": resnet}[piece](bench)
    bench.write()
    print(f"\n{table(bench.rows)}\n\nfigures: {args.out / 'figures.json'}, {args.out / 'figures.csv'}, "
          f"{args.out / 'table.md'}")
    failed = failures(bench.rows)
    if failed:  # the figures above stand; the exit status says that some are missing
        print(f"error: {len(failed)} of {len(bench.rows)} runs failed; the first, {failed[0]['label']}: "
              f"{failed[0]['error']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
