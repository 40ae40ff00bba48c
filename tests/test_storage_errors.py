"""A bad storage, database file, dashboard port or sweeper setting: one line, exit 2, nothing written."""

from __future__ import annotations

import socket

import pytest

from common.errors import ConfigError
from runner.search.study_rules import check_options
from tests.conftest import run_cli
from tests.test_cli_errors import assert_one_line_error


def closed_port() -> int:
    """A port nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_refused(proc, *needles):
    assert_one_line_error(proc, *needles)
    assert proc.returncode == 2
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1, proc.stderr


@pytest.mark.parametrize("overrides, needles", [
    (["hydra.sweeper.storage=foo://x"], ["hydra.sweeper.storage=foo://x", "unknown kind of database", "postgresql://"]),
    ([f"hydra.sweeper.storage=postgresql://postgres@127.0.0.1:{closed_port()}/db"], ["cannot connect", "server runs"]),
    (["hydra.sweeper.storage='sqlite:///{tmp}/a?b/optuna.db'"], ["reads as URL options", "%3F"]),
    (["hydra.sweeper.storage=sqlite:///{tmp}/text.db"], ["text.db is not an SQLite database"]),
    (["hydra.sweeper.n_jobs=0"], ["hydra.sweeper.n_jobs=0", "1 or more"]),
    (["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=-1"],
     ["MedianPruner", "n_startup_trials=-1"]),
    (["hydra/sweeper/pruner=hyperband", "hydra.sweeper.pruner.min_resource=-1"],
     ["hydra.sweeper.pruner.min_resource=-1", "negative"]),
    (["hydra.sweeper.n_trials=-1"], ["hydra.sweeper.n_trials=-1", "0 or more"]),
])
def test_a_bad_optuna_setting_is_one_line_and_leaves_no_sweep_dir(overrides, needles, tmp_path):
    (tmp_path / "text.db").write_text("not a database\n")
    proc = run_cli("-m", "hparams_search=lenet_optuna", f"hydra.sweep.dir={tmp_path / 'sweep'}", "epochs=1",
                   *[o.replace("{tmp}", str(tmp_path)) for o in overrides])
    assert_refused(proc, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.db"]  # no sweep dir, no database, no lock file


@pytest.mark.parametrize("module", ["runner.dashboard", "runner.optuna_report"])
def test_a_text_file_as_the_study_database_is_one_line(module, tmp_path):
    (tmp_path / "optuna.db").write_text("not a database\n")
    assert_refused(run_cli(str(tmp_path), module=module), "optuna.db is not an SQLite database")
    assert_refused(run_cli(str(tmp_path), "--storage", "foo://x", module=module), "--storage=foo://x",
                   "unknown kind of database")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna.db"]


@pytest.mark.parametrize("port, needles", [("70000", ["--port 70000", "1 to 65535"]),
                                           ("-1", ["--port -1", "1 to 65535"]),
                                           ("abc", ["--port abc", "not a port number"])])
def test_a_dashboard_port_out_of_range_is_one_line(port, needles, tmp_path):
    assert_refused(run_cli(str(tmp_path), "--port", port, module="runner.dashboard"), *needles)


def test_a_dashboard_port_in_use_is_one_line(tmp_path):
    import optuna

    optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path}/optuna.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli(str(tmp_path), "--port", str(port), module="runner.dashboard", timeout=120)
    assert_refused(proc, f"127.0.0.1:{port}", "pick another --port")


@pytest.mark.parametrize("settings, needle", [
    ({"n_jobs": 0}, "n_jobs=0"), ({"n_jobs": "abc"}, "n_jobs=abc"), ({"n_jobs": True}, "n_jobs=True"),
    ({"n_trials": -1}, "n_trials=-1"), ({"max_failure_rate": 1.5}, "max_failure_rate=1.5"),
    ({"heartbeat_interval": 0}, "heartbeat_interval=0"), ({"grace_period": -5}, "grace_period=-5"),
])
def test_sweeper_settings_out_of_range_are_named(settings, needle):
    with pytest.raises(ConfigError, match=needle):
        check_options(None, **settings)
    check_options(None, n_jobs=1, n_trials=0, max_failure_rate=0.5, heartbeat_interval=None, grace_period=None)
