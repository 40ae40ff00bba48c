"""sweep-runner: Hydra-configured image-classification runs, sweeps and result tables."""
