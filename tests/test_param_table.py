"""Which settings matter, on hand-written folders (no training): param_importance.csv's
correlations are pandas' on the collected table, over config means where there are replicates;
fANOVA's importances pick the key that moves the objective; too little to go on gives one line."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from runner.collect import collect_and_report
from tests.fake_runs import write_fake_replicate_job, write_fake_run

BASE = {"lr": 0.01, "batch_size": 32, "epochs": 3, "model": {"image_size": 32}}


def _grid(sweep):
    """lr x batch_size x model, each config 2 replicates: lr moves accuracy most, batch size a little."""
    job = 0
    for lr in (0.001, 0.01, 0.1):
        for batch_size in (8, 32):
            for model in ("lenet", "cnn5"):
                acc = {0.001: 40.0, 0.01: 70.0, 0.1: 85.0}[lr] + (1.5 if batch_size == 8 else 0.0) \
                    + (2.0 if model == "cnn5" else 0.0) + job % 3 * 0.25
                write_fake_replicate_job(sweep / str(job), {**BASE, "lr": lr, "batch_size": batch_size,
                                                            "model": {"image_size": 32, "name": model}},
                                         [acc - 0.5, acc + 0.5 + job % 2], choices={"model": model})
                job += 1
    (sweep / "multirun.yaml").write_text("{}")


def test_correlations_are_pandas_on_the_collected_table_and_importance_finds_the_key_that_matters(tmp_path):
    _grid(tmp_path)
    collect_and_report([tmp_path])
    table = pd.read_csv(tmp_path / "results.csv")  # the collected table: one row per config, its mean
    params = pd.read_csv(tmp_path / "param_importance.csv", keep_default_na=False, na_values=[""])
    assert len(table) == 12 and set(table["n"]) == {2}
    assert list(params.columns) == ["key", "value", "kind", "importance", "correlation", "configs"]
    assert set(params["configs"]) == {12}
    objective = table["best_val_acc"]
    numbers = params[params["kind"] == "number"].set_index("key")
    assert set(numbers.index) == {"lr", "batch_size"}
    for key in ("lr", "batch_size"):
        assert numbers.loc[key, "correlation"] == pytest.approx(table[key].corr(objective), abs=1e-12)
    categories = params[params["kind"] == "category"].set_index("value")
    assert set(categories["key"]) == {"model"} and set(categories.index) == {"lenet", "cnn5"}
    one_hot = pd.get_dummies(table["model"]).astype(float)
    for model in ("lenet", "cnn5"):
        assert categories.loc[model, "correlation"] == pytest.approx(one_hot[model].corr(objective), abs=1e-12)
    # fANOVA: shares that add up to one; lr explains the most, and the table is sorted by it
    importance = params.drop_duplicates("key").set_index("key")["importance"]
    assert importance.sum() == pytest.approx(1.0) and (importance >= 0).all()
    assert params["key"].iloc[0] == "lr" and importance["lr"] > 0.8
    page = (tmp_path / "report.html").read_text()
    assert "Which settings matter" in page and "fANOVA" in page


def test_a_key_set_in_some_runs_only_is_a_category_with_an_unset_value(tmp_path):
    for job, (activation, acc) in enumerate([(None, 50.0), ("relu", 70.0), ("gelu", 60.0), ("relu", 72.0)]):
        model = {"image_size": 32, **({"activation": activation} if activation else {})}
        write_fake_run(tmp_path / str(job), {**BASE, "lr": 0.01 * (job + 1), "model": model}, acc)
    collect_and_report([tmp_path])
    table = pd.read_csv(tmp_path / "results.csv")
    params = pd.read_csv(tmp_path / "param_importance.csv", keep_default_na=False, na_values=[""])
    rows = params[params["key"] == "model.activation"].set_index("value")
    assert set(rows.index) == {"(unset)", "relu", "gelu"} and set(rows["kind"]) == {"category"}
    labels = table["model.activation"].fillna("(unset)")
    for value in rows.index:
        expected = (labels == value).astype(float).corr(table["best_val_acc"])
        assert rows.loc[value, "correlation"] == pytest.approx(expected, abs=1e-12)
    assert len(set(rows["importance"])) == 1  # the key's share, on each of its values


def test_too_few_configs_or_no_swept_key_gives_one_line_and_no_table(tmp_path, caplog):
    for job in range(2):
        write_fake_run(tmp_path / "two" / str(job), {**BASE, "lr": 0.01 * (job + 1)}, 50.0 + job)
    (tmp_path / "two" / "param_importance.csv").write_text("key\nstale\n")  # an earlier collect's
    with caplog.at_level(logging.INFO, logger="runner.collect"):
        collect_and_report([tmp_path / "two"])
    assert not (tmp_path / "two" / "param_importance.csv").exists()
    lines = [r.getMessage() for r in caplog.records if "parameter table" in r.getMessage()]
    assert lines == ["no parameter table: 2 finished configs, it needs 3"]
    assert "no parameter table: 2 finished configs" in (tmp_path / "two" / "report.html").read_text()
    # three finished runs of one config (the same seed: three separate rows), nothing swept
    for name in ("a", "b", "c"):
        write_fake_run(tmp_path / "same" / name / "0", BASE, 60.0 + len(name))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="runner.collect"):
        table = collect_and_report([tmp_path / "same"])
    assert len(table) == 3 and not (tmp_path / "same" / "param_importance.csv").exists()
    assert [r.getMessage() for r in caplog.records if "parameter table" in r.getMessage()] == [
        "no parameter table: no swept key differs among the finished configs"]


def test_an_objective_that_never_moves_has_no_importance(tmp_path):
    for job, lr in enumerate((0.01, 0.02, 0.05)):
        write_fake_run(tmp_path / str(job), {**BASE, "lr": lr}, 50.0)
    collect_and_report([tmp_path])
    params = pd.read_csv(tmp_path / "param_importance.csv")
    assert list(params["key"]) == ["lr"] and params["importance"].isna().all() and params["correlation"].isna().all()
