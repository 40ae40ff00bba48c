"""Hydra finds this module when it scans the `hydra_plugins` namespace package, in any Hydra app:
it registers the launcher class below and stores its config as `hydra/launcher=fused`."""

from hydra.core.config_store import ConfigStore

from runner.fused.launcher import FusedLauncher, FusedLauncherConf  # noqa: F401  (Hydra registers FusedLauncher)

ConfigStore.instance().store(group="hydra/launcher", name="fused", node=FusedLauncherConf, provider="sweep-runner")
