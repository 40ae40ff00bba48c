"""Experiment trackers a run also logs to: the `logger` config group (conf/logger/).

`logger=[tensorboard,mlflow]` picks several; each file nests its settings under its own name,
so a list of options merges into one `logger` node. TensorBoard is the run folder's own
(runner/record/run_folder.py) and has no class here; MLflow and Weights & Biases are built from their
`_target_` (allowed by runner/trust/targets.py RUN_TARGETS["logger"]) and fed by `TrialRecord`: the
resolved config when the run starts, each epoch's row, the summary and status at the end.

A tracker is a copy of what the run folder holds, never its authority: a tracker that fails
(library missing, server down, bad URI) is one warning line and is dropped for the rest of the
run; the run, its files and its status go on as if it had never been asked for.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterator

from hydra.utils import instantiate
from omegaconf import DictConfig

from runner.record.run_folder import Status

log = logging.getLogger("runner")

# The trackers' own settings are not the run's parameters: left out of what they log as its config.
SKIPPED_PARAMS = ("logger",)
# A run's outcome as MLflow's run status; W&B knows only "finished" (exit code 0) or "failed".
MLFLOW_STATUS = {Status.COMPLETED: "FINISHED", Status.PRUNED: "FINISHED", Status.INTERRUPTED: "KILLED"}


def sweep_home(run_dir: Path) -> Path:
    """The folder that stands for the run's sweep: Hydra's sweep dir in a multirun, else the run folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN and hydra_cfg.sweep.dir:
            return Path(str(hydra_cfg.sweep.dir)).resolve()
    return Path(run_dir).resolve()


def flat_params(plain_cfg: dict[str, Any]) -> dict[str, str]:
    """`{"model": {"_target_": "x"}}` -> `{"model._target_": "x"}`: the config as flat key/value strings."""
    from runner.config.keys import flatten

    return {key: str(list(value) if isinstance(value, tuple) else value)
            for key, value in flatten({k: v for k, v in plain_cfg.items() if k not in SKIPPED_PARAMS}).items()}


def numbers(row: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a row or summary (booleans and text left out)."""
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Raise ConnectionError at once if an http(s) tracking server doesn't answer: MLflow's client
    would retry with back-off for minutes before the run could go on without it."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # it answered (a proxy's 401 or 404 included): MLflow's own calls say the rest
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConnectionError(f"{uri} does not answer ({reason})") from None


class MLflowTracker:
    """One MLflow run per trial in one experiment per sweep: params, per-epoch metrics, summary, best checkpoint."""

    name = "mlflow"

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None,
                 log_checkpoint: bool = False) -> None:
        self.tracking_uri, self.experiment, self.log_checkpoint = tracking_uri, experiment, log_checkpoint
        self.client: Any = None
        self.run_id: str | None = None
        self._lock_path: Path | None = None

    @contextlib.contextmanager
    def _store(self) -> Iterator[None]:
        """Hold the local store's lock: parallel trials of a sweep share one SQLite file."""
        if self._lock_path is None:
            yield
            return
        with open(self._lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def start(self, run_dir: Path, plain_cfg: dict[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        home = sweep_home(run_dir)
        uri, artifacts = self.tracking_uri, None
        if not uri:  # offline by default: an SQLite store and its artifacts inside the sweep dir
            uri, artifacts = f"sqlite:///{home / 'mlflow.db'}", (home / "mlartifacts").as_uri()
            self._lock_path = home / ".mlflow.lock"
        else:
            reachable(uri)
        name = self.experiment or home.name
        with self._store():
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                try:
                    experiment_id = self.client.create_experiment(name, artifact_location=artifacts)
                except MlflowException:  # another worker on the same server created it first
                    experiment_id = self.client.get_experiment_by_name(name).experiment_id
            else:
                experiment_id = found.experiment_id
            tags = {"run_folder": str(Path(run_dir).resolve())}
            self.run_id = self.client.create_run(experiment_id, run_name=Path(run_dir).name, tags=tags).info.run_id
            params = [Param(k, v) for k, v in flat_params(plain_cfg).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
                self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log_epoch(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step, now = int(row["epoch"]), int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in numbers(row).items() if k != "epoch"]
        with self._store():
            self.client.log_batch(self.run_id, metrics=metrics)

    def end(self, summary: dict[str, Any], best_checkpoint: Path) -> None:
        from mlflow.entities import Metric, RunTag

        now, step = int(time.time() * 1000), int(summary.get("epochs_done") or 0)
        metrics = [Metric(f"summary.{k}", v, now, step) for k, v in numbers(summary).items()]
        tags = [RunTag(f"summary.{k}", str(v)) for k, v in summary.items()
                if v is not None and not numbers({k: v})]
        with self._store():
            self.client.log_batch(self.run_id, metrics=metrics, tags=tags)
            if self.log_checkpoint and best_checkpoint.is_file():
                self.client.log_artifact(self.run_id, str(best_checkpoint), "checkpoints")
            self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(str(summary.get("status")), "FAILED"))


class WandbTracker:
    """One W&B run per trial, grouped by sweep: config, per-epoch metrics, summary; offline unless told otherwise."""

    name = "wandb"

    def __init__(self, project: str = "sweep-runner", entity: str | None = None, mode: str = "offline",
                 group: str | None = None, tags: list[str] | None = None) -> None:
        self.project, self.entity, self.mode, self.group = project, entity, mode, group
        self.tags = list(tags or [])
        self.run: Any = None

    def start(self, run_dir: Path, plain_cfg: dict[str, Any]) -> None:
        import wandb

        home = sweep_home(run_dir)
        settings = wandb.Settings(console="off", x_disable_stats=True, x_disable_meta=True, disable_git=True,
                                  save_code=False, silent=True)
        # Its files go into the run folder (run_dir/wandb/); `wandb sync` uploads an offline run later.
        self.run = wandb.init(project=self.project, entity=self.entity, mode=self.mode, dir=str(run_dir),
                              group=self.group or home.name, name=Path(run_dir).name, tags=self.tags or None,
                              config={k: v for k, v in plain_cfg.items() if k not in SKIPPED_PARAMS},
                              settings=settings, reinit="create_new")

    def log_epoch(self, row: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in numbers(row).items() if k != "epoch"} | {"epoch": int(row["epoch"])},
                     step=int(row["epoch"]))

    def end(self, summary: dict[str, Any], best_checkpoint: Path) -> None:
        # plain strings: W&B writes an Enum (a Status) by its name, not its value
        self.run.summary.update({k: str(v) if isinstance(v, str) else v for k, v in summary.items() if v is not None})
        self.run.finish(exit_code=0 if summary.get("status") in (Status.COMPLETED, Status.PRUNED) else 1)


class Trackers:
    """The trackers `cfg.logger` asks for; every call guarded so a failing one is one warning and then silent."""

    def __init__(self, cfg: DictConfig, run_dir: Path, label: str = "") -> None:
        self.run_dir, self.label = Path(run_dir), label
        self.active: list[Any] = []
        self.started = False  # a run that fails before it starts training logs nothing to its trackers
        self._logged_epoch = 0
        for key, node in (cfg.get("logger") or {}).items():
            if isinstance(node, DictConfig) and node.get("_target_"):
                tracker = self._guard(str(key), lambda node=node: instantiate(node, _convert_="all"))
                if tracker is not None:
                    self.active.append(tracker)

    def _guard(self, name: str, call: Any) -> Any:
        try:
            return call()
        except ImportError as e:
            log.warning("%slogger %s is not available (%s): install it with pip install -e \".[%s]\"; "
                        "the run goes on without it", self.label, name, e, name)
        except Exception as e:  # a tracker never stops a run, whatever its library raises
            text = " ".join(str(e).split())[:300]
            log.warning("%slogger %s failed (%s: %s); the run goes on without it", self.label, name,
                        type(e).__name__, text)
        return None

    def _each(self, method: str, *args: Any) -> None:
        for tracker in list(self.active) if self.started else []:
            ok = self._guard(tracker.name, lambda t=tracker: getattr(t, method)(*args) or True)
            if ok is None:
                self.active.remove(tracker)

    def start(self, plain_cfg: dict[str, Any]) -> None:
        self.started = True
        self._each("start", self.run_dir, plain_cfg)

    def log_history(self, history: list[dict[str, Any]]) -> None:
        """Log the rows not logged yet (a resumed run's earlier epochs too)."""
        for row in history:
            if row["epoch"] > self._logged_epoch:
                self._each("log_epoch", row)
                self._logged_epoch = int(row["epoch"])

    def end(self, summary: dict[str, Any], best_checkpoint: Path) -> None:
        self._each("end", summary, best_checkpoint)


def tensorboard_wanted(cfg: DictConfig) -> bool:
    """TensorBoard: on with the top-level `tensorboard` switch and `tensorboard` among the loggers
    (`logger=null`: none; a config with no `logger` key at all, written before it existed, keeps it on)."""
    if "logger" not in cfg:
        return bool(cfg.get("tensorboard", True))
    return bool(cfg.get("tensorboard", True)) and "tensorboard" in (cfg.logger or {})
