"""The project's Hydra plugins in a user's own `@hydra.main` app, outside `python -m runner`: Hydra finds
them by scanning the `hydra_plugins` namespace package on PYTHONPATH (hydra_plugins/sweep_runner_*)."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

APP = '''
import json
from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(config_path=".", config_name="config")
def task(cfg: DictConfig) -> float:
    value = -(cfg.x - 3) ** 2 + cfg.y
    Path("value.json").write_text(json.dumps({"x": cfg.x, "y": cfg.y, "value": value}))
    return value


if __name__ == "__main__":
    task()
'''


def _app(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "config.yaml").write_text("x: 0\ny: 1\nhydra:\n  job:\n    chdir: true\n")
    return tmp_path / "app.py"


def _run(app: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(app), "-m", *args], cwd=app.parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_our_sweeper_searches_a_foreign_app(tmp_path):
    app = _app(tmp_path)
    sweep = tmp_path / "search"
    proc = _run(app, "hydra/sweeper=runner_optuna", f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=3",
         "hydra.sweeper.sampler.seed=0", "x=range(0,6)", "y=choice(1,2)")
    ran = sorted(json.loads(p.read_text())["value"] for p in sweep.glob("*/value.json"))
    assert len(ran) == 3
    with sqlite3.connect(sweep / "optuna.db") as db:  # the study, in the sweep dir, holds the jobs' values
        told = sorted(v for (v,) in db.execute("select value from trial_values"))
    assert told == ran
    assert json.loads((sweep / "best.json").read_text())["best_value"] == ran[-1]
    assert f"resume with: {Path(sys.executable).name} {app}" in proc.stdout + proc.stderr


def test_fused_launcher_runs_a_foreign_task_as_plain_jobs(tmp_path):
    app = _app(tmp_path)
    sweep = tmp_path / "grid"
    proc = _run(app, "hydra/launcher=fused", f"hydra.sweep.dir={sweep}", "x=1,3", "y=5,6")
    assert "one after another" in proc.stdout + proc.stderr
    values = {(r["x"], r["y"]): r["value"] for r in (json.loads(p.read_text()) for p in sweep.glob("*/value.json"))}
    assert values == {(1, 5): 1, (1, 6): 2, (3, 5): 5, (3, 6): 6}


def test_every_plugin_class_is_an_entry_point():
    """An editable install can't be scanned: Hydra finds its plugins through the `hydra.plugins` entry points
    of pyproject.toml, which must name every Plugin class our hydra_plugins modules give Hydra."""
    import importlib
    import inspect
    import pkgutil
    import tomllib

    from hydra.plugins.plugin import Plugin

    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["hydra.plugins"]
    named = set()
    for target in listed.values():
        module, name = target.split(":")
        named.add(getattr(importlib.import_module(module), name))
    found = set()
    for info in pkgutil.iter_modules([str(REPO / "hydra_plugins")]):
        assert info.name.startswith("sweep_runner_")
        for sub in pkgutil.iter_modules([str(REPO / "hydra_plugins" / info.name)]):
            module = importlib.import_module(f"hydra_plugins.{info.name}.{sub.name}")
            found |= {obj for _, obj in inspect.getmembers(module, inspect.isclass)
                      if issubclass(obj, Plugin) and obj.__module__.startswith(("runner.", "hydra_plugins.sweep_runner_"))}
    assert found and named == found
