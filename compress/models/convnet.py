"""Plain small CNNs ``cnn_<convs>_<width>``: stacks of 3x3 conv-BN-ReLU, a 2x2 max-pool between stages,
global average pooling and a Linear ``classifier``. Tiny on purpose: a student far smaller than its teacher
(``cnn_2_8``: 2 convs, 1.6k parameters) next to a teacher that learns digits to 99% (``cnn_6_32``)."""

import re
from functools import partial

import torch
from kdforge.compress.errors import UserError
from torch import nn

from .common import init_weights
from .registry import Builder, register

CONVS_PER_STAGE = 2
COMMON = ((2, 8), (4, 16), (6, 32))
_NAME = re.compile(r"cnn_(\d{1,9})_(\d{1,9})")  # bounded: int() of 5000 digits raises


def stage_widths(convs: int, width: int) -> list[list[int]]:
    """Conv widths per stage: pairs of convs, the width doubling at each stage (2 convs -> [[w], [2w]])."""
    if convs <= CONVS_PER_STAGE:
        return [[width * 2**i] for i in range(convs)]
    stages: list[list[int]] = []
    for index in range(convs):
        stage = index // CONVS_PER_STAGE
        if stage == len(stages):
            stages.append([])
        stages[stage].append(width * 2**stage)
    return stages


class PlainCNN(nn.Module):
    """``stage0``..``stageN`` of 3x3 conv-BN-ReLU, max-pool between stages, global pool, ``classifier``."""

    def __init__(self, convs: int, width: int, num_classes: int) -> None:
        super().__init__()
        in_ch = 3
        self.stage_names: list[str] = []
        for index, widths in enumerate(stage_widths(convs, width)):
            layers: list[nn.Module] = []
            for out_ch in widths:
                layers += [nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU()]
                in_ch = out_ch
            self.add_module(f"stage{index}", nn.Sequential(*layers))
            self.stage_names.append(f"stage{index}")
        self.pool = nn.MaxPool2d(2, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, name in enumerate(self.stage_names):
            if index:
                x = self.pool(x)
            x = getattr(self, name)(x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def cnn(convs: int, width: int, num_classes: int) -> PlainCNN:
    """A ``cnn_<convs>_<width>``."""
    return PlainCNN(convs, width, num_classes)


def builder_for(name: str) -> Builder | None:
    """A builder for any ``cnn_<convs>_<width>`` name (UserError on a bad size), or None for other names."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    convs, width = int(match[1]), int(match[2])
    if not 1 <= convs <= 12 or not 1 <= width <= 512:
        raise UserError(f"model {name!r}: cnn_<convs>_<width> takes 1-12 convs and width 1-512")
    return partial(cnn, convs, width)


for _convs, _width in COMMON:
    register(f"cnn_{_convs}_{_width}")(partial(cnn, _convs, _width))
