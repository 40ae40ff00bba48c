"""A study's database: a sweep dir's sqlite path stays a path, and N workers may start at once.

Workers released together: each process loads everything, says it is ready, and waits for one
file; the test creates it once all are ready, so all of them open the fresh database in the same
few milliseconds (Optuna's own schema creation fails for all but one of them without the lock).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from common.errors import ConfigError
from runner.search.db import check_url, sqlite_url, study_url
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
ODD = "s?x=1#a %20&b=c{d}"  # URL syntax in a folder name: query, fragment, escape, format field

# One worker: open the study as the sweeper does (runner.search.storage.study_setup), add one trial.
WORKER = """
import os, sys, time
import optuna
from runner.search.storage import study_setup
optuna.logging.set_verbosity(optuna.logging.WARNING)
go, ready, urls = sys.argv[1], sys.argv[2], sys.argv[3:]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
for url in urls:
    with study_setup(url, 1, None) as storage:
        study = optuna.create_study(study_name="shared", storage=storage, direction="maximize", load_if_exists=True)
        study.set_user_attr("fixed_overrides", ["epochs=1"])  # what the sweeper's first worker stores
    trial = study.ask()
    study.tell(trial, 1.0)
"""


def test_a_sweep_dirs_characters_stay_part_of_its_database_path():
    for path in [f"/tmp/{ODD}/optuna.db", f"rel/{ODD}/optuna.db", "/tmp/100%/optuna.db"]:
        assert make_url(sqlite_url(path)).database == path
    assert make_url(study_url(f"sqlite:///out/{ODD}/optuna.db", f"out/{ODD}")).database == f"out/{ODD}/optuna.db"
    assert study_url("postgresql://u@h/db", f"out/{ODD}") == "postgresql://u@h/db"
    with pytest.raises(ConfigError, match=r"write \? as %3F"):  # typed: a '?' begins URL options, said so
        check_url("sqlite:///out/a?x=1/optuna.db")
    with pytest.raises(ConfigError, match=r"write \? as %3F"):
        check_url("sqlite:///out/a?b/optuna.db")  # SQLAlchemy would drop '?b/optuna.db' silently
    check_url("sqlite:///out/optuna.db?timeout=30")  # pysqlite's own options stay options


def test_two_sweep_dirs_that_differ_after_a_question_mark_keep_separate_studies(tmp_path):
    first, second = tmp_path / ODD, tmp_path / ODD.replace("x=1", "x=2")
    sweep = ("-m", "hparams_search=lenet_optuna", "hydra.sweeper.n_trials=1", "epochs=1", "batch_size=64",
             "tensorboard=false", "progress=false", "compute.threads=1")
    proc = run_cli(*sweep, f"hydra.sweep.dir='{first}'")  # quoted: Hydra's override grammar reads the rest as is
    assert proc.returncode == 0, proc.stderr
    # The second with a pruner: each trial's job opens the study from the URL it resolves itself.
    proc = run_cli(*sweep, f"hydra.sweep.dir='{second}'", "hydra/sweeper/pruner=median")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name]), "nothing outside"
    for sweep_dir in (first, second):
        assert (sweep_dir / "optuna.db").is_file()
        study = optuna.load_study(study_name="lenet_digits", storage=sqlite_url(sweep_dir / "optuna.db"))
        assert [t.state for t in study.trials] == [TrialState.COMPLETE]
        best = json.loads((sweep_dir / "best.json").read_text())
        assert Path(best["best_run_dir"]).parent == sweep_dir
        assert make_url(best["storage"]).database == str(sweep_dir / "optuna.db")
    assert "0 of n_trials=1 done" in out  # the second started its own study, it did not find the first's


def test_workers_released_together_on_fresh_databases_all_start(tmp_path, postgres_url):
    n = 4
    urls = [postgres_url, sqlite_url(tmp_path / "sqlite" / "optuna.db")]  # both fresh: no table yet
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(go), str(tmp_path / f"ready{i}"), *urls],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(n)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(n)):
        assert time.time() < deadline and all(w.poll() is None for w in workers), [w.poll() for w in workers]
        time.sleep(0.01)
    go.touch()
    outs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * n, "\n".join(outs)
    for url in urls:
        study = optuna.load_study(study_name="shared", storage=url)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * n
        assert study.user_attrs["fixed_overrides"] == ["epochs=1"]
