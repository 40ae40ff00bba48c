"""End to end through the CLI: a LeNet grid and a cnn5 grid, merged into one table that still
tells every run apart, with best.json, the plots and the HTML report beside it."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    grids = {"lenet": ["model=lenet", "lr=0.01,0.05"],
             "cnn5": ["model=cnn5", "model.activation=relu,gelu", "model.batch_norm=true,false", "grad_clip=1.0"]}
    for name, overrides in grids.items():
        proc = run_cli("-m", *overrides, "epochs=1", "tensorboard=false", f"hydra.sweep.dir={root / name}", timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
    out = root / "tables" / "both"  # does not exist yet
    proc = run_cli(str(root / "lenet"), str(root / "cnn5"), "--out", str(out), module="runner.collect")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root, out, proc


def test_the_merged_table_keeps_every_distinguishing_key(merged):
    root, out, proc = merged
    table = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert list(table["job"]) == [0, 1, 0, 1, 2, 3]  # each sweep's own job numbers
    assert list(table["origin"]) == [str(root / "lenet")] * 2 + [str(root / "cnn5")] * 4
    assert list(table["model"]) == ["lenet"] * 2 + ["cnn5"] * 4
    assert list(table["model.activation"]) == ["", "", "relu", "relu", "gelu", "gelu"]
    assert list(table["model.batch_norm"]) == ["", "", "True", "False", "True", "False"]
    assert list(table["grad_clip"]) == ["", "", "1.0", "1.0", "1.0", "1.0"]  # null: empty
    assert list(table["lr"]) == [0.01, 0.05, 0.01, 0.01, 0.01, 0.01]
    assert not [c for c in table.columns if "@" in c]
    assert not table[["model", "model.activation", "model.batch_norm", "lr"]].duplicated().any()
    assert "nan" not in proc.stdout and "None" not in proc.stdout
    assert len((out / "results.txt").read_text().splitlines()) == 6


def test_best_json_repeats_the_best_run(merged, tmp_path):
    _, out, _ = merged
    best = json.loads((out / "best.json").read_text())
    table = pd.read_csv(out / "results.csv")
    top = table.loc[table["best_val_acc"].idxmax()]
    assert best["best_value"] == pytest.approx(top["best_val_acc"])
    assert best["best_run_dir"] == top["run_dir"] and best["best_origin"] == top["origin"]
    assert best["command"].startswith("python -m runner model=")
    assert "hydra." not in best["command"]  # where it ran is not what it trains
    # The command trains the same run again: same seed, same CPU, same accuracy.
    args = best["command"].split()[3:]
    proc = run_cli(*args, f"hydra.run.dir={tmp_path / 'again'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["best_val_acc"] == pytest.approx(best["best_value"])


def test_the_pictures_and_report_are_written(merged):
    _, out, _ = merged
    for name in ("accuracy_by_param.png", "val_acc_curves.png", "report.html"):
        assert (out / name).stat().st_size > 1000, name
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert page.split("</table>")[0].count("<tr") == 7  # the runs table: header + six runs
