"""Print the parameter count and MACs per image of the model a run would build.

    python -m runner.profile model=cnn5 dataset=imagefolder dataset.image_size=224 dataset.num_classes=10

takes the same overrides as `python -m runner`; the counting is models.cost.model_cost.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common.errors import ConfigError
from models.cost import model_cost


def main(overrides: list[str]) -> None:
    """Compose the run config from `overrides`, build its model, print what it costs."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import execution_whitelist, instantiate

    import runner.config.schema  # noqa: F401  (registers the run schema the config composes with)
    from runner.trust.targets import run_whitelist

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf)):
        cfg = compose("config", overrides=overrides)
    try:
        with execution_whitelist(run_whitelist(cfg), reset=True):  # checks every _target_ first
            model = instantiate(cfg.model)
    except ConfigError as e:  # one line, as `python -m runner` prints it
        sys.exit(f"error: {str(e).splitlines()[0]}")
    size, channels = int(cfg.model.image_size), int(cfg.model.in_channels)
    cost = model_cost(model, channels, size)
    print(f"{cfg.model._target_.rsplit('.', 1)[-1]} on {channels}x{size}x{size}, "
          f"{cfg.model.num_classes} classes: {cost.params:,} parameters ({cost.trainable:,} trainable), "
          f"{cost.macs:,} MACs per image")


if __name__ == "__main__":
    main(sys.argv[1:])
