"""The CIFAR distillation reference models (CRD / RepDistiller ``models/``, mdistiller
``mdistiller/models/cifar/``) under their zoo names, and their state dicts under the zoo's tensor names.

The zoo's CIFAR models are the reference models module for module (compress/models/*: same tensors, same
names, same initialisation), so the mapping of names is the identity for every one of them:
``tests/compress/test_reference_zoo.py`` loads each reference model's checkpoint through ``to_zoo`` with
``strict=True`` and compares logits, so a name that stops matching fails there. ``to_zoo`` is where a
rename would go if a zoo module ever had to be restructured away from the reference.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

# the reference's model_dict names (CRD models/__init__.py; mdistiller cifar_model_dict) -> zoo names
REFERENCE_ARCHS: dict[str, str] = {
    **{f"resnet{depth}": f"resnet{depth}" for depth in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": "resnet8x4",
    "resnet32x4": "resnet32x4",
    "ResNet18": "resnet18",  # CRD models/resnetv2.py defines it; its model_dict lists only ResNet50
    "ResNet50": "resnet50",
    **{f"wrn_{depth}_{width}": f"wrn_{depth}_{width}" for depth in (16, 40) for width in (1, 2)},
    **{f"vgg{depth}": f"vgg{depth}" for depth in (8, 11, 13, 16, 19)},  # the reference's vgg<n>_bn
    "MobileNetV2": "mobilenetv2",  # the reference's mobile_half: expansion 6, width 0.5 (zoo defaults)
    "ShuffleV1": "shufflenetv1",
    "ShuffleV2": "shufflenetv2",  # net_size 1 (zoo default)
}


def zoo_arch(arch: str) -> str:
    """The zoo name of ``arch``: a reference model name (``ResNet50``) is translated, any other is kept."""
    return REFERENCE_ARCHS.get(arch, arch)


def to_zoo(arch: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A reference state dict (``module.`` prefixes already stripped) under the names of zoo model ``arch``
    (a zoo name, or a reference name of ``REFERENCE_ARCHS``); a new dict holding the same tensors.

    Every zoo CIFAR model has the reference's names, so no key changes; an arch without a reference
    (``tv:``, ``timm:``, ``cnn_*``) is passed through the same way, and strict loading judges the result."""
    return dict(state)
