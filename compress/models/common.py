"""Weight initialisation of the zoo models, one function per reference code base.

The CIFAR models start the way the CRD / mdistiller code (RepDistiller ``models/``) starts them, module
for module and in the same order, so that a zoo model and its reference, built after the same
``torch.manual_seed``, hold equal tensors. The classifiers differ between reference files, and that
matters: a N(0, 0.01) Linear (VGG, MobileNetV2) gives near-constant logits at the start, which correlation
losses such as DIST divide by; the ResNets, WRNs and ShuffleNets keep PyTorch's default Linear
initialisation.
"""

import math

import torch
from torch import nn


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, ReLU), BN weight 1 / bias 0, Linear N(0, 0.01) with zero bias.

    kdforge's own small CNNs (``cnn_<convs>_<width>``), which have no reference code."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def init_resnet(model: nn.Module) -> None:
    """CRD ``resnet.py`` / ``resnetv2.py``: Kaiming-normal convs (fan_out, ReLU), BN 1 / 0; the Linear keeps
    PyTorch's default (uniform, bound 1/sqrt(fan_in))."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def _normal_fan_out(conv: nn.Conv2d) -> None:
    # the reference's own formula, std sqrt(2 / (k*k*out_channels)), bit for bit (not kaiming_normal_'s)
    n = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
    conv.weight.normal_(0, math.sqrt(2.0 / n))


@torch.no_grad()
def init_wrn(model: nn.Module) -> None:
    """CRD ``wrn.py``: convs N(0, sqrt(2 / (k*k*out))), BN 1 / 0, Linear bias 0 (its weight keeps PyTorch's
    default)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            _normal_fan_out(m)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1)
            m.bias.zero_()
        elif isinstance(m, nn.Linear):
            m.bias.zero_()


@torch.no_grad()
def init_vgg(model: nn.Module) -> None:
    """CRD ``vgg.py`` and ``mobilenetv2.py``: convs N(0, sqrt(2 / (k*k*out))) with bias 0, BN 1 / 0, Linear
    N(0, 0.01) with bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            _normal_fan_out(m)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1)
            m.bias.zero_()
        elif isinstance(m, nn.Linear):
            m.weight.normal_(0, 0.01)
            m.bias.zero_()
