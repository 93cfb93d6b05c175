"""`reparameterize(model)`: every multi-branch block -> one conv with bias; every conv -> BN pair folded."""

from __future__ import annotations

import copy
import warnings

import torch
from kdforge.compress.reparam.blocks import MultiBranchConv
from kdforge.compress.reparam.fold import conv_with_bias, fold_conv_bn, identity_kernel, pad_to
from kdforge.compress.reparam.graph import conv_bn_pairs, set_submodule
from torch import nn


def merge_block(block: MultiBranchConv) -> nn.Conv2d:
    """The single KxK conv (with bias) equal to `block` in eval mode."""
    k = block.kernel
    weight_sum: torch.Tensor | None = None
    bias_sum: torch.Tensor | None = None
    for name, branch in block.branches.items():
        if name == "identity":
            kernel = identity_kernel(block.in_channels, block.groups, k, branch.running_mean.device)
            weight, bias = fold_conv_bn(kernel, None, branch)
        elif name == "avg":
            squeeze, _, bn = branch
            weight, bias = fold_conv_bn(squeeze.weight.double().expand(-1, -1, k, k) / (k * k), None, bn)
        else:
            conv, bn = branch
            weight, bias = fold_conv_bn(conv.weight, conv.bias, bn)
            weight = pad_to(weight, k)
        weight_sum = weight if weight_sum is None else weight_sum + weight
        bias_sum = bias if bias_sum is None else bias_sum + bias
    assert weight_sum is not None and bias_sum is not None
    return conv_with_bias(weight_sum, bias_sum, block, next(block.parameters()).dtype)


def fold_batchnorms(model: nn.Module) -> int:
    """Fold every conv -> BN pair of `model` in place (BN becomes Identity); returns how many."""
    pairs, _ = conv_bn_pairs(model)
    for conv_path, bn_path in pairs:
        conv = model.get_submodule(conv_path)
        bn = model.get_submodule(bn_path)
        weight, bias = fold_conv_bn(conv.weight, conv.bias, bn)
        merged = conv_with_bias(weight, bias, conv, conv.weight.dtype)
        set_submodule(model, conv_path, merged)
        set_submodule(model, bn_path, nn.Identity())
    return len(pairs)


def reparameterize(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with multi-branch blocks merged and conv -> BN pairs folded.

    The result has the plain architecture's conv shapes (now with biases) and no BatchNorm after a conv,
    and computes the same function as `model.eval()`. A model in training mode is merged in its eval
    form (running BN statistics), with a warning that says so.
    """
    if model.training:
        warnings.warn(
            f"{type(model).__name__} is in training mode; merging its eval form (running BN statistics)",
            stacklevel=2,
        )
    merged = copy.deepcopy(model).eval()
    with torch.no_grad():
        for path, module in list(merged.named_modules()):
            if isinstance(module, MultiBranchConv):
                set_submodule(merged, path, merge_block(module))
        fold_batchnorms(merged)
    if hasattr(merged, "rep_report"):
        del merged.rep_report
    return merged.eval()
