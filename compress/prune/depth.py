"""Depth pruning: drop whole residual blocks (or a plain CNN's same-width conv-BN-ReLU) of a trained network.

A droppable block maps its input to an output of the same shape around an identity shortcut, so replacing
it with `Dropped` (an identity) leaves a network that runs and keeps every other weight. Which blocks go:
the least important by the RMS of the block's last BatchNorm scale (gamma). That gamma scales what the
residual branch adds to the identity path, so a block with small gammas changes its input little; it needs
no data and gives the same answer on every machine.
"""

from __future__ import annotations

import copy
import math

from kdforge.compress.errors import UserError
from kdforge.compress.models.convnet import PlainCNN
from kdforge.compress.models.mobilenetv2 import InvertedResidual
from kdforge.compress.models.resnet_cifar import BasicBlock
from kdforge.compress.models.wrn import PreActWideBlock, WideBlock
from kdforge.compress.prune.outputs import check_same_output
from torch import nn


class Dropped(nn.Identity):
    """Where a block was dropped by depth pruning: passes its input through; its path is in the shape."""


def droppable_blocks(model: nn.Module) -> list[str]:
    """Module paths of the blocks `drop_block` may remove, in module order: residual blocks with an identity
    shortcut (CIFAR ResNet / WRN / torchvision ResNet blocks without downsample, MobileNetV2 inverted
    residuals that add their input) and a PlainCNN's conv-BN-ReLU triples whose conv keeps the shape."""
    paths = [path for path, module in model.named_modules() if path and _identity_block(module)]
    if isinstance(model, PlainCNN):
        paths += [f"{stage}.{index}" for stage, index in _plain_triples(model)]
    order = {path: rank for rank, (path, _) in enumerate(model.named_modules())}
    return sorted(paths, key=order.__getitem__)


def drop_block(model: nn.Module, path: str) -> None:
    """Replace the block at `path` (one of `droppable_blocks`) with `Dropped`, in place; a PlainCNN triple
    becomes `Dropped` and two plain identities, so the other layers keep their paths."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path)
    if isinstance(model, PlainCNN) and isinstance(parent, nn.Sequential) and parent_path in model.stage_names:
        index = int(name)
        parent[index], parent[index + 1], parent[index + 2] = Dropped(), nn.Identity(), nn.Identity()
        return
    setattr(parent, name, Dropped())


def prune_depth(model: nn.Module, keep: float, input_shape: tuple[int, ...]) -> tuple[nn.Module, list[str]]:
    """A copy of `model` (the input untouched) with the least important droppable blocks replaced by
    `Dropped` until `keep` (0 <= keep <= 1; rounded up; 0 drops them all) of them remain, and the dropped
    paths in order."""
    if not 0 <= keep <= 1:
        raise UserError(f"prune_depth: keep must be in [0, 1], got {keep}; it is the share of blocks kept")
    pruned = copy.deepcopy(model)
    candidates = droppable_blocks(pruned)
    count = len(candidates) - math.ceil(keep * len(candidates))
    ranked = sorted(candidates, key=lambda path: _importance(pruned, path))
    dropped = sorted(ranked[:count], key=candidates.index)
    for path in dropped:
        drop_block(pruned, path)
    check_same_output(model, pruned, input_shape, "prune_depth")
    return pruned, dropped


def _identity_block(module: nn.Module) -> bool:
    """Whether `module` is a residual block whose shortcut is the identity (output shape = input shape)."""
    if isinstance(module, BasicBlock):
        return module.downsample is None
    if isinstance(module, WideBlock | PreActWideBlock):
        return module.shortcut is None
    if isinstance(module, InvertedResidual):
        return module.use_residual
    if type(module).__module__.startswith("torchvision."):
        from torchvision.models.mobilenetv2 import InvertedResidual as TvInvertedResidual
        from torchvision.models.resnet import BasicBlock as TvBasicBlock
        from torchvision.models.resnet import Bottleneck

        if isinstance(module, TvBasicBlock | Bottleneck):
            return module.downsample is None
        if isinstance(module, TvInvertedResidual):
            return module.use_res_connect
    return False


def _plain_triples(model: PlainCNN) -> list[tuple[str, int]]:
    """(stage, index) of each conv-BN-ReLU whose conv keeps channels and size (in == out, stride 1), the
    first of its stage excepted: that one changes the width in the architecture, so a shape that drops it
    after width pruning made it square could not be applied to a freshly built network."""
    found = []
    for stage in model.stage_names:
        layers = list(model.get_submodule(stage))
        for index in range(1, len(layers) - 2):
            conv, bn, act = layers[index : index + 3]
            keeps = (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and isinstance(act, nn.ReLU)
                and conv.in_channels == conv.out_channels
                and conv.stride == (1, 1)
                and conv.dilation == (1, 1)
                and conv.padding == tuple(k // 2 for k in conv.kernel_size)
                and all(k % 2 for k in conv.kernel_size)
            )
            if keeps:
                found.append((stage, index))
    return found


def _importance(model: nn.Module, path: str) -> float:
    """RMS of the weights of the block's last BN or conv in registration order: the last BN's gamma in
    every zoo block (a PlainCNN triple: its own BN); a pre-activation block ending in a conv: that conv."""
    block = model.get_submodule(path)
    if isinstance(model, PlainCNN) and isinstance(block, nn.Conv2d):
        parent_path, _, name = path.rpartition(".")
        block = model.get_submodule(parent_path)[int(name) + 1]
    layers = [
        m for m in block.modules() if isinstance(m, nn.BatchNorm2d | nn.Conv2d) and m.weight is not None
    ]
    return float(layers[-1].weight.detach().double().pow(2).mean().sqrt()) if layers else 0.0
