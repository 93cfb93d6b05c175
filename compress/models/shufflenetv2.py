"""CIFAR ShuffleNetV2 (Ma et al. 2018): CRD's ``models/ShuffleNetv2.py`` (github.com/HobbitLong/RepDistiller,
also mdistiller's), 1x1 stem and no max-pool; ``shufflenetv2`` at net_size 1 is the reference's ``ShuffleV2``.

Module for module as in the reference: the same tensor names (a ``linear`` classifier) and its initialisation,
which is PyTorch's default for every layer (the reference sets none), so its checkpoints load as they are.
"""

import torch
import torch.nn.functional as F
from kdforge.compress.errors import UserError
from torch import nn

from .registry import register

# net_size -> (stage widths + last 1x1 conv width, basic blocks per stage after its down block)
CONFIGS: dict[float, tuple[tuple[int, int, int, int], tuple[int, int, int]]] = {
    0.2: ((40, 80, 160, 512), (3, 3, 3)),
    0.3: ((40, 80, 160, 512), (3, 7, 3)),
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2: ((224, 488, 976, 2048), (3, 7, 3)),
}


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """Interleave the channels of ``groups`` equal groups."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class BasicBlock(nn.Module):
    """Split channels in half; the second half goes 1x1 -> 3x3 depthwise -> 1x1; concat, shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.split = channels // 2
        ch = channels - self.split
        self.conv1 = nn.Conv2d(ch, ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1, groups=ch, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.conv3 = nn.Conv2d(ch, ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, x = x[:, : self.split], x[:, self.split :]
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([keep, out], 1))


class DownBlock(nn.Module):
    """Stride-2 block: branches 3x3 dw -> 1x1 and 1x1 -> 3x3 dw -> 1x1 both halve the resolution; concat."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = out_ch // 2
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, 2, 1, groups=in_ch, bias=False)  # left branch
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv2 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_ch, mid, 1, bias=False)  # right branch
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    """1x1 conv-BN stem (24 ch), three stages of DownBlock + BasicBlocks, 1x1 conv-BN, pool, ``linear``."""

    def __init__(self, num_classes: int, net_size: float = 1) -> None:
        super().__init__()
        widths, repeats = CONFIGS[net_size]
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_ch = 24
        for i in range(3):
            blocks = [DownBlock(in_ch, widths[i])] + [BasicBlock(widths[i]) for _ in range(repeats[i])]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_ch = widths[i]
        self.conv2 = nn.Conv2d(in_ch, widths[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[3], num_classes)
        self.stage_names = ["layer1", "layer2", "layer3"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        x = F.relu(self.bn2(self.conv2(x)))
        return self.linear(torch.flatten(self.avgpool(x), 1))


@register("shufflenetv2")
def shufflenetv2(num_classes: int, net_size: float = 1) -> ShuffleNetV2:
    """CRD's CIFAR ShuffleNetV2; ``net_size`` is one of 0.2, 0.3, 0.5, 1, 1.5, 2 (the reference's table)."""
    if net_size not in CONFIGS:
        raise UserError(f"shufflenetv2 net_size must be in {sorted(CONFIGS)}, got {net_size!r}: use 1")
    return ShuffleNetV2(num_classes, net_size)
