"""What the runner trusts: the exact classes each config node may name, and the settings only a
command line may set. runner/trust/targets.py checks every config against these lists.

To allow a new class, add its exact dotted name (as configs write it) to the list for its place.
Library classes are listed one by one, never as `package.*`: `torch.*` alone reaches
`torch.hub.load` (imports a `hubconf.py`) and file-writing helpers.
"""

from __future__ import annotations

MODEL_TARGETS = (
    "models.lenet.LeNet", "models.cnn5.CNN5", "models.resnet.ResNet", "models.finetune.FineTuneResNet",
    "models.simplenet.SimpleNet", "models.vit.SimpleViT",
)
DATASET_TARGETS = (
    "data.digits.Digits", "data.miniplaces.MiniPlaces", "data.torchvision_sets.MNIST",
    "data.torchvision_sets.CIFAR10", "data.torchvision_sets.ImageFolder",
)
OPTIMIZER_TARGETS = (
    "torch.optim.SGD", "torch.optim.Adam", "torch.optim.AdamW", "torch.optim.NAdam", "torch.optim.RAdam",
)
SCHEDULER_TARGETS = (
    "torch.optim.lr_scheduler.ConstantLR", "torch.optim.lr_scheduler.CosineAnnealingLR",
    "torch.optim.lr_scheduler.OneCycleLR", "torch.optim.lr_scheduler.StepLR", "runner.run.schedulers.LinearWarmup",
)
AUGMENTATION_TARGETS = (
    "torch.nn.Identity", "data.augment.Compose", "data.augment.RandomCrop", "data.augment.RandomHorizontalFlip",
    "data.augment.PerImage", "torchvision.transforms.v2.Compose", "torchvision.transforms.v2.RandomResizedCrop",
    "torchvision.transforms.v2.RandomRotation", "torchvision.transforms.v2.ColorJitter",
)
ADVERSARY_TARGETS = ("runner.run.attacks.Adversary",)
LOGGER_TARGETS = ("runner.record.trackers.MLflowTracker", "runner.record.trackers.WandbTracker")
# Config group -> the classes a `_target_` anywhere inside it may name.
RUN_TARGETS: dict[str, tuple[str, ...]] = {
    "model": MODEL_TARGETS, "dataset": DATASET_TARGETS, "optimizer": OPTIMIZER_TARGETS,
    "scheduler": SCHEDULER_TARGETS, "augmentation": AUGMENTATION_TARGETS, "adversary": ADVERSARY_TARGETS,
    "logger": LOGGER_TARGETS,
}
# `runner.eval` and anything else that rebuilds a run from a config read out of a file.
EVAL_TARGETS: dict[str, tuple[str, ...]] = {"model": MODEL_TARGETS, "dataset": DATASET_TARGETS}

# Optuna's own pruners (PatientPruner wraps another): what `hydra.sweeper.pruner` may name.
PRUNER_TARGETS = tuple(f"optuna.pruners.{name}" for name in (
    "NopPruner", "MedianPruner", "PercentilePruner", "SuccessiveHalvingPruner", "HyperbandPruner",
    "ThresholdPruner", "PatientPruner", "WilcoxonPruner"))
_OPTUNA_IMPL = "hydra_plugins.hydra_optuna_sweeper._impl"
# Exact node -> the classes Hydra may instantiate there ("hydra.callbacks.*": any one callback).
HYDRA_TARGETS: dict[str, tuple[str, ...]] = {
    "hydra.sweeper": ("hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                      "runner.search.sweeper.ResumableOptunaSweeper"),
    "hydra.sweeper.sampler": (
        "optuna.samplers.TPESampler", "optuna.samplers.RandomSampler", "optuna.samplers.GridSampler",
        "optuna.samplers.CmaEsSampler", "optuna.samplers.GPSampler", "optuna.samplers.QMCSampler",
        f"{_OPTUNA_IMPL}.create_nsgaii_sampler", f"{_OPTUNA_IMPL}.create_nsgaiii_sampler"),
    "hydra.sweeper.pruner": PRUNER_TARGETS,
    "hydra.launcher": (
        "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
        "runner.fused.launcher.FusedLauncher",
        "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
        "runner.sweep.ray_launcher.RayLauncher"),
    "hydra.callbacks.*": ("runner.sweep.callbacks.LockSweepDir", "runner.sweep.callbacks.CollectOnMultirunEnd"),
}

# Logging (hydra.job_logging, hydra.hydra_logging): consoles, and the run folder's own log file.
LOG_HANDLER_KEYS = {"logging.StreamHandler": {"class", "level", "formatter", "stream"},
                    "logging.FileHandler": {"class", "level", "formatter", "filename"}}
LOG_STREAMS = ("ext://sys.stdout", "ext://sys.stderr")
RUN_LOG_FILE = "${hydra.runtime.output_dir}/${hydra.job.name}.log"  # as written, before interpolation
LOG_FORMATTER_KEYS = {"format", "datefmt", "style"}
# The environment variables a job may set (`hydra.job.env_set`), from any source: which GPUs it
# sees, how many threads its libraries start, cuBLAS's deterministic workspace, and the two the
# Optuna sweeper sets for a trial's job. Anything else may choose a program (CC, CXX, PATH,
# BASH_ENV, SHELL), a library (LD_*, PYTHON*) or a cache folder (TORCHINDUCTOR_*, TRITON_*) for
# torch.compile and the tools it starts: set those in your shell, where they are yours.
OPTUNA_TRIAL_ENV, OPTUNA_STUDY_ENV = "RUNNER_OPTUNA_TRIAL", "RUNNER_OPTUNA_STUDY"
ALLOWED_ENV = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "OPENBLAS_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG", OPTUNA_TRIAL_ENV, OPTUNA_STUDY_ENV)
# Settings only an override typed on the command line may set (runner/trust/preflight.py checks where each
# came from; a sweep job may not change them): shell lines or a program in a cluster job's script, and
# where a tracker sends or writes a run's data (by default, a store inside the sweep dir).
_SCRIPT = "it puts commands into the job's script"
COMMAND_LINE_ONLY = {"hydra.launcher.setup": _SCRIPT, "hydra.launcher.srun_args": _SCRIPT,
                     "hydra.launcher.python": _SCRIPT, "hydra.launcher.additional_parameters": _SCRIPT,
                     "logger.mlflow.tracking_uri": "it chooses where the runs' data is sent or written"}
# Nodes each of whose settings only the command line may set, but for the keys named: where a Ray
# sweep's jobs run and the environment they get (ray.init's address, runtime_env, temp dir...; a
# task's runtime_env, scheduling strategy, or custom resources that pin it to a node). How much CPU,
# GPU and memory a job asks for may come from a config file.
_RAY = "it chooses where the sweep's jobs run or what they run with"
COMMAND_LINE_ONLY_NODES = {"hydra.launcher.ray.init": (_RAY, ()),
                           "hydra.launcher.ray.remote": (_RAY, ("num_cpus", "num_gpus", "memory"))}

# The plugins' own configs whose place our plugin takes, with the config name that chooses ours.
# The Ray plugin's own launchers are refused: it joins Ray once per trial thread, puts a relative sweep
# dir wherever a worker runs, and its AWS launcher takes setup commands from config files.
OURS_INSTEAD = {
    "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper":
        ("hydra/sweeper=runner_optuna", "the resumable sweeper with the same keys"),
    "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher":
        ("hydra/launcher=runner_ray", "the Ray launcher with the same keys, safe for parallel trials"),
}
