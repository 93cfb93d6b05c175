"""CIFAR ResNets (He et al. 2016) of the CRD / mdistiller benchmarks: resnet8..110, resnet8x4, resnet32x4.

CRD's ``models/resnet.py`` (github.com/HobbitLong/RepDistiller) module for module: the same tensor names
and the same initialisation (``init_resnet``: the ``fc`` keeps PyTorch's default), so its released teachers
load as they are."""

import torch
import torch.nn.functional as F
from torch import nn

from .common import init_resnet
from .registry import register

NARROW = (16, 16, 32, 64)  # stem, stage1, stage2, stage3 widths
WIDE = (32, 64, 128, 256)  # the "x4" variants


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN pairs with a post-activation residual add (1x1 conv-BN shortcut when shapes change)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class CifarResNet(nn.Module):
    """3x3 stem + three stages of (depth-2)/6 BasicBlocks (stride 1, 2, 2) + global pool + ``fc``."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = _stage(widths[0], widths[1], n, stride=1)
        self.layer2 = _stage(widths[1], widths[2], n, stride=2)
        self.layer3 = _stage(widths[2], widths[3], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        self.stage_names = ["layer1", "layer2", "layer3"]
        init_resnet(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _stage(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_ch, out_ch, stride)]
    layers += [BasicBlock(out_ch, out_ch) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _register(name: str, depth: int, widths: tuple[int, int, int, int]) -> None:
    @register(name)
    def build(num_classes: int) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(f"resnet{_depth}", _depth, NARROW)
_register("resnet8x4", 8, WIDE)
_register("resnet32x4", 32, WIDE)
