"""Every command ends bad input, a broken config file or a failing disk with one `error:` line on
stderr, a non-zero exit, no traceback, and no run folder left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.fake_runs import write_fake_run


def assert_one_error_line(proc: subprocess.CompletedProcess, *needles: str, status: int | None = None) -> str:
    """Non-zero exit, exactly one non-empty stderr line, starting `error:`, naming each needle; no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    if status is not None:
        assert proc.returncode == status, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr + proc.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a_file"
    path.write_text("not a folder\n")
    return path


@pytest.mark.parametrize("overrides, needles", [
    (["compute.threads=0"], ["compute.threads=0", "compute.threads=auto"]),
    (["compute.threads=abc"], ["compute.threads=abc", "compute.threads=auto"]),
    (["dataset.image_size=abc"], ["dataset.image_size=abc", "size in pixels"]),
    (["+model._partial_=true"], ["model._partial_=true", "remove _partial_"]),
    (["+model._args_=[1,2]"], ["model._args_=[1, 2]", "remove _args_"]),
    (["+augmentation._recursive_=false"], ["augmentation._recursive_=false", "remove _recursive_"]),
    (["++optimizer._partial_=false"], ["optimizer._partial_=false", "remove the override"]),
    (["lr=${oc.env:SWEEP_RUNNER_UNSET_VARIABLE}"], ["lr=${oc.env:SWEEP_RUNNER_UNSET_VARIABLE}", "cannot be resolved",
                                                    "SWEEP_RUNNER_UNSET_VARIABLE"]),
    (["dataset=imagefolder"], ["dataset.root is not set", "dataset.root="]),
    (["hydra.job_logging.root.level=${oc.env:SWEEP_RUNNER_UNSET_VARIABLE}"],
     ["hydra.job_logging.root.level=", "plain values"]),
    (["hydra.hydra_logging.root.level=LOUD"], ["hydra.hydra_logging.root.level=LOUD", "INFO"]),
])
def test_bad_values_are_one_line_and_leave_no_run_folder(overrides, needles, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(*overrides, "epochs=1", f"hydra.run.dir={run_dir}")
    assert_one_error_line(proc, *needles, status=2)
    assert not run_dir.exists()


def test_a_dataset_root_that_is_a_file(a_file, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("dataset=imagefolder", f"dataset.root={a_file}", f"hydra.run.dir={run_dir}")
    assert_one_error_line(proc, f"dataset.root={a_file}", "not a folder", status=2)
    assert not run_dir.exists()


def test_launcher_n_jobs_zero_is_refused_before_the_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "lr=0.01,0.02", "epochs=1",
                   f"hydra.sweep.dir={sweep_dir}")
    assert_one_error_line(proc, "hydra.launcher.n_jobs=0", "-1 for all cores", status=2)
    assert not sweep_dir.exists()


@pytest.mark.parametrize("flags", [["-m", "--cfg", "job"], ["--cfg", "job", "-m"], ["-m", "--info", "config"]])
def test_multirun_with_cfg_or_info(flags, tmp_path):
    proc = run_cli(*flags, "epochs=1", f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert_one_error_line(proc, "-m/--multirun and --", "cannot be combined", status=2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags, needles", [(["--cfg", "bogus"], ["--cfg", "bogus", "--help"]),
                                            (["--info", "epochs=1"], ["--info", "invalid choice"])])
def test_a_malformed_flag(flags, needles, tmp_path):
    proc = run_cli(*flags, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_error_line(proc, *needles, status=2)
    assert list(tmp_path.iterdir()) == []


def test_a_config_file_that_is_not_yaml(tmp_path):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "broken.yaml").write_text("# @package _global_\nlr: [0.1, 0.2\nepochs: :\n")
    run_dir = tmp_path / "run"
    proc = run_cli("--config-dir", str(tmp_path / "conf"), "+experiment=broken", f"hydra.run.dir={run_dir}")
    assert_one_error_line(proc, str(conf / "broken.yaml"), "not valid YAML", "fix the file", status=2)
    assert not run_dir.exists()


def test_an_output_folder_under_a_file(a_file, tmp_path):
    proc = run_cli("epochs=1", f"hydra.run.dir={a_file}/run")
    assert_one_error_line(proc, f"{a_file}/run", "not a folder", status=1)
    assert a_file.read_text() == "not a folder\n"


def test_collect_out_that_is_a_file(a_file, tmp_path):
    write_fake_run(tmp_path / "sweep" / "0", {"lr": 0.01, "batch_size": 32}, 90.0)
    proc = run_cli(str(tmp_path / "sweep"), "--out", str(a_file), module="runner.collect")
    assert_one_error_line(proc, str(a_file))
    assert a_file.read_text() == "not a folder\n"


def test_dashboard_port_out_of_range(tmp_path):
    proc = run_cli(str(tmp_path), "--port", "70000", "--storage", f"sqlite:///{tmp_path}/optuna.db",
                   module="runner.dashboard")
    assert_one_error_line(proc, "--port 70000", "1 to 65535", status=2)
    assert list(tmp_path.iterdir()) == []


def test_an_unexpected_error_is_one_line_with_its_traceback_in_a_file(tmp_path):
    """Anything no check foresaw: `<Type>: <message> (full traceback in <file>)`, and the file holds it."""
    code = ("import sys; sys.argv[1:] = ['x']\n"
            "from common.errors import entry_point\n"
            "with entry_point():\n"
            "    {}['missing']\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    line = assert_one_error_line(proc, "KeyError: 'missing'", "full traceback in", status=1)
    traceback_file = Path(line.rsplit("full traceback in ", 1)[1].rstrip(")"))
    try:
        assert "Traceback" in traceback_file.read_text() and "KeyError" in traceback_file.read_text()
    finally:
        traceback_file.unlink()


def test_sweep_sh_fails_with_one_line_when_a_configuration_fails(tmp_path):
    sweep_dir = tmp_path / "course"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SWEEP_DIR": str(sweep_dir)}
    proc = subprocess.run(["bash", str(ROOT / "sweep.sh"), "compute.threads=0", "epochs=1"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert_one_error_line(proc, "7 of 7 jobs failed", "compute.threads=0", str(sweep_dir / "results.csv"), status=1)

    # refused before the sweep starts: one line from the runner, no sweep dir
    sweep_dir = tmp_path / "refused"
    env["SWEEP_DIR"] = str(sweep_dir)
    proc = subprocess.run(["bash", str(ROOT / "sweep.sh"), "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert_one_error_line(proc, "hydra.launcher.n_jobs=0", status=2)
    assert not sweep_dir.exists()


# ---------------------------------------------------------------- the machine: a full or read-only disk
def _private_mount_works() -> bool:
    """A user+mount namespace lets a test mount a small tmpfs that only its own process tree sees."""
    if shutil.which("unshare") is None or sys.platform != "linux":
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(not _private_mount_works(), reason="needs unshare -rm with tmpfs mounts")


def _run_on_tmpfs(mount_point: Path, options: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m runner args` with a fresh tmpfs (mount options `options`) at mount_point."""
    mount_point.mkdir()
    command = " ".join(["mount -t tmpfs -o", options, "tmpfs", str(mount_point), "&&",
                        "exec", sys.executable, "-m", "runner", *[f"'{a}'" for a in args]])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(["unshare", "-rm", "sh", "-c", command], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@needs_mount
@pytest.mark.parametrize("size", ["3k", "16k", "300k"])  # full while Hydra sets up, at start, at the checkpoint
def test_disk_full(size, tmp_path):
    proc = _run_on_tmpfs(tmp_path / "disk", f"size={size}", "epochs=1", "batch_size=128", "tensorboard=false",
                         f"hydra.run.dir={tmp_path / 'disk' / 'run'}")
    assert_one_error_line(proc, "No space left on device", "the disk is full", status=1)


@needs_mount
def test_read_only_output_folder(tmp_path):
    run_dir = tmp_path / "disk" / "run"
    proc = _run_on_tmpfs(tmp_path / "disk", "ro", "epochs=1", f"hydra.run.dir={run_dir}")
    assert_one_error_line(proc, str(run_dir), "Read-only file system", "writable", status=1)


def test_a_single_runs_unexpected_failure_is_one_line_and_the_log_holds_the_traceback(tmp_path):
    """The real `python -m runner` with one fault put in (the run's seeding raises): what no check
    foresaw ends as one line, the run's log file holds the traceback, summary.json says failed."""
    run_dir = tmp_path / "run"
    code = ("import runpy, sys\n"
            "import runner.run.train\n"
            "def boom(seed): raise RuntimeError('injected fault')\n"
            "runner.run.train.seed_everything = boom\n"
            f"sys.argv = ['runner', 'epochs=1', 'tensorboard=false', 'hydra.run.dir={run_dir}']\n"
            "runpy.run_module('runner', run_name='__main__', alter_sys=True)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert_one_error_line(proc, "RuntimeError: injected fault", f"full traceback in {run_dir / 'runner.log'}", status=1)
    log = (run_dir / "runner.log").read_text()
    assert "Traceback" in log and "RuntimeError: injected fault" in log
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
