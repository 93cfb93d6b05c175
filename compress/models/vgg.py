"""CIFAR VGGs with BatchNorm (Simonyan & Zisserman 2015): CRD's ``models/vgg.py`` ``vgg<n>_bn``
(github.com/HobbitLong/RepDistiller, also mdistiller's), vgg8/11/13/16/19.

Module for module as in the reference: 3x3 convs with a bias (before their BatchNorm, as the reference has
them), tensors named ``block<i>.<j>``, a Linear ``classifier``, and the reference's initialisation
(``init_vgg``: classifier N(0, 0.01)), so its released teachers load as they are. The reference applies each
block's last ReLU in ``forward``; here it closes the block, so a tap of ``block<i>`` is the activated output
(the reference's ``feats``), and the tensors are the same.
"""

import torch
from torch import nn

from .common import init_vgg
from .registry import register

# conv widths per block; a 2x2 max-pool follows blocks 0-2, global average pooling follows block 4
CONFIGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],  # CRD cfg "S"
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],  # "A"
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],  # "B"
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],  # "D"
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],  # "E"
}


class CifarVGG(nn.Module):
    """Five blocks of 3x3 conv (with bias)-BN-ReLU (``block0``..``block4``), global pool, Linear
    ``classifier``."""

    def __init__(self, config: list[list[int]], num_classes: int) -> None:
        super().__init__()
        in_ch = 3
        for i, widths in enumerate(config):
            layers: list[nn.Module] = []
            for width in widths:
                layers += [nn.Conv2d(in_ch, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU()]
                in_ch = width
            self.add_module(f"block{i}", nn.Sequential(*layers))
        self.pool = nn.MaxPool2d(2, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_ch, num_classes)
        self.stage_names = [f"block{i}" for i in range(len(config))]
        init_vgg(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if i < 3:
                x = self.pool(x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def _register(name: str, config: list[list[int]]) -> None:
    @register(name)
    def build(num_classes: int) -> CifarVGG:
        return CifarVGG(config, num_classes)


for _name, _config in CONFIGS.items():
    _register(_name, _config)
