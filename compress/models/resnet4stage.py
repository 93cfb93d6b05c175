"""Four-stage ResNets for 32x32 inputs, ``resnet18`` and ``resnet50``: CRD's ``models/resnetv2.py``
(github.com/HobbitLong/RepDistiller; its ``ResNet18``, ``ResNet50``), the CIFAR-100 teacher of the
MobileNetV2 / ShuffleNet students.

He et al.'s ImageNet ResNets with a 3x3 stride-1 stem and no max-pool (stages at 32, 16, 8, 4 px), module for
module as in the reference: the same tensor names (``shortcut.0`` / ``shortcut.1`` projections, a ``linear``
classifier) and the same initialisation (``init_resnet``), so its released teachers load as they are.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .common import init_resnet
from .registry import register


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN pairs, post-activation residual add (1x1 conv-BN ``shortcut`` when shapes change)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_ch, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here), 1x1 expand (x4), each conv-BN; post-activation residual add."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_ch, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """1x1 conv-BN projection when the shape changes, else an empty Sequential (identity, no tensors)."""
    if stride == 1 and in_ch == out_ch:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


class ResNet4Stage(nn.Module):
    """3x3 stem (64) + four stages (64, 128, 256, 512 planes; stride 1, 2, 2, 2), global pool, ``linear``."""

    def __init__(
        self, block: type[BasicBlock | Bottleneck], blocks: tuple[int, int, int, int], num_classes: int
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_ch = 64
        self.stage_names: list[str] = []
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            layers: list[nn.Module] = []
            for j in range(count):
                layers.append(block(in_ch, planes, (1 if i == 0 else 2) if j == 0 else 1))
                in_ch = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            self.stage_names.append(f"layer{i + 1}")
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_ch, num_classes)
        init_resnet(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.linear(torch.flatten(self.avgpool(x), 1))


@register("resnet18")
def resnet18(num_classes: int) -> ResNet4Stage:
    """CRD's CIFAR ``ResNet18`` (BasicBlocks 2-2-2-2, 11.2M parameters at 100 classes)."""
    return ResNet4Stage(BasicBlock, (2, 2, 2, 2), num_classes)


@register("resnet50")
def resnet50(num_classes: int) -> ResNet4Stage:
    """CRD's CIFAR ``ResNet50`` (Bottlenecks 3-4-6-3, 23.7M parameters at 100 classes)."""
    return ResNet4Stage(Bottleneck, (3, 4, 6, 3), num_classes)
