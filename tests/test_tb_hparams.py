"""TensorBoard: every run's hyperparameters and final metrics in the HParams format, read back
with TensorBoard's own reader and HParams backend; a resumed run's log holds all its epochs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
from tensorboard.plugins.hparams import metadata

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("tb_sweep")
    proc = run_cli("-m", "lr=0.01,0.05", "epochs=1", "tensorboard=true", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return sweep


def read_log(log_dir) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})
    events.Reload()
    return events


def test_each_run_logs_its_hparams_and_final_metrics(sweep):
    for job, lr in ((0, 0.01), (1, 0.05)):
        events = read_log(sweep / str(job) / "tensorboard")
        content = events.PluginTagToContent(metadata.PLUGIN_NAME)
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        assert metadata.SESSION_END_INFO_TAG in content
        assert start.hparams["lr"].number_value == lr
        assert start.hparams["batch_size"].number_value == 32
        assert start.hparams["model"].string_value == "lenet"  # the config group's choice, by name
        assert start.hparams["optimizer._target_"].string_value == "torch.optim.SGD"
        assert start.hparams["compute.compile"].string_value == "False"  # a bool as text, not 0.0
        assert "resume" not in start.hparams and "tensorboard" not in start.hparams
        summary = json.loads((sweep / str(job) / "summary.json").read_text())
        assert events.Scalars("best_val_acc")[-1].value == pytest.approx(summary["best_val_acc"])
        assert events.Scalars("epochs_done")[-1].value == 1


def test_tensorboard_builds_one_hparams_table_from_the_sweep(sweep):
    """What `tensorboard --logdir <sweep>` shows in its HPARAMS tab, asked of TensorBoard's backend."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(sweep))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(sweep))
    backend = backend_context.Context(base_plugin.TBContext(logdir=str(sweep), data_provider=provider,
                                                            multiplexer=multiplexer))
    request = context.RequestContext()
    sessions = backend.hparams_metadata(request, "")
    assert sorted(sessions) == ["0/tensorboard", "1/tensorboard"]
    experiment = backend.experiment_from_metadata(request, "", True, sessions,
                                                  backend.hparams_from_data_provider(request, "", None))
    lr = next(h for h in experiment.hparam_infos if h.name == "lr")
    assert lr.differs and (lr.domain_interval.min_value, lr.domain_interval.max_value) == (0.01, 0.05)
    assert {"best_val_acc", "val_acc", "wall_s"} <= {m.name.tag for m in experiment.metric_infos}


def test_a_resumed_runs_log_holds_every_epoch(sweep, tmp_path):
    resumed = tmp_path / "resumed"
    proc = run_cli(f"resume={sweep / '0' / 'checkpoint.pth.tar'}", "lr=0.01", "epochs=2", "tensorboard=true",
                   f"hydra.run.dir={resumed}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = pd.read_csv(resumed / "metrics.csv")
    logged = read_log(resumed / "tensorboard").Scalars("val_acc")
    assert [e.step for e in logged] == [1, 2] == list(metrics["epoch"])
    assert [e.value for e in logged] == pytest.approx(list(metrics["val_acc"]))
