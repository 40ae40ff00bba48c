"""Building blocks the configurable models share: activations by name, and the conv switch.

Every conv model takes `conv_impl: torch | custom` and builds its convolutions through
`conv2d`, so `model.conv_impl=custom` runs the same network on the hand-written
unfold/fold convolution of `models.custom_conv` with identical parameters and state_dict keys.
"""

from __future__ import annotations

from torch import nn

from common.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "leakyrelu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "elu": nn.ELU,
}

CONV_IMPLS = ("torch", "custom")


def activation(name: str) -> nn.Module:
    """A fresh activation module from its config name (case-insensitive), e.g. 'relu', 'LeakyReLU'."""
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise ConfigError(f"model.activation={name} is not known; use one of relu, leaky_relu, gelu, silu, mish, elu")
    return ACTIVATIONS[key]()


def check_conv_impl(conv_impl: str) -> str:
    if conv_impl not in CONV_IMPLS:
        raise ConfigError(f"model.conv_impl={conv_impl} is not known; use model.conv_impl=torch or custom")
    return conv_impl


def conv2d(conv_impl: str, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
           padding: int | str = 0, bias: bool = True) -> nn.Conv2d:
    """An `nn.Conv2d`, or its unfold/fold twin when conv_impl='custom' (same parameters, same keys)."""
    if check_conv_impl(conv_impl) == "custom":
        from models.custom_conv import Conv2d

        return Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
