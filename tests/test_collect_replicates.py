"""Tables that say how sure they are, on hand-written folders (no training): a `replicates=N` job
is one row whose mean, std and n come from its replicate folders; a plain `-m seed=0,1,2` grid
groups the same way; best.json's verdicts are Welch's test's; the pictures draw the spread."""

from __future__ import annotations

import json
import logging
import statistics

import pandas as pd
import pytest
from scipy.stats import ttest_ind

from runner.collect import collect_and_report
from runner.sweep.job_records import count_jobs
from tests.fake_runs import write_fake_replicate_job, write_fake_run

BASE = {"lr": 0.01, "batch_size": 32, "epochs": 3, "model": {"image_size": 32}}


def _replicate_values(job_dir):
    """(completed values, others' statuses) read straight from a job's replicate folders."""
    values, others = [], []
    for folder in sorted(job_dir.glob("replicate_*"), key=lambda p: int(p.name.split("_")[1])):
        summary = json.loads((folder / "summary.json").read_text())
        if summary["status"] == "completed":
            values.append(summary["best_val_acc"])
        else:
            others.append(summary["status"])
    return values, others


def test_a_replicate_job_is_one_row_with_the_mean_and_std_of_its_replicate_folders(tmp_path):
    sweep = tmp_path / "sweep"
    write_fake_replicate_job(sweep / "0", BASE, [71.25, 74.5, 69.0], seed=0)
    write_fake_replicate_job(sweep / "1", {**BASE, "lr": 0.05}, [80.0, 77.75, 82.5, 79.0], seed=0)
    (sweep / "multirun.yaml").write_text("{}")
    collect_and_report([sweep])
    table = pd.read_csv(sweep / "results.csv")
    assert len(table) == 2 and list(table["job"]) == [0, 1]  # the replicate folders are no rows of their own
    assert list(table["run_dir"]) == [str(sweep / "0"), str(sweep / "1")]
    assert "seed" not in table.columns and "replicates" not in table.columns
    for _, row in table.iterrows():
        job = sweep / str(row["job"])
        values, _ = _replicate_values(job)
        assert row["best_val_acc"] == pytest.approx(statistics.mean(values), abs=1e-12)
        assert row["best_val_acc_std"] == pytest.approx(statistics.stdev(values), abs=1e-12)  # ddof=1
        assert row["n"] == len(values) and row["n_failed"] == 0
        assert json.loads(row["values"]) == values and json.loads(row["seeds"]) == list(range(len(values)))
        assert json.loads(row["replicate_dirs"]) == [str(job / f"replicate_{k}") for k in range(len(values))]
        summary = json.loads((job / "summary.json").read_text())  # the job's own word agrees
        assert row["best_val_acc"] == pytest.approx(summary["best_val_acc"])
        assert row["best_val_acc_std"] == pytest.approx(summary["replicates"]["std"])
        assert row["n"] == summary["replicates"]["n"]
    # the course format: one number per config, the mean
    assert (sweep / "results.txt").read_text() == "".join(f"{v:.2f}\n" for v in table["best_val_acc"])
    assert sum(count_jobs(sweep).values()) == 2


def test_a_diverged_or_failed_replicate_is_left_out_of_the_mean_and_counted(tmp_path):
    job = write_fake_replicate_job(tmp_path / "0", BASE, [70.0, 12.5, 74.0, None, 72.0],
                                   statuses=["completed", "diverged", "completed", "failed", "completed"])
    table = collect_and_report([tmp_path / "0"], tmp_path / "out")
    row = table.iloc[0]
    values, others = _replicate_values(job)
    assert values == [70.0, 74.0, 72.0] and others == ["diverged", "failed"]
    assert row["best_val_acc"] == pytest.approx(72.0) and row["best_val_acc_std"] == pytest.approx(2.0)
    assert (row["n"], row["n_failed"], row["status"]) == (3, 2, "completed")
    assert row["values"] == values and row["seeds"] == [0, 2, 4]  # the counted replicates' seeds
    best = json.loads((tmp_path / "out" / "best.json").read_text())
    assert (best["best_value"], best["best_n"], best["best_n_failed"]) == (72.0, 3, 2)
    # every replicate diverged: nothing counted, the values they reached shown as one diverged run's
    write_fake_replicate_job(tmp_path / "1", BASE, [10.0, 20.0], statuses=["diverged", "diverged"])
    row = collect_and_report([tmp_path / "1"], tmp_path / "out1").iloc[0]
    assert (row["n"], row["n_failed"], row["status"], row["best_val_acc"]) == (0, 2, "diverged", 15.0)
    assert (tmp_path / "out1" / "results.txt").read_text() == "15.00 diverged\n"


def test_a_job_summary_that_disagrees_with_its_folders_is_named(tmp_path, caplog):
    write_fake_replicate_job(tmp_path / "0", BASE, [70.0, 74.0], job_mean=99.0)
    with caplog.at_level(logging.WARNING, logger="runner.collect"):
        table = collect_and_report([tmp_path], tmp_path / "out")
    assert table.iloc[0]["best_val_acc"] == 72.0  # the folders' mean
    assert any("0/summary.json" in r.getMessage() and "replicate folders' mean" in r.getMessage()
               for r in caplog.records)


def _seed_grid(sweep, accs):
    """`-m seed=0,1,2 lr=0.01,0.05` as Hydra numbers its jobs (the last key changes fastest)."""
    job = 0
    for seed in (0, 1, 2):
        for lr in (0.01, 0.05):
            write_fake_run(sweep / str(job), {**BASE, "lr": lr, "seed": seed, "progress": "auto" if job else False},
                           accs[lr][seed], val_accs=[accs[lr][seed] - 5.0 * seed, accs[lr][seed]],
                           overrides=[f"seed={seed}", f"lr={lr}"], recorded=[f"seed={seed}", f"lr={lr}"])
            job += 1
    (sweep / "multirun.yaml").write_text("{}")


def test_a_plain_seed_grid_groups_into_one_row_per_config(tmp_path):
    accs = {0.01: [60.0, 64.0, 65.0], 0.05: [80.0, 83.0, 81.5]}
    _seed_grid(tmp_path / "sweep", accs)
    table = collect_and_report([tmp_path / "sweep"])
    assert list(table["lr"]) == [0.01, 0.05] and "seed" not in table.columns  # progress never changes a result
    assert list(table["job"]) == [0, 1]
    for _, row in table.iterrows():
        assert row["values"] == accs[row["lr"]] and row["seeds"] == [0, 1, 2] and row["n"] == 3
        assert row["best_val_acc"] == pytest.approx(statistics.mean(accs[row["lr"]]))
        assert row["best_val_acc_std"] == pytest.approx(statistics.stdev(accs[row["lr"]]))
    assert (tmp_path / "sweep" / "results.txt").read_text() == "63.00\n81.50\n"
    assert "±" in (tmp_path / "sweep" / "report.html").read_text()
    # the same seeds again (a second copy of the sweep merged in): the same runs, not new replicates
    _seed_grid(tmp_path / "copy", accs)
    merged = collect_and_report([tmp_path / "sweep", tmp_path / "copy"], tmp_path / "merged")
    assert list(merged["n"]) == [3, 3, 3, 3]


def test_a_plain_grid_without_repeated_configs_looks_as_before(tmp_path):
    for job, lr in enumerate((0.01, 0.05, 0.1)):
        write_fake_run(tmp_path / str(job), {**BASE, "lr": lr, "seed": job}, 50.0 + job)
    table = collect_and_report([tmp_path])
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert header == ["job", "lr", "seed", "best_val_acc", "best_epoch", "epochs_done", "status", "train_s", "val_s",
                      "wall_s", "params_m", "error", "run_dir"]
    best = json.loads((tmp_path / "best.json").read_text())
    assert "not_distinguishable" not in best and "best_std" not in best and len(table) == 3


def test_best_json_names_the_best_mean_and_welch_test_decides_the_rest(tmp_path):
    configs = {0.01: [80.0, 81.0, 82.5], 0.02: [79.0, 80.5, 81.0], 0.03: [60.0, 61.0, 62.0],
               0.04: [70.0], 0.05: [81.5, 77.0, 79.5, 80.5]}
    for job, (lr, values) in enumerate(configs.items()):
        write_fake_replicate_job(tmp_path / str(job), {**BASE, "lr": lr}, values)
    write_fake_replicate_job(tmp_path / "5", {**BASE, "lr": 0.06}, [5.0, 6.0], statuses=["diverged"] * 2)
    collect_and_report([tmp_path])
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["best_params"] == {"lr": 0.01} and best["best_value"] == pytest.approx(statistics.mean(configs[0.01]))
    assert best["best_values"] == configs[0.01] and best["best_n"] == 3
    assert best["best_run_dirs"] == [str(tmp_path / "0" / f"replicate_{k}") for k in range(3)]
    verdicts = {e["params"]["lr"]: (name, e["p_value"])
                for name in ("not_distinguishable", "worse", "not_enough_replicates") for e in best[name]}
    assert set(verdicts) == {0.02, 0.03, 0.04, 0.05}  # the all-diverged config is not compared
    for lr in (0.02, 0.03, 0.05):
        p = ttest_ind(configs[0.01], configs[lr], equal_var=False).pvalue
        assert verdicts[lr] == ("worse" if p < 0.05 else "not_distinguishable", pytest.approx(p))
    assert verdicts[0.03][0] == "worse" and verdicts[0.02][0] == "not_distinguishable"
    assert verdicts[0.04] == ("not_enough_replicates", None)
    assert (best["configs"], best["runs"]) == (6, 16)
    report = (tmp_path / "report.html").read_text()
    assert "Not distinguishable from it" in report and "n=3" in report


def test_the_pictures_draw_error_bars_and_bands(tmp_path):
    from matplotlib.collections import PolyCollection
    from matplotlib.container import ErrorbarContainer

    from runner.collect import key_columns
    from runner.results.plots import accuracy_by_param_figure, curves_figure

    _seed_grid(tmp_path, {0.01: [60.0, 64.0, 65.0], 0.05: [80.0, 83.0, 81.5]})
    table = collect_and_report([tmp_path])
    ax = accuracy_by_param_figure(table, key_columns(table)).axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1
    segments = bars[0].lines[2][0].get_segments()
    spans = sorted(round(abs(s[1][1] - s[0][1]) / 2, 9) for s in segments)
    assert spans == sorted(round(v, 9) for v in table["best_val_acc_std"])
    ax = curves_figure(table, key_columns(table)).axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # one ± std band per config
    best_line = max(ax.get_lines(), key=lambda line: line.get_linewidth())
    assert list(best_line.get_ydata()) == pytest.approx([statistics.mean([80.0, 78.0, 71.5]), 81.5])


def test_an_optuna_studys_best_json_keeps_its_fields_and_gains_the_spread(tmp_path):
    write_fake_replicate_job(tmp_path / "0", BASE, [70.0, 74.0, 72.0])
    write_fake_replicate_job(tmp_path / "1", {**BASE, "lr": 0.05}, [60.0, 61.0, 62.5])
    study = {"study_name": "lenet_digits", "metric": "best_val_acc", "best_value": 72.0,
             "best_run_dir": str(tmp_path / "0"), "best_job_num": 0, "trials": {"COMPLETE": 2}}
    (tmp_path / "best.json").write_text(json.dumps(study))
    collect_and_report([tmp_path])
    best = json.loads((tmp_path / "best.json").read_text())
    assert {k: best[k] for k in study} == study  # the study's own record, as it wrote it
    assert best["best_values"] == [70.0, 74.0, 72.0] and best["best_std"] == pytest.approx(2.0)
    assert [e["job"] for e in best["worse"]] == [1]
