"""Every job's final config is checked, however it was made: typed, from a config file, a search
space, a grid's 1000th job, a rerun folder; refusals leave no trace outside, and a sweep job refused
at run time records `refused` in its own folder while the sweep goes on."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from common.errors import ConfigError
from runner.trust.allowed import ALLOWED_ENV
from runner.trust.targets import check_command_line_only, check_config_trust
from tests.conftest import run_cli
from tests.test_trust import assert_refused, compose_full

FAST = ["epochs=1", "tensorboard=false", "progress=false", "compute.threads=1", "dataset.val_fraction=0.9"]


@pytest.fixture
def evil_program(tmp_path) -> tuple[Path, Path]:
    """An executable that leaves a marker file when anything runs it, under the names tools look for."""
    marker = tmp_path / "ran.marker"
    bin_dir = tmp_path / "evilbin"
    bin_dir.mkdir()
    for name in ("g++", "gcc", "cc", "c++", "evil"):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir, marker


@pytest.mark.parametrize("var", ["CXX", "CC", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "BASH_ENV", "ENV",
                                 "SHELL", "PATH", "LD_PRELOAD", "PYTHONPATH", "HOME"])
def test_only_listed_environment_variables_may_be_set(var):
    with pytest.raises(ConfigError) as refused:
        check_config_trust(compose_full(f"+hydra.job.env_set.{var}=/tmp/x"))
    assert f"hydra.job.env_set.{var} is not allowed" in str(refused.value) and "CUDA_VISIBLE_DEVICES" in str(
        refused.value)


def test_listed_environment_variables_pass():
    check_config_trust(compose_full(*[f"+hydra.job.env_set.{var}=1" for var in ALLOWED_ENV]))


def test_a_compiler_from_env_set_is_refused_and_never_runs(tmp_path, evil_program):
    bin_dir, marker = evil_program
    run_dir = tmp_path / "run"
    proc = run_cli(f"+hydra.job.env_set.CXX={bin_dir / 'evil'}", "compute.compile=true", *FAST,
                   f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_refused(proc, "hydra.job.env_set.CXX is not allowed")
    assert not marker.exists() and not run_dir.exists()


def write_search(conf: Path, params: dict[str, str], extra: str = "") -> None:
    """A search-space file of someone else's in a --config-dir: `hparams_search=evil`."""
    (conf / "hparams_search").mkdir(parents=True, exist_ok=True)
    lines = "".join(f"      {json.dumps(k)}: {json.dumps(v)}\n" for k, v in params.items())
    (conf / "hparams_search" / "evil.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: runner_optuna\n"
        f"{extra}hydra:\n  sweeper:\n    n_trials: 2\n    params:\n{lines}")


@pytest.mark.parametrize("key, value, needle", [
    ("+hydra.job.env_set.PATH", "choice({bin}:/usr/bin)", "hydra.job.env_set.PATH is not allowed"),
    ("hydra.job_logging.handlers.file.filename", "choice({tmp}/elsewhere.log)",
     "hydra.job_logging.handlers.file.filename"),
    ("hydra.output_subdir", "choice(.hydra,{tmp}/out)", "hydra.output_subdir="),
    ("hydra.sweep.subdir", "choice({tmp}/elsewhere)", "hydra.sweep.subdir="),
    ("+hydra.job.env_set.CXX", "interval(0, 1)", "hydra.job.env_set.CXX"),
])
def test_hydra_keys_in_a_search_space_are_checked_as_if_typed(tmp_path, evil_program, key, value, needle):
    bin_dir, marker = evil_program
    conf = tmp_path / "conf"
    write_search(conf, {key: value.format(bin=bin_dir, tmp=tmp_path), "lr": "choice(0.01, 0.02)"})
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("--config-dir", str(conf), "-m", "hparams_search=evil", "compute.compile=true", *FAST,
                   f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert_refused(proc, needle)
    assert not sweep_dir.exists() and not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf", "evilbin"]  # nothing written beside them


def test_a_hydra_key_from_a_config_file_is_checked_as_if_typed(tmp_path):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "evil.yaml").write_text("# @package _global_\nhydra:\n  job:\n    env_set:\n      LD_PRELOAD: /x.so\n")
    typed = run_cli("+hydra.job.env_set.LD_PRELOAD=/x.so", f"hydra.run.dir={tmp_path / 'r1'}", cwd=tmp_path)
    from_file = run_cli("--config-dir", str(tmp_path / "conf"), "experiment=evil", f"hydra.run.dir={tmp_path / 'r2'}",
                        cwd=tmp_path)
    assert_refused(typed, "hydra.job.env_set.LD_PRELOAD is not allowed")
    assert_refused(from_file, "hydra.job.env_set.LD_PRELOAD is not allowed")
    assert typed.stderr == from_file.stderr
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_every_job_of_a_large_grid_is_checked(tmp_path):
    """Jobs 500-999 of a 1000-job grid reach an absolute `.hydra` folder through an interpolation:
    refused before job 0 runs."""
    sweep_dir, outside = tmp_path / "grid", tmp_path / "outside"
    proc = run_cli("-m", "hydra.output_subdir=${device}", f"device=cpu,{outside}", "seed=range(0,500)", *FAST,
                   f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, timeout=600)
    assert_refused(proc, f"hydra.output_subdir={outside} is not allowed", "seed=0")
    assert not sweep_dir.exists() and not outside.exists()


def test_jobs_sharing_one_folder_are_refused(tmp_path):
    proc = run_cli("-m", "seed=0,1,2", "hydra.sweep.subdir=same", *FAST, f"hydra.sweep.dir={tmp_path / 'g'}")
    assert_refused(proc, "hydra.sweep.subdir=same gives every job of the sweep the same folder")
    assert not (tmp_path / "g").exists()


def crafted_rerun_folder(tmp_path: Path, overrides: list[str]) -> Path:
    """A finished run's folder whose .hydra/overrides.yaml someone edited."""
    run_dir = tmp_path / "victim_run"
    done = run_cli(*FAST, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create(list(saved) + overrides), run_dir / ".hydra" / "overrides.yaml")
    return run_dir


@pytest.mark.parametrize("override, needle", [
    ("hydra.output_subdir={tmp}/outside", "hydra.output_subdir="),
    ("hydra.job_logging.handlers.file.filename={tmp}/outside.log", "hydra.job_logging.handlers.file.filename"),
    ("+hydra.job.env_set.LD_PRELOAD={tmp}/x.so", "hydra.job.env_set.LD_PRELOAD is not allowed"),
])
def test_a_crafted_rerun_folder_is_checked_and_changes_nothing(tmp_path, override, needle):
    run_dir = crafted_rerun_folder(tmp_path, [override.format(tmp=tmp_path)])
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    proc = run_cli("--experimental-rerun", str(run_dir), cwd=tmp_path)
    assert_refused(proc, needle)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim_run"]


def test_a_rerun_of_a_folder_without_hydra_files_is_one_line(tmp_path):
    assert_refused(run_cli("--experimental-rerun", str(tmp_path), cwd=tmp_path), "--experimental-rerun")


def test_launcher_setup_lines_come_only_from_the_command_line(tmp_path):
    marker = tmp_path / "setup.marker"
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "cluster.yaml").write_text("# @package _global_\ndefaults:\n  - override /hydra/launcher: submitit_slurm\n"
                                       f"hydra:\n  launcher:\n    setup: ['touch {marker}']\n")
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("--config-dir", str(tmp_path / "conf"), "-m", "experiment=cluster", *FAST,
                   f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert_refused(proc, "hydra.launcher.setup is not allowed from a config file", "type it on the command line")
    assert not sweep_dir.exists() and not marker.exists()
    # Typed, it is the user's own choice.
    typed = compose_full("hydra/launcher=submitit_slurm", f"hydra.launcher.setup=['touch {marker}']")
    check_command_line_only(typed, ["hydra/launcher", "hydra.launcher.setup"])
    with pytest.raises(ConfigError):
        check_command_line_only(typed, ["hydra/launcher"])


@pytest.mark.parametrize("launcher", ["basic", "fused"])
def test_a_sweep_job_refused_at_run_time_records_refused_and_the_sweep_goes_on(tmp_path, launcher):
    """A trial's suggestion reaches `hydra.output_subdir` through an interpolation only that job resolves;
    with the fused launcher, the refused trial is kept out of its batch's fused group."""
    conf = tmp_path / "conf" / "hparams_search"
    conf.mkdir(parents=True)
    (conf / "evil.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: runner_optuna\n  - override /hydra/sweeper/sampler: grid\n"
        "hydra:\n  output_subdir: ${device}\n  sweeper:\n    n_trials: 4\n    n_jobs: 4\n    params:\n"
        f"      device: choice(cpu, {tmp_path}/outside)\n      lr: choice(0.01, 0.02)\n")
    sweep_dir = tmp_path / "sweep"
    fuse = ["hydra.launcher.fuse=true"] if launcher == "fused" else []
    proc = run_cli("--config-dir", str(tmp_path / "conf"), "-m", "hparams_search=evil", f"hydra/launcher={launcher}",
                   *fuse, *FAST, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    assert not (tmp_path / "outside").exists()
    summaries = {d.name: json.loads((d / "summary.json").read_text()) for d in sweep_dir.iterdir()
                 if (d / "summary.json").exists()}
    assert sorted(s["status"] for s in summaries.values()) == ["completed", "completed", "refused", "refused"], out
    for name, summary in summaries.items():
        if summary["status"] == "refused":
            assert "hydra.output_subdir=" in summary["error"]
            assert not (sweep_dir / name / "checkpoint.pth.tar").exists()
    if launcher == "fused":
        assert "1 fused group(s)" in out, out[-3000:]


def test_a_config_file_may_not_put_the_run_folder_outside_the_working_folder(tmp_path):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "far.yaml").write_text(f"# @package _global_\nhydra:\n  run:\n    dir: {tmp_path}/elsewhere\n")
    proc = run_cli("--config-dir", str(tmp_path / "conf"), "experiment=far", *FAST, cwd=tmp_path)
    assert_refused(proc, f"hydra.run.dir={tmp_path}/elsewhere is not allowed from a config file",
                   "type it on the command line")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf"]


def test_a_trial_may_not_move_its_folder_out_of_the_sweep(tmp_path):
    conf = tmp_path / "conf" / "hparams_search"
    conf.mkdir(parents=True)
    (conf / "evil.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: runner_optuna\n  - override /hydra/sweeper/sampler: grid\n"
        f"hydra:\n  sweep:\n    dir: ${{device}}\n  sweeper:\n    n_trials: 1\n    params:\n"
        f"      device: choice({tmp_path}/outside)\n")
    proc = run_cli("--config-dir", str(tmp_path / "conf"), "-m", "hparams_search=evil", *FAST, cwd=tmp_path)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "outside").exists()
    summary = json.loads((tmp_path / "auto" / "0" / "summary.json").read_text())  # the sweep's own dir
    assert summary["status"] == "refused" and "hydra.sweep.dir=" in summary["error"]


def test_where_a_tracker_sends_runs_comes_only_from_the_command_line(tmp_path):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "tracked.yaml").write_text("# @package _global_\ndefaults:\n  - override /logger: mlflow\n"
                                       f"logger:\n  mlflow:\n    tracking_uri: sqlite:///{tmp_path}/elsewhere.db\n")
    proc = run_cli("--config-dir", str(tmp_path / "conf"), "experiment=tracked", *FAST, f"hydra.run.dir={tmp_path / 'r'}",
                   cwd=tmp_path)
    assert_refused(proc, "logger.mlflow.tracking_uri is not allowed from a config file", "type it on the command line")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf"]
    typed = compose_full("logger=mlflow", f"logger.mlflow.tracking_uri=sqlite:///{tmp_path}/mine.db")
    check_command_line_only(typed, ["logger", "logger.mlflow.tracking_uri"])
