"""hydra/launcher=runner_ray: a grid and an Optuna search through a real two-node Ray cluster the test starts
and stops; what only the command line may tell Ray; which jobs ask Ray for a GPU.

The cluster runs in namespaces of its own (`unshare`): a network namespace with only loopback up,
so that Ray binds 127.0.0.1 and its traffic stays on this machine, and a PID namespace, so that
`ray stop` there sees only this cluster's processes and whatever outlives it is killed by the
kernel when the scenario's shell (the namespace's first process) ends.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from common.errors import ConfigError
from runner.trust.targets import check_command_line_only
from tests.conftest import ROOT, run_cli
from tests.test_trust import assert_refused, compose_full

# The namespace has ports of its own, so a fixed one (6379) can't collide. Both nodes offer one CPU:
# the two jobs of a sweep run at once, one on each node.
SCENARIO = r"""
set -u
ip link set lo up
readlink /proc/self/ns/pid > pidns
HERE=$PWD
step() { echo "$1 $(date +%s.%N)" >> "$HERE/steps"; }
trap 'step lost; ray stop --force > "$HERE/ray-stop.log" 2>&1; step stop' EXIT
step begin
# The nodes start from a folder of their own: a job's folder must not depend on where its worker runs.
cd nodes
ray start --head --node-ip-address=127.0.0.1 --port=6379 --num-cpus=1 --num-gpus=0 --include-dashboard=false \
    --disable-usage-stats --temp-dir="$RAY_TMP" > ../ray-head.log 2>&1 || exit 10
# Both nodes write into the one session folder here: the head's log monitor forwards every worker's lines.
ray start --address=127.0.0.1:6379 --node-ip-address=127.0.0.1 --num-cpus=1 --num-gpus=0 \
    --include-log-monitor=false --disable-usage-stats > ../ray-node.log 2>&1 || exit 11
ps -e -o comm= | grep -c raylet > ../raylets
cd ..
step cluster
RAY="hydra/launcher=runner_ray hydra.launcher.ray.init.address=127.0.0.1:6379"
FAST="epochs=1 tensorboard=false progress=false"
python -m runner -m $RAY $FAST hydra.sweep.dir=grid lr=0.01,0.05 > grid.log 2>&1
echo $? > grid.rc
step grid
python -m runner --config-dir conf -m hparams_search=ray_search $RAY $FAST hydra.sweep.dir=search > search.log 2>&1
echo $? > search.rc
step search
# A job whose Ray task can't even start (its runtime_env names a conda env that doesn't exist).
python -m runner -m $RAY $FAST hydra.sweep.dir=lost lr=0.05 \
    '+hydra.launcher.ray.remote.runtime_env={conda: no_such_env}' > lost.log 2>&1
echo $? > lost.rc
"""
# A search whose trials are known in advance (grid sampler), two of which are refused by the trust check
# in the sweep's process: their `hydra.output_subdir` would leave the run folder, which only the trial's
# own suggestion shows. The other two train the grid's learning rates.
SEARCH = """# @package _global_
defaults:
  - override /hydra/sweeper: runner_optuna
  - override /hydra/sweeper/sampler: grid
hydra:
  output_subdir: ${{device}}
  sweeper:
    n_trials: 4
    n_jobs: 2
    params:
      lr: choice(0.01, 0.05)
      device: choice(cpu, {outside})
"""


def _unshare() -> list[str]:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) to give the cluster a network of its own")
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    command = ["unshare", *user, "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
    probe = subprocess.run([*command, "true"], capture_output=True, text=True)
    if probe.returncode != 0:  # e.g. a container without the right to make namespaces
        pytest.skip(f"unshare can't make namespaces here: {probe.stderr.strip()}")
    return command


def _left_in(pidns: str) -> list[int]:
    """Processes still in the cluster's PID namespace."""
    left = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "ns" / "pid") == pidns:
                left.append(int(proc.name))
        except OSError:  # ended meanwhile, or not ours to read
            continue
    return left


def _steps(path: Path) -> str:
    """`cluster 7.3 s, grid 20.1 s, ...` from the scenario's time stamps."""
    if not path.exists():
        return "no time stamps"
    stamps = [line.split() for line in path.read_text().splitlines()]
    return ", ".join(f"{name} {float(t) - float(before):.1f} s" for (_, before), (name, t) in zip(stamps, stamps[1:]))


def _rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_grid_and_a_search_run_through_a_two_node_ray_cluster(tmp_path):
    pytest.importorskip("ray", reason="needs Ray: pip install -e '.[ray]'")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="needs hydra-ray-launcher: pip install -e '.[ray]'")
    command = _unshare()
    (tmp_path / "nodes").mkdir()
    outside = tmp_path / "outside"
    (tmp_path / "conf" / "hparams_search").mkdir(parents=True)
    (tmp_path / "conf" / "hparams_search" / "ray_search.yaml").write_text(SEARCH.format(outside=outside))
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
    # No token authentication (Ray 2.60 turns it on where ~/.ray/auth_token exists): only loopback reaches the cluster.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMP": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)  # the cluster is named on the command line, never taken from the caller's shell
    started = time.monotonic()
    proc = subprocess.Popen([*command, "bash", "-c", SCENARIO], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=420)
    finally:
        if proc.poll() is None:  # unshare's --kill-child takes the namespace, and every process in it, along
            proc.kill()
            proc.wait()
        pidns = (tmp_path / "pidns").read_text().strip() if (tmp_path / "pidns").exists() else None
        left = _left_in(pidns) if pidns else []
        for pid in left:  # never expected: the kernel ends a PID namespace's processes with its first one
            os.kill(pid, 9)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    print(f"Ray scenario: {time.monotonic() - started:.1f} s; {_steps(tmp_path / 'steps')}")
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("*.log")))
    assert proc.returncode == 0, out + logs
    assert not left, f"processes left in the cluster's namespace: {left}"
    assert (tmp_path / "raylets").read_text().strip() == "2", logs  # the head and the node that joined it

    # The grid: both jobs ran as Ray tasks, in the sweep dir the command named.
    grid_log = (tmp_path / "grid.log").read_text()
    assert (tmp_path / "grid.rc").read_text().strip() == "0", grid_log[-3000:]
    assert "(_run_job pid=" in grid_log and "2 jobs: 2 completed" in grid_log, grid_log[-3000:]
    grid = {float(r["lr"]): r for r in _rows(tmp_path / "grid")}
    assert sorted(grid) == [0.01, 0.05]
    assert {r["status"] for r in grid.values()} == {"completed"}
    assert all(0 < float(r["best_val_acc"]) <= 100 and r["epochs_done"] == "1" for r in grid.values())
    assert not any((tmp_path / "nodes").iterdir())  # nothing where the nodes were started

    # The search: two trials trained, two refused in the sweep's process, recorded by their Ray workers.
    search_log = (tmp_path / "search.log").read_text()
    assert (tmp_path / "search.rc").read_text().strip() == "1", search_log[-3000:]  # refused jobs: exit 1
    assert "4 jobs: 2 completed, 2 refused" in search_log and "(_run_job pid=" in search_log, search_log[-3000:]
    assert not outside.exists()
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "search").glob("*/summary.json")]
    assert sorted(s["status"] for s in summaries) == ["completed", "completed", "refused", "refused"]
    assert all("hydra.output_subdir=" in s["error"] for s in summaries if s["status"] == "refused")
    rows = _rows(tmp_path / "search")
    assert sorted(r["status"] for r in rows) == ["completed", "completed", "refused", "refused"]
    # A seeded CPU run repeats exactly: each trained trial matches the grid job with its learning rate.
    trained = {float(r["lr"]): r["best_val_acc"] for r in rows if r["status"] == "completed"}
    assert trained == {lr: r["best_val_acc"] for lr, r in grid.items()}
    import optuna

    study = optuna.load_study(study_name="optuna", storage=f"sqlite:///{tmp_path / 'search' / 'optuna.db'}")
    done = sorted(t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert done == sorted(float(v) for v in trained.values())

    # The job Ray could not run is recorded failed, with Ray's reason, and the sweep says so.
    lost_log = (tmp_path / "lost.log").read_text()
    assert (tmp_path / "lost.rc").read_text().strip() == "1", lost_log[-3000:]
    assert "1 jobs: 0 completed, 1 failed" in lost_log, lost_log[-3000:]
    record = json.loads((tmp_path / "lost" / ".jobs" / "0.json").read_text())
    assert record["status"] == "failed" and "RuntimeEnvSetupError" in record["reason"]


# ---------------------------------------------------------------- no cluster needed
def test_where_ray_jobs_run_comes_only_from_the_command_line(tmp_path):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "elsewhere.yaml").write_text("# @package _global_\ndefaults:\n  - override /hydra/launcher: runner_ray\n"
                                         "hydra:\n  launcher:\n    ray:\n      init:\n        address: 10.0.0.9:6379\n")
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("--config-dir", str(tmp_path / "conf"), "-m", "experiment=elsewhere", "epochs=1",
                   f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert_refused(proc, "hydra.launcher.ray.init.address is not allowed from a config file",
                   "type it on the command line")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf"]
    # Each setting of ray.init, and a task's environment or placement, must be typed; resources may come from files.
    for key in ("hydra.launcher.ray.init.runtime_env", "hydra.launcher.ray.remote.runtime_env",
                "hydra.launcher.ray.remote.scheduling_strategy"):
        value = "{env_vars: {LD_PRELOAD: /tmp/x.so}}" if key.endswith("runtime_env") else "SPREAD"
        cfg = compose_full("hydra/launcher=runner_ray", f"+{key}={value}")
        with pytest.raises(ConfigError, match=f"{key}.* is not allowed from a config file"):
            check_command_line_only(cfg, ["hydra/launcher"])
        check_command_line_only(cfg, ["hydra/launcher", key])
    typed_address = compose_full("hydra/launcher=runner_ray", "hydra.launcher.ray.init.address=auto",
                                 "+hydra.launcher.ray.init.runtime_env={env_vars: {A: b}}")
    with pytest.raises(ConfigError, match="hydra.launcher.ray.init.runtime_env.env_vars.A"):
        check_command_line_only(typed_address, ["hydra/launcher", "hydra.launcher.ray.init.address"])
    resources = compose_full("hydra/launcher=runner_ray", "+hydra.launcher.ray.remote.num_gpus=1",
                             "+hydra.launcher.ray.remote.num_cpus=2")
    check_command_line_only(resources, ["hydra/launcher"])


def test_the_ray_plugins_own_launchers_are_refused_with_ours_named(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="needs hydra-ray-launcher: pip install -e '.[ray]'")
    proc = run_cli("-m", "hydra/launcher=ray", "epochs=1", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert_refused(proc, "hydra.launcher._target_=hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
                   "use hydra/launcher=runner_ray")
    proc = run_cli("-m", "hydra/launcher=ray_aws", "epochs=1", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert_refused(proc, "RayAWSLauncher is not allowed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("device, remote, wanted", [
    ("cuda", {}, {"num_gpus": 1}),
    ("cuda:0", {"num_cpus": 2}, {"num_cpus": 2, "num_gpus": 1}),
    ("cpu", {}, {}),
    ("auto", {}, {}),
    ("cuda", {"num_gpus": 0.5}, {"num_gpus": 0.5}),  # set by the user: two trials share a GPU
])
def test_a_job_asks_ray_for_a_gpu_when_it_trains_on_one(device, remote, wanted):
    from runner.sweep.ray_launcher import job_resources

    job = compose_full("hydra/launcher=runner_ray", f"device={device}")
    assert OmegaConf.to_container(job_resources(OmegaConf.create(remote), job)) == wanted
