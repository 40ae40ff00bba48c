"""Several objectives (runner/results/pareto.py): Optuna's multi-objective study, tables ranked by Pareto front,
best.json holding exactly the front, and one line for settings that don't fit together."""

from __future__ import annotations

import itertools
import json
import random

import optuna
import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir

from common.errors import ConfigError
from runner.collect import collect_and_report
from runner.config.objective import objective_value
from runner.config.schema import check_config
from runner.results.pareto import check_sweep_objectives, front_ranks
from tests.conftest import CONF_DIR, run_cli, run_sweep
from tests.fake_runs import write_fake_run

FAST = ["epochs=1", "tensorboard=false", "progress=false", "compute.threads=1"]
TWO = ["objective=[val_acc,params_m]", "hydra.sweeper.direction=[maximize,minimize]"]
DIRECTIONS = {"best_val_acc": 1.0, "params_m": -1.0}  # +1: higher is better

optuna.logging.set_verbosity(optuna.logging.WARNING)


def dominated(row: pd.Series, rows: pd.DataFrame) -> bool:
    """Brute force: some other row is at least as good in both objectives and better in one."""
    for _, other in rows.iterrows():
        better = [s * other[c] > s * row[c] for c, s in DIRECTIONS.items()]
        worse = [s * other[c] < s * row[c] for c, s in DIRECTIONS.items()]
        if any(better) and not any(worse):
            return True
    return False


def peeled_fronts(rows: pd.DataFrame) -> dict[int, int]:
    """{job: front} by removing the non-dominated rows again and again."""
    fronts, left, rank = {}, rows, 0
    while len(left):
        front = left[[not dominated(r, left) for _, r in left.iterrows()]]
        fronts.update({int(j): rank for j in front["job"]})
        left, rank = left[~left["job"].isin(front["job"])], rank + 1
    return fronts


def test_front_ranks_match_a_brute_force_peel():
    rng = random.Random(0)
    directions = ["maximize", "minimize"]
    points = [(rng.choice([1, 2, 3, 4]), rng.choice([1, 2, 3])) for _ in range(30)] + [None]
    ranks = front_ranks(points, directions)
    assert ranks[-1] is None  # a run without values has no front
    table = pd.DataFrame({"job": range(30), "best_val_acc": [p[0] for p in points[:30]],
                          "params_m": [p[1] for p in points[:30]]})
    assert dict(enumerate(ranks[:30])) == peeled_fronts(table)
    for i, j in itertools.product(range(30), repeat=2):  # equal values share a front
        if points[i] == points[j]:
            assert ranks[i] == ranks[j]


def test_a_run_returns_one_value_per_objective_or_none():
    summary = {"status": "completed", "best_val_acc": 80.0, "params_m": 0.5, "wall_s": 3.0}
    assert objective_value(("val_acc", "params_m"), summary) == (80.0, 0.5)
    assert objective_value(("val_acc",), summary) == 80.0  # a list of one is the single objective
    assert objective_value(("val_acc", "params_m"), {**summary, "params_m": None}) is None
    assert objective_value(("val_acc", "wall_s"), {**summary, "status": "failed"}) is None


def test_a_two_objective_search_keeps_exactly_the_non_dominated_trials(tmp_path):
    """An Optuna search over model width and lr, its trials trained by the fused launcher two at a time."""
    sweep_dir = tmp_path / "study"
    out = run_sweep(sweep_dir, *FAST, *TWO, "hydra/sweeper=runner_optuna", "hydra/launcher=fused", "model=simplenet",
                    "model.hidden=choice(8,32,128)", "lr=choice(0.01,0.1)", "hydra.sweeper.n_trials=4",
                    "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.seed=0")
    assert "Pareto front of val_acc, params_m" in out
    study = optuna.load_study(study_name="optuna", storage=f"sqlite:///{sweep_dir}/optuna.db")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_acc", "params_m"]
    best = json.loads((sweep_dir / "best.json").read_text())
    front = {m["trial"]: m for m in best["pareto_front"]}
    assert set(front) == {t.number for t in study.best_trials}  # the study's own front, exactly
    for t in study.best_trials:
        assert list(front[t.number]["values"].values()) == t.values
        assert front[t.number]["params"] == t.params and "objective=[val_acc,params_m]" in front[t.number]["command"]
    assert best["directions"] == ["maximize", "minimize"] and "best_value" not in best

    table = pd.read_csv(sweep_dir / "results.csv")
    finished = table[table["status"].isin(["completed", "diverged"])]
    assert len(finished) == 4
    non_dominated = {int(r["job"]) for _, r in finished.iterrows() if not dominated(r, finished)}
    assert non_dominated == {m["job_num"] for m in front.values()}
    assert dict(zip(table["job"], table["front"])) == peeled_fronts(finished)
    assert table["front"].is_monotonic_increasing  # results.csv is ranked by front
    assert (sweep_dir / "optuna_pareto_front.png").stat().st_size > 0
    assert not (sweep_dir / "pareto_front.png").exists()  # the study's own picture stands for it
    assert len(yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())["solutions"]) == len(front)
    report = (sweep_dir / "report.html").read_text()
    assert "Pareto front: <b>" in report and report.count("<tr class=best>") == len(front)
    assert 'alt="optuna_pareto_front.png"' in report


def test_a_grid_with_two_objectives_is_ranked_by_front(tmp_path):
    config = {"lr": 0.01, "objective": ["val_acc", "params_m"]}
    # job: (lr, accuracy, params_m, status); job 4 dominates nothing and nothing dominates it;
    # jobs 1 and 5 tie; job 6 failed and job 7 is still running: no front.
    runs = {0: (0.01, 60.0, 0.5, "completed"), 1: (0.02, 80.0, 1.0, "completed"), 2: (0.03, 70.0, 1.0, "completed"),
            3: (0.04, 50.0, 2.0, "diverged"), 4: (0.05, 40.0, 0.2, "completed"), 5: (0.06, 80.0, 1.0, "completed"),
            6: (0.07, None, 0.1, "failed"), 7: (0.08, 95.0, None, "running")}
    for job, (lr, acc, params, status) in runs.items():
        write_fake_run(tmp_path / "grid" / str(job), {**config, "lr": lr}, acc, status=status, params_m=params,
                       recorded=[f"lr={lr}", "objective=[val_acc,params_m]"])
    table = collect_and_report([tmp_path / "grid"])
    assert list(table["front"].astype("Float64").fillna(-1)) == [0, 0, 1, 2, 0, 0, -1, -1]
    csv = pd.read_csv(tmp_path / "grid" / "results.csv")
    # front 0 by accuracy (ties in launch order), then fronts 1, 2, then the runs without a front
    assert list(csv["job"]) == [1, 5, 0, 4, 2, 3, 7, 6]
    assert list(csv.columns[:4]) == ["job", "lr", "front", "best_val_acc"]
    # results.txt keeps the course's one line per run, in launch order
    assert (tmp_path / "grid" / "results.txt").read_text().splitlines()[:3] == ["60.00", "80.00", "70.00"]
    best = json.loads((tmp_path / "grid" / "best.json").read_text())
    assert [m["job_num"] for m in best["pareto_front"]] == [1, 5, 0, 4]
    assert best["pareto_front"][0]["values"] == {"val_acc": 80.0, "params_m": 1.0}
    assert best["pareto_front"][0]["command"] == "python -m runner lr=0.02 'objective=[val_acc,params_m]'"
    assert best["objectives"] == ["val_acc", "params_m"] and best["directions"] == ["maximize", "minimize"]
    assert (tmp_path / "grid" / "pareto_front.png").stat().st_size > 0
    report = (tmp_path / "grid" / "report.html").read_text()
    assert report.count("<tr class=best>") == 4 and 'alt="pareto_front.png"' in report


def test_one_objective_tables_have_no_front(tmp_path):
    for job, acc in enumerate([50.0, 70.0]):
        write_fake_run(tmp_path / str(job), {"lr": 0.01 * (job + 1)}, acc)
    table = collect_and_report([tmp_path])
    assert "front" not in table.columns
    assert list(pd.read_csv(tmp_path / "results.csv")["job"]) == [0, 1]  # launch order, as always
    assert json.loads((tmp_path / "best.json").read_text())["best_job_num"] == 1


def sweep_config(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR):
        return compose(config_name="config", overrides=["hydra/sweeper=runner_optuna", *overrides], return_hydra_config=True)


@pytest.mark.parametrize("overrides, message", [
    (["objective=[val_acc,params_m]"],
     "hydra.sweeper.direction=maximize gives 1 direction(s) for 2 objectives (val_acc,params_m): "
     "use hydra.sweeper.direction=[maximize,minimize]"),
    (["objective=[val_acc,wall_s]", "hydra.sweeper.direction=[maximize,maximize]"],
     "would maximize wall_s, which is better lower: use hydra.sweeper.direction=[maximize,minimize]"),
    (["hydra.sweeper.direction=[maximize,minimize]"], "gives 2 directions for one objective (val_acc)"),
    (["objective=[val_acc,size]", "hydra.sweeper.direction=[maximize,minimize]"], "size is no objective"),
    (["objective=params_m"], "a single objective is an accuracy"),
    ([*TWO, "hydra/sweeper/sampler=cmaes"], "(CmaEsSampler) takes one objective"),
    ([*TWO, "hydra/sweeper/pruner=median"], "cannot prune a search of several objectives"),
])
def test_settings_that_do_not_fit_together_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as refused:
        check_sweep_objectives(sweep_config(*overrides))
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_refused_search_says_so_in_one_line_and_leaves_nothing(tmp_path):
    proc = run_cli("-m", f"hydra.sweep.dir={tmp_path / 'study'}", *FAST, *TWO, "hparams_search=lenet_optuna",
                   "hydra/sweeper/pruner=hyperband")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("error: hydra.sweeper.pruner (HyperbandPruner) cannot prune")
    assert not (tmp_path / "study").exists()


def test_a_robust_objective_among_several_needs_an_adversary(make_cfg):
    with pytest.raises(ConfigError) as refused:
        check_config(make_cfg("objective=[val_acc,val_robust_acc]"))
    assert str(refused.value) == ("objective=[val_acc,val_robust_acc] is invalid: val_robust_acc is measured only "
                                  "with an adversary: add adversary=pgd or fgsm")
    check_config(make_cfg("objective=[val_robust_acc,wall_s]", "adversary=fgsm"))
