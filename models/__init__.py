"""Model zoo: one module per architecture, each built from `conf/model/<name>.yaml` by `_target_`."""

from torch import nn

from models.cost import ModelCost, model_cost  # parameters and MACs per image, measured

__all__ = ["ModelCost", "count_model_params", "model_cost"]


def count_model_params(model: nn.Module) -> float:
    """Trainable parameters, in millions, unrounded (LeNet on 3x32x32, 100 classes: 0.151324)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
