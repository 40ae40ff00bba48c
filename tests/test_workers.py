"""Several workers on one study in a real PostgreSQL server (started here, in a temp folder).

Three workers run the same command on one study and one shared sweep dir. One of them is frozen
(SIGSTOP) while its trial runs: its process is still there, as a worker on another machine looks
from here, but its heartbeat stops, so only the heartbeat can tell the others. It is killed with
SIGKILL once the others have finished. The study must end with exactly n_trials counted trials, no
parameter set, job number or folder used twice, the frozen worker's trial failed and run again
exactly once, and the collector's table of the shared sweep dir complete.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState


ROOT = Path(__file__).resolve().parents[1]
N_TRIALS = 6


def worker(sweep_dir: Path, url: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "runner", "-m", "hparams_search=lenet_optuna", f"hydra.sweep.dir={sweep_dir}",
           f"hydra.sweeper.storage={url}", f"hydra.sweeper.n_trials={N_TRIALS}", "hydra.sweeper.heartbeat_interval=1",
           "hydra.sweeper.grace_period=3", "epochs=1", "tensorboard=false", "progress=false", "compute.threads=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def running_trial_of(url: str, pid: int) -> optuna.trial.FrozenTrial | None:
    try:
        study = optuna.load_study(study_name="lenet_digits", storage=url)
    except KeyError:  # not created yet
        return None
    return next((t for t in study.get_trials(states=(TrialState.RUNNING,))
                 if str(t.user_attrs.get("owner", "")).endswith(f":{pid}") and "sweep_dir" in t.user_attrs), None)


def test_workers_share_a_postgres_study_and_a_stopped_workers_trial_runs_again_once(tmp_path, postgres_url):
    sweep_dir = tmp_path / "shared"
    frozen = worker(sweep_dir, postgres_url)
    deadline = time.time() + 180
    while (stuck := running_trial_of(postgres_url, frozen.pid)) is None:
        assert frozen.poll() is None and time.time() < deadline, frozen.stdout.read() if frozen.poll() is not None else ""
        time.sleep(0.2)
    time.sleep(0.5)  # its last attribute is set: it is training now, not halfway through a database write
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        live = [worker(sweep_dir, postgres_url) for _ in range(2)]
        outs = [p.communicate(timeout=300)[0] for p in live]
        for p, out in zip(live, outs):
            assert p.returncode == 0, out
    finally:
        os.kill(frozen.pid, signal.SIGKILL)
        frozen.wait()
    assert any(f"Trial {stuck.number} (job {stuck.user_attrs['job_num']}) was left RUNNING" in out for out in outs), outs

    trials = optuna.load_study(study_name="lenet_digits", storage=postgres_url).trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    ran = [t for t in trials if not {"duplicate_of", "surplus"} & t.user_attrs.keys()]
    assert [t for t in ran if t.user_attrs.get("retried")] == [t for t in trials if t.number == stuck.number]
    counted = [t for t in ran if not t.user_attrs.get("retried")]
    assert len(counted) == N_TRIALS and all(t.state == TrialState.COMPLETE for t in counted)
    # the stuck trial's parameters ran again exactly once, and nothing else ran twice
    assert [t.params for t in counted if t.user_attrs.get("retry_of") == stuck.number] == [stuck.params]
    assert len({tuple(sorted(t.params.items())) for t in counted}) == N_TRIALS
    assert len({t.user_attrs["job_num"] for t in ran}) == len({t.user_attrs["run_dir"] for t in ran}) == len(ran)

    # every folder has its final state; the collector's table (written by the last worker) lists them all
    folders = sorted(int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit())
    assert folders == sorted(t.user_attrs["job_num"] for t in ran)
    stuck_dir = Path(stuck.user_attrs["run_dir"])
    assert json.loads((stuck_dir / "summary.json").read_text())["status"] == "interrupted"
    table = pd.read_csv(sweep_dir / "results.csv")
    assert sorted(table["job"]) == folders
    assert sorted(table["status"]) == ["completed"] * N_TRIALS + ["interrupted"]
