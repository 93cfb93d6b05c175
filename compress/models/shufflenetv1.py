"""CIFAR ShuffleNet (Zhang et al. 2018), ``shufflenetv1``: CRD's ``models/ShuffleNetv1.py`` ``ShuffleV1``
(github.com/HobbitLong/RepDistiller, also mdistiller's), the student of the ResNet50 / WRN / resnet32x4
teachers in the CRD and DKD tables.

Module for module as in the reference: 1x1 stem (24 ch), three stages (240, 480, 960 channels; 4, 8, 4
blocks; 3 groups), the same tensor names (``layer<i>.<j>.conv1`` ... ``bn3``, a ``linear`` classifier) and
PyTorch's default initialisation (the reference sets none), so its checkpoints load as they are.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register
from .shufflenetv2 import channel_shuffle

OUT_PLANES, BLOCKS, GROUPS = (240, 480, 960), (4, 8, 4), 3  # the reference's ShuffleV1 cfg


class Bottleneck(nn.Module):
    """Grouped 1x1 -> shuffle -> 3x3 depthwise -> grouped 1x1, each conv-BN (ReLU after the first two);
    stride 2: concatenated with a 3x3 average pool of the input, else added to it; then ReLU.

    As in the reference, the first grouped 1x1 of the network (24 input channels) is not grouped."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid = out_ch // 4
        self.groups = 1 if in_ch == 24 else groups
        self.conv1 = nn.Conv2d(in_ch, mid, 1, groups=self.groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_ch, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        return F.relu(torch.cat([out, res], 1) if self.stride == 2 else out + res)


class ShuffleNetV1(nn.Module):
    """1x1 conv-BN stem, three stages (each one's first block strides 2 and concatenates), ``linear``."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_ch = 24
        self.stage_names: list[str] = []
        for i, (out_ch, count) in enumerate(zip(OUT_PLANES, BLOCKS, strict=True)):
            # the first block's output is concatenated with its pooled input: it adds out_ch - in_ch channels
            blocks = [Bottleneck(in_ch, out_ch - in_ch, 2, GROUPS)]
            blocks += [Bottleneck(out_ch, out_ch, 1, GROUPS) for _ in range(count - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.stage_names.append(f"layer{i + 1}")
            in_ch = out_ch
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.linear(torch.flatten(self.avgpool(x), 1))


@register("shufflenetv1")
def shufflenetv1(num_classes: int) -> ShuffleNetV1:
    """CRD's CIFAR ``ShuffleV1`` (groups 3, 0.95M parameters at 100 classes)."""
    return ShuffleNetV1(num_classes)
