"""CIFAR MobileNetV2 (Sandler et al. 2018): CRD's ``models/mobilenetv2.py``
(github.com/HobbitLong/RepDistiller, also mdistiller's). ``mobilenetv2`` at its defaults is the reference's
``mobile_half`` (expansion 6, width 0.5), which its checkpoints and tables call ``MobileNetV2``.

Module for module as in the reference: the same tensor names (``conv1.0``, ``blocks.<i>.<j>.conv.<k>``,
``conv2.0``, the Linear in ``classifier.0``) and the same initialisation (``init_vgg``: classifier
N(0, 0.01)), so its released checkpoints load as they are.
"""

import torch
from torch import nn

from .common import init_vgg
from .registry import register

# (expansion or None for the build-time T, out channels, repeats, first stride), as in CRD
SETTINGS = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """Conv (no bias) -> BN -> ReLU layers."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(out_ch), nn.ReLU()]


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection, residual when stride 1 and shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = in_ch * expansion
        self.use_residual = stride == 1 and in_ch == out_ch
        self.conv = nn.Sequential(
            *conv_bn_relu(in_ch, mid, 1),
            *conv_bn_relu(mid, mid, 3, stride, groups=mid),
            nn.Conv2d(mid, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """Stride-2 3x3 stem, 7 inverted-residual groups (``blocks.0``..``blocks.6``), 1x1 conv (1280),
    global pool, ``classifier``."""

    def __init__(self, num_classes: int, width_mult: float = 0.5, expansion: int = 6) -> None:
        super().__init__()
        in_ch = int(32 * width_mult)
        self.conv1 = nn.Sequential(*conv_bn_relu(3, in_ch, 3, stride=2))
        groups = []
        for t, c, n, s in SETTINGS:
            out_ch = int(c * width_mult)
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t or expansion))
                in_ch = out_ch
            groups.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(groups)
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = nn.Sequential(*conv_bn_relu(in_ch, last, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))  # the reference's classifier.0
        self.stage_names = ["blocks.1", "blocks.2", "blocks.4", "blocks.6"]  # CRD's feature points
        init_vgg(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        x = self.conv2(x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))


@register("mobilenetv2")
def mobilenetv2(num_classes: int, width_mult: float = 0.5, expansion: int = 6) -> MobileNetV2:
    """CRD's CIFAR MobileNetV2 ("mobile_half": width 0.5, expansion 6 by default)."""
    return MobileNetV2(num_classes, width_mult=width_mult, expansion=expansion)
