"""A config or checkpoint from elsewhere runs no code; every config shipped in conf/ still works.

The crafted files carry nested `_target_` chains that, on the old `torch.*`/`logging.*`
whitelist, wrote a file from a data: URL, imported a local hubconf.py and truncated a file
through logging.FileHandler (each verified to happen there). Here each must be refused with
one line, exit 2, and leave no trace: no file written or truncated, no module imported, no
run folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import execution_whitelist
from omegaconf import OmegaConf

from common.errors import ConfigError
from runner.eval import parse_args, trusted_eval_targets
from runner.run.build import build
from runner.run.build import build_scheduler
from runner.trust.allowed import EVAL_TARGETS, HYDRA_TARGETS, RUN_TARGETS
from runner.trust.preflight import remove_refused_run_folder
from runner.trust.targets import check_config_trust, flat, iter_targets, run_whitelist
from tests.conftest import CONF_DIR, ROOT, run_cli

GROUPS = ["model", "optimizer", "scheduler", "augmentation", "adversary", "dataset", "compute", "course", "experiment",
          "hparams_search", "logger"]
SAMPLERS = ["tpe", "random", "grid", "cmaes", "gp", "qmc", "nsgaii"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def shipped_overrides() -> list[list[str]]:
    """Every file of every group, each warm-up `after`, every launcher and sampler."""
    cases = [[f"{group}={name}"] for group in GROUPS for name in options(group)]
    cases += [["scheduler=warmup", f"scheduler@scheduler.after={name}"] for name in options("scheduler")
              if name not in ("warmup", "onecycle")]
    cases += [["hydra/launcher=joblib"], ["hydra/launcher=basic"], ["hydra/sweeper=basic"]]
    cases += [[f"hydra/{d.name}={p.stem}"] for d in sorted((ROOT / "conf" / "hydra").iterdir()) if d.is_dir()
              for p in sorted(d.glob("*.yaml"))]  # ours, e.g. hydra/job_logging=runner
    cases += [["hparams_search=lenet_optuna", f"hydra/sweeper/sampler={s}"] for s in SAMPLERS]
    return cases


def compose_full(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR):
        return compose(config_name="config", overrides=["tensorboard=false", *overrides], return_hydra_config=True)


def plain_job_config(*overrides: str) -> dict:
    """The resolved run config, as a checkpoint stores it."""
    with initialize_config_dir(config_dir=CONF_DIR):
        return OmegaConf.to_container(compose(config_name="config", overrides=["tensorboard=false", *overrides]),
                                      resolve=True)


def test_every_shipped_config_option_composes_and_is_allowed():
    """Each option composes, passes the trust check, and every `_target_` it reaches is listed;
    the cheap groups are built under exactly the whitelist train() uses, nested ones included."""
    reached: set[str] = set()
    for overrides in shipped_overrides():
        cfg = compose_full(*overrides)
        check_config_trust(cfg)  # raises on anything not allowed
        reached |= {t for _, t in iter_targets(cfg, "")}
        job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        with execution_whitelist(run_whitelist(job), reset=True):
            augment = build(job.augmentation, "augmentation")
            optimizer = build(job.optimizer, "optimizer", params=[torch.zeros(2, requires_grad=True)])
            build_scheduler(job.scheduler, optimizer, steps_per_epoch=10)
            if overrides[0].startswith("model=") and "finetune" not in overrides[0]:  # finetune downloads weights
                build(job.model, "model")
        assert isinstance(augment, torch.nn.Module) and optimizer.param_groups
    allowed = set(flat(RUN_TARGETS)) | set(flat(HYDRA_TARGETS))
    assert reached <= allowed
    # The lists hold what conf/ uses, give or take the launchers/pruners we support but don't ship.
    unused = set(flat(RUN_TARGETS)) - reached
    assert not unused, f"allowed but used by no shipped config: {unused}"


def test_every_allowed_name_exists():
    """A typo in the lists would silently allow nothing; a missing plugin is fine (not installed)."""
    from hydra._internal._locate import _locate

    for name in flat(RUN_TARGETS) + flat(HYDRA_TARGETS):
        if name.startswith(("hydra_plugins.hydra_submitit", "hydra_plugins.hydra_ray")):
            continue
        assert callable(_locate(name)), name


@pytest.mark.parametrize("override, needle", [
    ("+model.x={_target_: torch.hub.load, repo_or_dir: ., model: x}", "model.x._target_=torch.hub.load"),
    ("+augmentation.steps.0.transform={_target_: os.system}", "augmentation"),
    ("model._target_=os.system", "model._target_=os.system"),
    ("+model._args_=[{_target_: builtins.exec}]", "model._args_.0._target_=builtins.exec"),
    ("+model.z=${optimizer}", "model.z._target_=torch.optim.SGD"),  # an interpolation is followed
    ("+foo={_target_: logging.FileHandler, filename: x}", "foo._target_=logging.FileHandler"),
    ("+hydra.callbacks.evil={_target_: logging.FileHandler, filename: x}", "hydra.callbacks.evil._target_"),
    ("hydra.job_logging.handlers.file.filename=/tmp/victim", "hydra.job_logging.handlers.file.filename"),
    ("hydra.job_logging.handlers.console.stream=ext://hubconf.x", "ext://hubconf.x"),
    ("+hydra.job.env_set.LD_PRELOAD=/tmp/x.so", "hydra.job.env_set.LD_PRELOAD"),
    ("hydra.output_subdir=/tmp/x", "hydra.output_subdir"),
])
def test_disallowed_targets_and_settings_are_refused_naming_the_key(override, needle):
    with pytest.raises(ConfigError, match=None) as refused:
        check_config_trust(compose_full(override))
    assert needle in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_real_runs_stored_config_passes_the_eval_check_and_allows_only_model_and_data():
    whitelist = trusted_eval_targets(OmegaConf.create(plain_job_config("augmentation=strong")))
    assert "models.lenet.LeNet" in whitelist and "data.digits.Digits" in whitelist
    assert not any(name.startswith(("torch.optim", "torchvision", "data.augment")) for name in whitelist)
    assert set(EVAL_TARGETS) == {"model", "dataset"}


# ---------------------------------------------------------------- crafted files, end to end
PAYLOADS = {
    # urllib reads data: URLs, so this writes "pwned" into `written.txt`
    "write_file": lambda d: {"_target_": "torch.hub.download_url_to_file", "url": "data:,pwned",
                             "dst": str(d / "written.txt"), "progress": False},
    # imports d/hubconf.py, which leaves `imported.marker` behind
    "import_module": lambda d: {"_target_": "torch.hub.load", "repo_or_dir": str(d), "model": "x",
                                "source": "local", "trust_repo": True},
    # opening the handler truncates victim.txt
    "file_handler": lambda d: {"_target_": "logging.FileHandler", "filename": str(d / "victim.txt"), "mode": "w"},
}


@pytest.fixture
def bait(tmp_path) -> Path:
    """A folder with a file worth keeping and a hubconf.py that marks its import."""
    (tmp_path / "victim.txt").write_text("precious\n")
    marker = tmp_path / "imported.marker"
    (tmp_path / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').write('x')\ndependencies = []\n"
                                         f"def x():\n    return 1\n")
    return tmp_path


def assert_no_trace(d: Path) -> None:
    assert (d / "victim.txt").read_text() == "precious\n"
    assert not (d / "written.txt").exists()
    assert not (d / "imported.marker").exists()


def assert_refused(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_crafted_checkpoint_is_refused_by_eval_and_leaves_no_trace(payload, bait):
    cfg = plain_job_config()
    cfg["model"] = {"_target_": "models.lenet.LeNet", "in_channels": PAYLOADS[payload](bait),
                    "image_size": 32, "num_classes": 10}  # the payload one level down
    checkpoint = bait / "crafted.pth.tar"
    torch.save({"epoch": 1, "model": {}, "optimizer": {}, "scheduler": {}, "config": cfg, "history": [],
                "rng": {}, "best_val_acc": 0.0, "best_epoch": 1}, checkpoint)
    proc = run_cli(f"checkpoint={checkpoint}", module="runner.eval", cwd=bait)
    assert_refused(proc, "model.in_channels._target_=", "is not allowed")
    assert_no_trace(bait)


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_crafted_config_dir_is_refused_by_the_runner_and_leaves_no_folder(payload, bait):
    conf = bait / "conf" / "model"
    conf.mkdir(parents=True)
    evil = {"_target_": "models.lenet.LeNet", "in_channels": PAYLOADS[payload](bait), "image_size": 32,
            "num_classes": 10}
    (conf / "evil.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(evil)))
    run_dir = bait / "run"
    proc = run_cli("--config-dir", str(bait / "conf"), "model=evil", f"hydra.run.dir={run_dir}", cwd=bait)
    assert_refused(proc, "model.in_channels._target_=", "is not allowed")
    assert_no_trace(bait)
    assert not run_dir.exists()


def test_crafted_logging_config_cannot_truncate_a_file(bait):
    """A job_logging file from elsewhere whose FileHandler points at someone else's file."""
    conf = bait / "conf" / "hydra" / "job_logging"
    conf.mkdir(parents=True)
    (conf / "evil.yaml").write_text(
        "version: 1\nhandlers:\n  f:\n    class: logging.FileHandler\n"
        f"    filename: {bait / 'victim.txt'}\n    mode: w\nroot:\n  handlers: [f]\n")
    run_dir = bait / "run"
    proc = run_cli("--config-dir", str(bait / "conf"), "hydra/job_logging=evil", f"hydra.run.dir={run_dir}",
                   cwd=bait)
    assert_refused(proc, "hydra.job_logging.handlers.f.")
    assert_no_trace(bait)
    assert not run_dir.exists()


def test_a_grid_with_one_disallowed_job_runs_none_of_them(tmp_path, bait):
    sweep_dir = tmp_path / "grid"
    proc = run_cli("-m", "epochs=1", f"+model.x=1,{{_target_: logging.FileHandler, filename: {bait / 'victim.txt'}}}",
                   f"hydra.sweep.dir={sweep_dir}")
    assert_refused(proc, "model.x._target_=logging.FileHandler is not allowed")
    assert not sweep_dir.exists()
    assert_no_trace(bait)


def test_optuna_storage_given_as_an_object_is_refused(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", "hparams_search=lenet_optuna", f"hydra.sweep.dir={sweep_dir}",
                   f"hydra.sweeper.storage={{_target_: optuna.storages.JournalStorage, "
                   f"log_storage: {{_target_: optuna.storages.journal.JournalFileBackend, "
                   f"file_path: {tmp_path / 'journal.log'}}}}}", cwd=tmp_path)
    assert_refused(proc, "hydra.sweeper.storage must be a URL string")
    assert not sweep_dir.exists() and not (tmp_path / "journal.log").exists()


# ---------------------------------------------------------------- options inside groups
@pytest.mark.parametrize("overrides, key, words", [
    (["+optimizer.foo=1"], "optimizer", ["optimizer.foo is not an option of torch.optim.SGD", "momentum"]),
    (["optimizer.momentum=abc"], "optimizer", ["optimizer.momentum=abc has the wrong type", "number"]),
    (["optimizer.momentum=-1"], "optimizer", ["optimizer.momentum=-1 is invalid", "Invalid momentum value"]),
    (["optimizer=adam", "optimizer.betas=[0.9,2]"], "optimizer", ["optimizer.betas=[0.9, 2] is invalid"]),
    (["scheduler=step", "+scheduler.foo=2"], "scheduler", ["scheduler.foo is not an option of"]),
    (["+model.foo=1"], "model", ["model.foo is not an option of models.lenet.LeNet"]),
    (["augmentation=custom", "+augmentation.steps.1.transform.foo=1"], "augmentation",
     ["augmentation.steps.1.transform.foo is not an option of torchvision.transforms.v2.RandomRotation"]),
])
def test_group_options_are_refused_in_one_line_naming_the_key(make_cfg, overrides, key, words):
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError) as refused:
        with execution_whitelist(run_whitelist(cfg), reset=True):
            if key == "optimizer":
                build(cfg.optimizer, key, params=[torch.zeros(2, requires_grad=True)])
            elif key == "scheduler":
                build_scheduler(cfg.scheduler, torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1), 10)
            elif key == "augmentation":
                build(cfg.augmentation, key)
            else:
                build(cfg[key], key)
    for word in words:
        assert word in str(refused.value), str(refused.value)
    assert "\n" not in str(refused.value)


def test_unknown_group_option_on_the_command_line_is_one_line_and_no_folder(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("+optimizer.foo=1", "epochs=1", "tensorboard=false", f"hydra.run.dir={run_dir}")
    assert_refused(proc, "optimizer.foo is not an option of torch.optim.SGD")
    assert not run_dir.exists()
    proc = run_cli("optimizer._target_=torch.optim.Foo", f"hydra.run.dir={run_dir}")
    assert_refused(proc, "optimizer._target_=torch.optim.Foo is not allowed", "torch.optim.SGD")
    assert not run_dir.exists()


def test_refused_run_cleanup_leaves_a_folder_with_files_it_did_not_write(tmp_path):
    """hydra.run.dir may be a folder of the user's: then nothing in it is touched."""
    for name in (".hydra", "tensorboard"):
        (tmp_path / name).mkdir()
    (tmp_path / "runner.log").write_text("log")
    (tmp_path / "notes.txt").write_text("mine")
    remove_refused_run_folder(tmp_path, "runner")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hydra", "notes.txt", "runner.log", "tensorboard"]
    (tmp_path / "notes.txt").unlink()
    remove_refused_run_folder(tmp_path, "runner")
    assert not tmp_path.exists()


def test_eval_help_prints_usage():
    proc = run_cli("-h", module="runner.eval")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m runner.eval checkpoint=PATH")
    assert parse_args(["--help"])["help"] and parse_args(["checkpoint=x", "-h"])["help"]


# ---------------------------------------------------------------- one Optuna study, one set of fixed overrides
def test_optuna_study_refuses_trials_with_other_fixed_overrides(tmp_path):
    import optuna

    common = ["-m", "hparams_search=lenet_optuna", "tensorboard=false", "progress=false", "compute.threads=1",
              "dataset.val_fraction=0.9", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # 180 training images
    first = run_cli(*common, "hydra.sweeper.n_trials=1", "epochs=1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]

    mixed = run_cli(*common, "hydra.sweeper.n_trials=2", cwd=tmp_path)  # epochs back to the default 10
    assert mixed.returncode == 2, mixed.stderr[-2000:]
    errors = [line for line in mixed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "epochs=1" in errors[0] and "hydra.sweeper.study_name=" in errors[0], mixed.stderr
    assert "Traceback" not in mixed.stderr

    storage = f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}"
    assert len(optuna.load_study(study_name="lenet_digits", storage=storage).trials) == 1

    # the same fixed overrides (and a speed setting, which changes no result: runner/config/keys.py) extend it
    again = run_cli(*common, "hydra.sweeper.n_trials=2", "epochs=1", "compute.cudnn_benchmark=false", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(optuna.load_study(study_name="lenet_digits", storage=storage).trials) == 2
