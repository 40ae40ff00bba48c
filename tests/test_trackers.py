"""The `logger` group: what a real run logs to MLflow and W&B, read back with each library's own reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, run_sweep

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("wandb")

from mlflow.tracking import MlflowClient  # noqa: E402

QUIET = ["progress=false", "tensorboard=false"]


def _store(home: Path) -> MlflowClient:
    assert (home / "mlflow.db").is_file(), sorted(p.name for p in home.iterdir())
    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


def _wandb_records(run_dir: Path) -> dict[str, list]:
    """The offline W&B run in `run_dir/wandb/`, its `.wandb` file read with wandb's own reader."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    files = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    store = datastore.DataStore()
    store.open_for_scan(str(files[0]))
    records: dict[str, list] = {}
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        records.setdefault(kind, []).append(getattr(record, kind))
    return records


def _wandb_items(items) -> dict[str, object]:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def test_single_run_logs_to_mlflow_and_wandb(tmp_path, tiny_images):
    run_dir = tmp_path / "run"
    proc = run_cli("logger=[tensorboard,mlflow,wandb]", "logger.mlflow.log_checkpoint=true", "epochs=2", "lr=0.05",
                   f"hydra.run.dir={run_dir}", "progress=false", *tiny_images)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert (run_dir / "tensorboard").is_dir()  # the default logger still listed: TensorBoard as before

    client = _store(run_dir)  # a single run: the store inside its own folder
    experiment = client.get_experiment_by_name(run_dir.name)
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert run.data.params["lr"] == "0.05" and run.data.params["epochs"] == "2"
    assert run.data.params["model._target_"] == "models.lenet.LeNet"
    assert not any(key.startswith("logger") for key in run.data.params)
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [m.step for m in history] == [1, 2]
    metrics_csv = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(metrics_csv) == 3
    assert run.data.metrics["summary.best_val_acc"] == pytest.approx(summary["best_val_acc"])
    assert max(m.value for m in history) == pytest.approx(summary["best_val_acc"])
    assert run.data.tags["summary.status"] == "completed"
    assert run.data.tags["run_folder"] == str(run_dir.resolve())
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert artifacts == ["checkpoints/model_best.pth.tar"]
    local = Path(client.download_artifacts(run.info.run_id, "checkpoints/model_best.pth.tar", str(tmp_path)))
    assert local.read_bytes() == (run_dir / "model_best.pth.tar").read_bytes()

    records = _wandb_records(run_dir)  # offline: its files inside the run folder, nothing sent
    [run_record] = records["run"]
    assert run_record.run_group == run_dir.name and run_record.project == "sweep-runner"
    config = _wandb_items(run_record.config.update)
    assert config["lr"] == 0.05 and config["model"]["_target_"] == "models.lenet.LeNet" and "logger" not in config
    rows = [_wandb_items(h.item) for h in records["history"]]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert max(r["val_acc"] for r in rows) == pytest.approx(summary["best_val_acc"])
    final = {}
    for update in records["summary"]:
        final.update(_wandb_items(update.update))
    assert final["status"] == "completed" and final["best_epoch"] == summary["best_epoch"]
    assert records["exit"][0].exit_code == 0


def test_grid_is_one_mlflow_experiment_and_one_wandb_group(tmp_path, tiny_images):
    sweep_dir = tmp_path / "sweep"
    run_sweep(sweep_dir, "logger=[mlflow,wandb]", "epochs=1", "lr=0.01,0.05", *QUIET, *tiny_images)
    client = _store(sweep_dir)
    [experiment] = [e for e in client.search_experiments() if e.name != "Default"]
    assert experiment.name == sweep_dir.name
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.params["lr"] for r in runs) == ["0.01", "0.05"]
    assert sorted(r.info.run_name for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" and len(client.get_metric_history(r.info.run_id, "val_loss")) == 1
               for r in runs)
    assert not (sweep_dir / "0" / "tensorboard").exists()  # logger=[mlflow,wandb] leaves TensorBoard out
    groups = {_wandb_records(sweep_dir / job)["run"][0].run_group for job in ("0", "1")}
    assert groups == {sweep_dir.name}


def test_unreachable_tracker_is_one_warning_and_the_run_completes(tmp_path, tiny_images):
    run_dir = tmp_path / "run"  # MLflow's own retry settings left as they are: no minutes of back-off
    proc = run_cli("logger=mlflow", "logger.mlflow.tracking_uri=http://127.0.0.1:9", "epochs=1",  # nothing listens
                   f"hydra.run.dir={run_dir}", *QUIET, *tiny_images)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    warnings = [line for line in out.splitlines() if "logger mlflow" in line]
    assert len(warnings) == 1 and "the run goes on without it" in warnings[0], out
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "model_best.pth.tar").is_file()
    assert not (run_dir / "mlflow.db").exists()
    assert "Traceback" not in out and "Retrying" not in out


def test_trackers_change_no_result(make_cfg):
    """Which trackers a run logs to is not part of what it trains: resume, rerun, tables and HParams ignore it."""
    from omegaconf import OmegaConf

    from runner.collect import varying_columns
    from runner.config.keys import flatten
    from runner.sweep.rerun import _same_run
    from runner.run.resume import _recipe, _typed_keys
    from runner.record.tb_hparams import hparams_of

    with_trackers = OmegaConf.to_container(make_cfg("logger=[mlflow,wandb]"), resolve=True)
    before = OmegaConf.to_container(make_cfg(), resolve=True)
    before.pop("logger")  # a run stored before the logger group existed
    typed = ["logger=[mlflow,wandb]", "resume=x"]
    resumed = make_cfg(*typed)
    _recipe(resumed, before, _typed_keys(resumed, typed), "x")  # raises if resume refused the trackers
    assert _same_run(with_trackers, before) is None
    assert _same_run(with_trackers, {**before, "lr": 0.5}) == [f"lr (0.5 -> {before['lr']})"]
    assert varying_columns([flatten(with_trackers), flatten(before)], [{"logger": "[mlflow, wandb]"}, {}]) == []
    assert not any(key.startswith("logger") for key in hparams_of(with_trackers))


def test_tensorboard_follows_the_logger_list(make_cfg):
    from runner.record.trackers import tensorboard_wanted

    assert tensorboard_wanted(make_cfg("tensorboard=true"))  # the default list holds it
    assert tensorboard_wanted(make_cfg("tensorboard=true", "logger=[tensorboard,mlflow]"))
    assert not tensorboard_wanted(make_cfg("tensorboard=true", "logger=mlflow"))
    assert not tensorboard_wanted(make_cfg("tensorboard=true", "logger=[]"))  # no loggers at all
    assert not tensorboard_wanted(make_cfg("logger=[tensorboard,mlflow]"))  # tensorboard=false still wins
