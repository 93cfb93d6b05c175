"""Wide ResNets (Zagoruyko & Komodakis 2016) ``wrn_<depth>_<width>``: CRD's ``models/wrn.py``
(github.com/HobbitLong/RepDistiller, also mdistiller's), the CIFAR-100 distillation teachers and students.

The default is the reference module for module: pre-activation blocks (BN-ReLU-conv) in ``block<i>.layer``,
a 1x1 ``convShortcut`` where the width changes, a final ``bn1`` before the pool, the reference's
initialisation (``init_wrn``), so its released teachers load as they are. In a pre-activation block only the
first conv feeds a BatchNorm: conv-BN folding folds it (and the stem conv where the first block widens) and
keeps the other BatchNorms, which normalise a residual sum.

``preact=False`` is kdforge's earlier post-activation layout (conv-BN-ReLU; stem ``bn1``, blocks
``block<i>.<j>`` with a conv-BN ``shortcut``, no final BN): the same convs, within 0.2% of the same
parameter count, every conv folded into its BatchNorm; checkpoints trained with it before load into it.
"""

import re
from functools import partial

import torch
import torch.nn.functional as F
from kdforge.compress.errors import UserError
from torch import nn

from .common import init_wrn
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
    """CRD's pre-activation wide block: BN-ReLU-conv, dropout, BN-ReLU-conv, add.

    Where the width changes, the shortcut is a 1x1 ``convShortcut`` of the activated input (the reference's
    name); otherwise the input itself is added."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.convShortcut: nn.Conv2d | None = None  # the reference's tensor name
        if in_ch != out_ch:
            self.convShortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(pre)))
        out = self.conv2(F.dropout(out, self.dropout, self.training))
        return out + (x if self.convShortcut is None else self.convShortcut(pre))


class NetworkBlock(nn.Module):
    """A stage of pre-activation blocks, held in ``layer`` as in the reference (``block1.layer.0.conv1``)."""

    def __init__(self, layer: nn.Sequential) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """CRD's WRN: 3x3 stem conv, three stages of (depth-4)/6 pre-activation blocks (widths 16k, 32k, 64k;
    stride 1, 2, 2), final BN-ReLU (``bn1``), global pool, ``fc``."""

    def __init__(self, depth: int, width: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        check_depth_width(depth, width)
        n = (depth - 4) // 6
        widths = (16, 16 * width, 32 * width, 64 * width)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        # registered before the stages (the reference registers it after them; names and tensors are the same)
        # so that no conv is registered right before it: it normalises a residual sum, not a conv's output
        self.bn1 = nn.BatchNorm2d(widths[3])
        for i, stride in enumerate((1, 2, 2)):
            blocks = [PreActWideBlock(widths[i], widths[i + 1], stride, dropout)]
            blocks += [PreActWideBlock(widths[i + 1], widths[i + 1], 1, dropout) for _ in range(n - 1)]
            self.add_module(f"block{i + 1}", NetworkBlock(nn.Sequential(*blocks)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        self.stage_names = ["block1", "block2", "block3"]
        init_wrn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        x = F.relu(self.bn1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class PostActWideResNet(nn.Module):
    """kdforge's earlier WRN (``preact=False``): conv-BN-ReLU stem, three stages of post-activation blocks
    (``block<i>.<j>``), global pool, ``fc``."""

    def __init__(self, depth: int, width: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        check_depth_width(depth, width)
        n = (depth - 4) // 6
        widths = (16, 16 * width, 32 * width, 64 * width)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages = []
        for i, stride in enumerate((1, 2, 2)):
            blocks = [WideBlock(widths[i], widths[i + 1], stride, dropout)]
            blocks += [WideBlock(widths[i + 1], widths[i + 1], 1, dropout) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        self.stage_names = ["block1", "block2", "block3"]
        init_wrn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.block3(self.block2(self.block1(x)))
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


def wrn(
    depth: int, width: int, num_classes: int, dropout: float = 0.0, preact: bool = True
) -> WideResNet | PostActWideResNet:
    """Build ``wrn_<depth>_<width>``; options ``dropout`` (inside blocks) and ``preact`` (True: CRD's
    pre-activation WRN, the default; False: kdforge's earlier post-activation layout)."""
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise UserError(f"wrn dropout must be a number in [0, 1), got {dropout!r}: e.g. dropout=0.3")
    if not isinstance(preact, bool):
        raise UserError(f"wrn preact must be true or false, got {preact!r}")
    network = WideResNet if preact else PostActWideResNet
    return network(depth, width, num_classes, dropout=dropout)


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
