"""ResNet built by hand from residual blocks, as the course asks: ResNet-50 and its 18/34/101/152 kin.

The layout and module names follow torchvision's resnet.py (v1.5: the stride sits on the 3x3
conv), so the parameter count equals torchvision's for the same class count and a torchvision
state_dict loads into it unchanged; tests/test_models.py checks both.

    conv1 7x7/2 pad 3 + BN + ReLU -> maxpool 3/2 pad 1
    -> layer1..layer4 (strides 1, 2, 2, 2; Bottleneck blocks [3, 4, 6, 3] for ResNet-50)
    -> adaptive average pool -> linear head
"""

from __future__ import annotations

import torch
from torch import nn

from common.errors import ConfigError
from models.layers import check_conv_impl, conv2d


class BasicBlock(nn.Module):
    """3x3 -> 3x3 residual block of ResNet-18/34."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1, conv_impl: str = "torch") -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = conv2d(conv_impl, in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv2d(conv_impl, width, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride, conv_impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 (reduce) -> 3x3 (stride here) -> 1x1 (expand x4), each conv + BN + ReLU.

    The last ReLU comes after the shortcut is added, as in the paper; the shortcut is a
    1x1 conv + BN projection when the stride or the channel count changes, else the identity.
    """

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, conv_impl: str = "torch") -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = conv2d(conv_impl, in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv2d(conv_impl, width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv2d(conv_impl, width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride, conv_impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(in_channels: int, out_channels: int, stride: int, conv_impl: str) -> nn.Module | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(conv2d(conv_impl, in_channels, out_channels, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


# depth -> (block, blocks per stage); the table of the ResNet paper.
VARIANTS: dict[int, tuple[type[nn.Module], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}
STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)


class ResNet(nn.Module):
    """ResNet-`depth` for `num_classes` classes on `in_channels`-channel images of any size.

    The 7x7/2 stem and the max-pool divide the side by 4 and the stages by 8 more, so a 32px
    image reaches layer4 at 1x1; the adaptive pool makes any size >= 1 work, though small
    images waste most of the network (it was designed for 224px).
    """

    def __init__(self, in_channels: int = 3, image_size: int = 224, num_classes: int = 1000, depth: int = 50,
                 conv_impl: str = "torch", zero_init_residual: bool = False) -> None:
        super().__init__()
        if depth not in VARIANTS:
            raise ConfigError(f"model.depth={depth} is not a ResNet variant; use one of {sorted(VARIANTS)}")
        check_conv_impl(conv_impl)
        block, counts = VARIANTS[depth]
        self.conv1 = conv2d(conv_impl, in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        for i, (width, count, stride) in enumerate(zip(STAGE_WIDTHS, counts, STAGE_STRIDES), 1):
            blocks = []
            for j in range(count):
                blocks.append(block(channels, width, stride if j == 0 else 1, conv_impl))
                channels = width * block.expansion
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # He init for the ReLU convs, as torchvision does; the Linear keeps PyTorch's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # each block starts as the identity (Goyal et al., 2017)
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
