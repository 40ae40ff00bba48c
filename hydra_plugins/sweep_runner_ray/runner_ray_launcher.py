"""Hydra finds this module when it scans the `hydra_plugins` namespace package, in any Hydra app:
it registers the launcher class below and stores its config as `hydra/launcher=runner_ray`, beside the
hydra-ray-launcher plugin's own `ray` (whose launcher this one runs on; docs/ray.md). Ray itself
loads only when a sweep launches."""

from hydra.core.config_store import ConfigStore

from runner.sweep.ray_launcher import TARGET, RayLauncher  # noqa: F401  (Hydra registers RayLauncher)

# ray.init's arguments (`init`) and @ray.remote's options for every job (`remote`). Only the command line
# may set init, and remote's keys other than num_cpus, num_gpus and memory (runner/trust/targets.py).
# init.address: HOST:PORT of a running cluster; null: the cluster RAY_ADDRESS names or `ray start` started
# on this machine, else a Ray instance of the sweep's own; local: always one of its own.
# remote.num_gpus unset: 1 for a job whose device is cuda, none otherwise.
ConfigStore.instance().store(group="hydra/launcher", name="runner_ray", provider="sweep-runner",
                             node={"_target_": TARGET, "ray": {"init": {"address": None}, "remote": {}}})
