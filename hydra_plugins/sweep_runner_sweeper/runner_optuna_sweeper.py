"""Hydra finds this module when it scans the `hydra_plugins` namespace package, in any Hydra app:
it registers the sweeper class below and puts its config files on the search path, so that
`hydra/sweeper=runner_optuna` (and `hydra/sweeper/pruner=...`) work without this project's entry point.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from runner.search.sweeper import ResumableOptunaSweeper  # noqa: F401  (Hydra registers the Plugin classes it finds here)


class SweepRunnerSearchPath(SearchPathPlugin):
    """Appends the sweeper's config files: after the app's own, which can still override them."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="sweep-runner", path="pkg://hydra_plugins.sweep_runner_sweeper.conf")
