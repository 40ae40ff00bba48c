"""The collector's table rules on hand-written run folders: merged keys, empty cells, internal
keys, stable job ids, folders of runs, extra best_* values, nothing written for nothing."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from common.errors import ConfigError
from runner.collect import collect, collect_and_report, markdown_table, results_line
from tests.conftest import run_cli
from tests.fake_runs import write_fake_run

BASE = {"lr": 0.01, "batch_size": 32, "grad_clip": None, "epochs": 3}


def test_a_key_inside_a_swept_group_that_varies_within_one_choice_is_a_column(tmp_path):
    write_fake_run(tmp_path / "lenet" / "0", {**BASE, "model": {"image_size": 32}}, 50.0)
    for job, (act, bn, acc) in enumerate([("relu", True, 70.0), ("relu", False, 60.0), ("gelu", True, 80.0)]):
        write_fake_run(tmp_path / "cnn5" / str(job),
                       {**BASE, "grad_clip": 1.0, "model": {"image_size": 32, "activation": act, "batch_norm": bn}},
                       acc, choices={"model": "cnn5", "scheduler@scheduler.after": "cosine"})
    table = collect([tmp_path / "lenet", tmp_path / "cnn5"])
    assert {"model", "model.activation", "model.batch_norm", "grad_clip", "origin"} <= set(table.columns)
    assert "model.image_size" not in table.columns  # the same everywhere
    assert not [c for c in table.columns if "@" in c]  # Hydra's bookkeeping, not a choice
    assert list(table["job"]) == [0, 0, 1, 2]  # each sweep's own numbers, never renumbered
    assert list(table["origin"]) == [str(tmp_path / "lenet")] + [str(tmp_path / "cnn5")] * 3
    # No two rows read alike: the cnn5 rows differ in their keys, as they do in their accuracies.
    keys = table[["model", "model.activation", "model.batch_norm"]].astype(str)
    assert not keys.duplicated().any()
    # LeNet has no activation and no grad clip: empty cells, not nan/None.
    printed = markdown_table(table)
    assert "nan" not in printed and "None" not in printed
    out = tmp_path / "merged" / "deeper"  # --out is created
    collect_and_report([tmp_path / "lenet", tmp_path / "cnn5"], out)
    row = (out / "results.csv").read_text().splitlines()[1].split(",")
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert row[header.index("model.activation")] == "" and row[header.index("grad_clip")] == ""


def test_any_folder_of_run_folders_is_collected(tmp_path):
    runs = tmp_path / "outputs" / "runs"
    for name, acc in [("2026-01-02_10-00-00", 40.0), ("2026-01-01_09-00-00", 30.0)]:
        write_fake_run(runs / name, {**BASE, "lr": acc / 1000}, acc)
    sweep = tmp_path / "outputs" / "multirun" / "2026-01-03_08-00-00"
    for job in (1, 0, 10, 2):  # launch order is numeric, not alphabetical
        write_fake_run(sweep / str(job), {**BASE, "batch_size": 8 * (job + 1)}, 10.0 + job)
    (sweep / "multirun.yaml").write_text("{}")
    assert list(collect([runs])["job"]) == ["2026-01-01_09-00-00", "2026-01-02_10-00-00"]
    table = collect([tmp_path / "outputs"])  # nested: a sweep and single runs, folders by name
    assert list(table["job"]) == [0, 1, 2, 10, "2026-01-01_09-00-00", "2026-01-02_10-00-00"]
    assert set(table["origin"]) == {str(sweep), str(runs)}


def test_other_best_values_in_a_summary_and_pruned_lines(tmp_path):
    write_fake_run(tmp_path / "0", BASE, 50.0, best_val_robust_acc=31.5)
    write_fake_run(tmp_path / "1", {**BASE, "lr": 0.1}, 12.345, status="pruned")
    table = collect([tmp_path])
    assert list(table.columns).index("best_val_robust_acc") == list(table.columns).index("best_val_acc") + 1
    assert table["best_val_robust_acc"][0] == 31.5 and pd.isna(table["best_val_robust_acc"][1])
    assert [results_line(r) for _, r in table.iterrows()] == ["50.00", "12.35 pruned"]
    assert "epochs_done" in table.columns


def test_nothing_to_collect_writes_nothing(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no run folders"):
        collect_and_report([tmp_path])
    assert list(tmp_path.iterdir()) == []
    proc = run_cli(str(tmp_path), module="runner.collect")
    assert proc.returncode == 2 and list(tmp_path.iterdir()) == []
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: no run folders under")
    assert "Traceback" not in proc.stderr


def test_a_grid_with_a_typo_leaves_no_tables(tmp_path):
    proc = run_cli("-m", "model=lenet,lenett", "epochs=1", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode != 0
    assert not (tmp_path / "results.txt").exists() and not (tmp_path / "results.csv").exists()
    # refused before any job runs: one line naming the typo and the options
    assert proc.stderr.strip().splitlines() == [
        "error: Could not find 'model/lenett'; pick one of: cnn5, custom_conv, lenet, resnet18_finetune, resnet50, "
        "simplenet, simplevit"]
    assert not any(tmp_path.iterdir())


def test_best_json_of_a_grid_names_the_best_run_and_the_command(tmp_path):
    write_fake_run(tmp_path / "0", BASE, 50.0, overrides=["lr=0.01", "epochs=3"])
    write_fake_run(tmp_path / "1", {**BASE, "lr": 0.05}, 70.0, overrides=["lr=0.05", "epochs=3", "resume=/x/c.pth.tar"])
    write_fake_run(tmp_path / "2", {**BASE, "lr": 0.5}, 90.0, status="diverged", overrides=["lr=0.5", "epochs=3"])
    collect_and_report([tmp_path])
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["best_job_num"] == 1 and best["best_value"] == 70.0  # a completed run beats a diverged one
    assert best["best_params"] == {"lr": 0.05}
    assert best["best_run_dir"] == str((tmp_path / "1").resolve())
    assert best["best_overrides"] == ["lr=0.05", "epochs=3"]  # resume= says how it ran, not what it trains
    assert best["command"] == "python -m runner lr=0.05 epochs=3"
    assert best["statuses"] == {"completed": 2, "diverged": 1}


def test_a_searchs_best_json_has_the_grids_fields(tmp_path):
    import optuna

    from runner.optuna_report import best_summary

    run = write_fake_run(tmp_path / "0", BASE, 50.0, overrides=["lr=0.01", "hparams_search=lenet_optuna"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    trial.set_user_attr("run_dir", str(run))
    trial.set_user_attr("job_num", 0)
    study.tell(trial, 50.0)
    search = best_summary(study)
    collect_and_report([tmp_path])
    grid = json.loads((tmp_path / "best.json").read_text())
    shared = {"metric", "direction", "best_value", "best_params", "best_job_num", "best_run_dir", "best_status",
              "best_overrides", "command", "statuses"}
    assert shared <= set(search) and shared <= set(grid)
    assert search["command"] == grid["command"] == "python -m runner lr=0.01 hparams_search=lenet_optuna"


def test_best_json_follows_the_runs_objective(tmp_path):
    """A grid run with objective=val_robust_acc is judged (and its best.json named) by that metric."""
    robust = {**BASE, "objective": "val_robust_acc"}
    write_fake_run(tmp_path / "0", {**robust, "lr": 0.01}, 90.0, best_val_robust_acc=20.0)
    write_fake_run(tmp_path / "1", {**robust, "lr": 0.05}, 80.0, best_val_robust_acc=45.0)
    collect_and_report([tmp_path])
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["metric"] == "best_val_robust_acc" and best["best_value"] == 45.0
    assert best["best_params"] == {"lr": 0.05}
