"""The run folder's statuses and file names have one home (runner/record/run_folder.py), and a run writes them."""

from __future__ import annotations

import ast
import json

from runner.search.storage import mark_interrupted
from runner.record.run_folder import (BEST_CHECKPOINT_FILE, CHECKPOINT_FILE, CONFIG_FILE, CURVES_FILE, HYDRA_DIR, HYDRA_FILE,
                               METRICS_FILE, OVERRIDES_FILE, SUMMARY_FILE, RunFolder, Status, read_summary,
                               record_interrupted)
from tests.conftest import ROOT, run_cli

EXCLUDED = {"runner/record/run_folder.py"}  # their home
# Words that are also statuses in another vocabulary: the CUDA-graph step self-check's verdict.
OTHER_VOCABULARIES = {("runner/capture/check.py", "failed")}
# "tensorboard" is left out: it is also a config key.
FILE_NAMES = {SUMMARY_FILE, METRICS_FILE, CONFIG_FILE, CURVES_FILE, CHECKPOINT_FILE, BEST_CHECKPOINT_FILE,
              HYDRA_DIR, HYDRA_FILE, OVERRIDES_FILE}
STATUS_VALUES = {str(s) for s in Status}


def spelled_out(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string literal that is a run status or a run folder's file name, docstrings aside."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and (node.value in STATUS_VALUES or node.value in FILE_NAMES)]


def test_a_run_records_status_values_and_file_names(tmp_path):
    assert [str(s) for s in Status] == ["running", "completed", "diverged", "failed", "interrupted", "pruned", "refused"]
    run_dir = tmp_path / "run"
    proc = run_cli("epochs=1", "tensorboard=false", "progress=false", "compute.threads=1", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    assert summary["status"] == Status.COMPLETED and Status(summary["status"]) is Status.COMPLETED
    assert read_summary(run_dir) == summary
    for name in (METRICS_FILE, CONFIG_FILE, CURVES_FILE, CHECKPOINT_FILE, BEST_CHECKPOINT_FILE):
        assert (run_dir / name).is_file(), name
    assert (run_dir / HYDRA_DIR / OVERRIDES_FILE).is_file() and (run_dir / HYDRA_DIR / HYDRA_FILE).is_file()


def test_record_interrupted_keeps_the_summary_and_says_why(tmp_path):
    folder = RunFolder(tmp_path / "run", tensorboard=False)
    folder.write_summary({"status": Status.RUNNING, "best_val_acc": 61.5, "best_epoch": 2, "epochs_done": 3,
                          "job_num": 4, "train_s": float("nan")})
    record_interrupted(folder.path, "its sweeper stopped")
    after = json.loads((folder.path / SUMMARY_FILE).read_text())
    assert after == {"status": "interrupted", "best_val_acc": 61.5, "best_epoch": 2, "epochs_done": 3, "job_num": 4,
                     "train_s": None, "error": "its sweeper stopped"}
    assert sorted(p.name for p in folder.path.iterdir()) == [SUMMARY_FILE]  # written whole, no temporary left


def test_mark_interrupted_goes_through_the_run_folder(tmp_path):
    """A killed job is marked interrupted: with no summary, with what metrics.csv shows; a stale `running`
    summary keeps its fields; a job that wrote its own ending is left alone."""
    bare, stale, ended = (RunFolder(tmp_path / name, tensorboard=False) for name in ("bare", "stale", "ended"))
    bare.write_metrics([{"epoch": 1, "val_acc": 40.0}, {"epoch": 2, "val_acc": 55.0}])
    stale.write_summary({"status": Status.RUNNING, "best_val_acc": None, "job_num": 7})
    ended.write_summary({"status": Status.PRUNED, "best_val_acc": 12.0})
    for folder in (bare, stale, ended):
        mark_interrupted(folder.path, "its worker was killed")
    summary = read_summary(bare.path)
    assert summary is not None and (summary["status"], summary["error"]) == ("interrupted", "its worker was killed")
    assert (summary["epochs_done"], summary["best_val_acc"], summary["best_epoch"]) == (2, 55.0, 2)
    assert read_summary(stale.path) == {"status": "interrupted", "best_val_acc": None, "job_num": 7,
                                        "error": "its worker was killed"}
    assert read_summary(ended.path) == {"status": "pruned", "best_val_acc": 12.0}


def test_the_check_finds_spelled_out_statuses_and_file_names():
    source = ('"""summary.json says completed."""\n'
              'def f(s, d):\n    """failed"""\n    return s["status"] == "failed" or (d / "metrics.csv").exists()\n'
              'X = ("pruned", "replicate_0", "tensorboard")\n')
    assert sorted(spelled_out(source)) == [(4, "failed"), (4, "metrics.csv"), (5, "pruned")]


def test_no_module_spells_out_a_status_or_a_run_folder_file_name():
    """Statuses and run-folder file names are runner/record/run_folder.py's: every other module imports them."""
    found = []
    for package in ("runner", "hydra_plugins"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name not in EXCLUDED:
                found += [f"{name}:{line}: {text!r}" for line, text in spelled_out(path.read_text())
                          if (name, text) not in OTHER_VOCABULARIES]
    assert found == [], "use runner.record.run_folder's Status and file-name constants:\n" + "\n".join(found)


def test_a_run_recorded_before_a_class_moved_is_reused_resumed_and_collected(make_cfg, tmp_path):
    """An older run names the warm-up scheduler by its old path: a re-run reuses it, `resume=`
    continues it, and the collector shows the class as named today."""
    import torch
    import yaml

    from runner.config.moved import MOVED_TARGETS
    from runner.results.read import read_config as collected_config
    from runner.run.train import train
    from runner.sweep.rerun import prepare_run_folder

    old_name = next(old for old, new in MOVED_TARGETS.items() if new.endswith("LinearWarmup"))
    overrides = ("epochs=2", "scheduler=warmup", "tensorboard=false")
    run_dir = tmp_path / "old"
    train(make_cfg(*overrides), run_dir)
    config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    config["scheduler"]["_target_"] = old_name  # as the run was recorded before the move
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    state = torch.load(run_dir / CHECKPOINT_FILE, weights_only=True)
    state["config"]["scheduler"]["_target_"] = old_name
    torch.save(state, run_dir / CHECKPOINT_FILE)

    reused = prepare_run_folder(make_cfg(*overrides), run_dir)
    assert reused is not None and reused["status"] == Status.COMPLETED
    assert collected_config(run_dir)["scheduler._target_"] == MOVED_TARGETS[old_name]
    # the warm-up's length follows epochs, so the resumed run keeps them: it rebuilds and loads everything
    resumed = train(make_cfg(*overrides, f"resume={run_dir / CHECKPOINT_FILE}"), tmp_path / "resumed")
    assert resumed["status"] == Status.COMPLETED and resumed["best_val_acc"] == reused["best_val_acc"]
