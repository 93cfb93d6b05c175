"""Wide ResNets (Zagoruyko & Komodakis 2016) ``wrn_<depth>_<width>`` with the CRD / mdistiller layout.

The default block is post-activation (conv-BN-ReLU) so every conv has a BatchNorm right after it, which the
conv-BN folding relies on; ``preact=True`` gives CRD's original pre-activation block (BN-ReLU-conv) instead,
whose convs cannot be folded. Both have the same convs and within 0.2% of the same parameter count.
"""

import re
from functools import partial

import torch
import torch.nn.functional as F
from kdforge.compress.errors import UserError
from torch import nn

from .common import init_weights
from .registry import Builder, register

MAX_DEPTH, MAX_WIDTH = 100, 16  # wrn_28_10 (36M parameters) is the largest in common use
COMMON = ((16, 1), (16, 2), (16, 4), (16, 8), (28, 10), (40, 1), (40, 2), (40, 4))
_NAME = re.compile(r"wrn_(\d{1,9})_(\d{1,9})")  # bounded: int() of 5000 digits raises


class WideBlock(nn.Module):
    """Post-activation wide block: conv-BN-ReLU, dropout, conv-BN, add (1x1 conv-BN shortcut), ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.dropout(out, self.dropout, self.training)
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class PreActWideBlock(nn.Module):
    """CRD's pre-activation wide block: BN-ReLU-conv, dropout, BN-ReLU-conv, add (1x1 conv shortcut)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(pre)))
        out = self.conv2(F.dropout(out, self.dropout, self.training))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """3x3 stem + three stages of (depth-4)/6 wide blocks (widths 16k, 32k, 64k) + global pool + ``fc``."""

    def __init__(
        self, depth: int, width: int, num_classes: int, dropout: float = 0.0, preact: bool = False
    ) -> None:
        super().__init__()
        check_depth_width(depth, width)
        n = (depth - 4) // 6
        widths = (16, 16 * width, 32 * width, 64 * width)
        block = PreActWideBlock if preact else WideBlock
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = None if preact else nn.BatchNorm2d(16)
        stages = []
        for i, stride in enumerate((1, 2, 2)):
            blocks = [block(widths[i], widths[i + 1], stride, dropout)]
            blocks += [block(widths[i + 1], widths[i + 1], 1, dropout) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = stages
        self.bn_out = nn.BatchNorm2d(widths[3]) if preact else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        self.stage_names = ["block1", "block2", "block3"]
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if self.bn1 is not None:
            x = F.relu(self.bn1(x))
        x = self.block3(self.block2(self.block1(x)))
        if self.bn_out is not None:
            x = F.relu(self.bn_out(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def check_depth_width(depth: int, width: int) -> None:
    """Raise UserError unless ``depth - 4`` is a positive multiple of 6 and both are within bounds."""
    if depth < 10 or (depth - 4) % 6:
        raise UserError(f"wrn depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}: e.g. wrn_40_{width}")
    if width < 1:
        raise UserError(f"wrn width must be >= 1, got {width}: use e.g. wrn_{depth}_1")
    if depth > MAX_DEPTH or width > MAX_WIDTH:  # wrn_10000_10 would take minutes and gigabytes to build
        raise UserError(
            f"wrn_<depth>_<width> takes depth <= {MAX_DEPTH} and width <= {MAX_WIDTH}, got {depth}, {width}"
        )


def wrn(depth: int, width: int, num_classes: int, dropout: float = 0.0, preact: bool = False) -> WideResNet:
    """Build ``wrn_<depth>_<width>``; options ``dropout`` (inside blocks) and ``preact`` (CRD block order)."""
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise UserError(f"wrn dropout must be a number in [0, 1), got {dropout!r}: e.g. dropout=0.3")
    return WideResNet(depth, width, num_classes, dropout=dropout, preact=preact)


def builder_for(name: str) -> Builder | None:
    """A builder for any ``wrn_<depth>_<width>`` name (UserError on a bad depth), or None for other names."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    depth, width = int(match[1]), int(match[2])
    check_depth_width(depth, width)
    return partial(wrn, depth, width)


for _depth, _width in COMMON:
    register(f"wrn_{_depth}_{_width}")(partial(wrn, _depth, _width))
