"""A pruned network's shape: what it changed against a freshly built network of its architecture, as JSON
(recorded in recipes and checkpoint metadata), so it rebuilds from the registry without its teacher.

Form: `{"layers": {path: sizes}, "dropped": [path, ...]}` with sizes `[in, out, groups]` for a Conv2d,
`[features]` for a BatchNorm2d, `[in, out]` for a Linear (the classifier: `[in]`, so a head for another
class count can still be fitted), and the blocks depth pruning replaced by `Dropped`. Every such layer is
recorded, changed or not. The JSON is checked by `meta_limits.check_network_shape` first, since it comes
from files a user is handed.
"""

from __future__ import annotations

from typing import Any

import torch
from kdforge.compress.errors import UserError
from kdforge.compress.prune.depth import Dropped, drop_block, droppable_blocks
from kdforge.compress.text import shown
from kdforge.compress.train.meta_limits import check_network_shape
from torch import nn


def shape_of(model: nn.Module) -> dict[str, Any]:
    """The shape of `model` (JSON-serialisable): every Conv2d, BatchNorm2d and Linear's sizes, and the
    paths of its dropped blocks."""
    head = classifier(model)
    layers: dict[str, list[int]] = {}
    dropped: list[str] = []
    for path, module in model.named_modules():
        if isinstance(module, Dropped):
            dropped.append(path)
        elif isinstance(module, nn.Conv2d):
            layers[path] = [module.in_channels, module.out_channels, module.groups]
        elif isinstance(module, nn.BatchNorm2d):
            layers[path] = [module.num_features]
        elif isinstance(module, nn.Linear):
            sizes = [module.in_features, module.out_features]
            layers[path] = sizes[:1] if module is head else sizes
    return {"layers": layers, "dropped": dropped}


def apply_shape(model: nn.Module, shape: Any, where: str) -> nn.Module:
    """`model` (freshly built, of the shape's architecture) rebuilt in place to `shape`: dropped blocks
    replaced as depth pruning does, then each recorded layer resized (fresh parameters, so the pruned
    weights load strictly). Refuses a malformed shape or one that does not fit `model`, in one line."""
    check_network_shape(shape, where)
    droppable = set(droppable_blocks(model))
    for path in shape.get("dropped", []):
        if path not in droppable:
            raise UserError(
                f"{where}: shape drops {shown(path)}, which is not a droppable block of "
                f"{type(model).__name__}; was the shape recorded for another architecture?"
            )
        drop_block(model, path)
    modules = dict(model.named_modules())
    head = classifier(model)
    for path, sizes in shape.get("layers", {}).items():
        module = modules.get(path)
        if module is None:
            raise UserError(
                f"{where}: shape layer {shown(path)} names no module of {type(model).__name__} (or one "
                "inside a dropped block); was the shape recorded for another architecture?"
            )
        _resize(module, sizes, module is head, f"{where}: shape layer {shown(path)}")
    return model


def classifier(model: nn.Module) -> nn.Module | None:
    """The classifier: the last Linear in registration order (its outputs are the classes)."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    return linears[-1] if linears else None


def _resize(module: nn.Module, sizes: list[int], head: bool, what: str) -> None:
    """Give `module` the recorded sizes (kernel, stride, bias and the rest unchanged) and fresh parameters."""
    if isinstance(module, nn.Conv2d) and len(sizes) == 3:
        _narrower(sizes[:2], [module.in_channels, module.out_channels], what)
        _resize_conv(module, *sizes)
    elif isinstance(module, nn.BatchNorm2d) and len(sizes) == 1:
        _narrower(sizes, [module.num_features], what)
        _resize_norm(module, sizes[0])
    elif isinstance(module, nn.Linear) and len(sizes) in (1, 2):
        if len(sizes) == 2 and head and sizes[1] != module.out_features:
            raise UserError(
                f"{what}: the classifier has {module.out_features} outputs, the shape {sizes[1]}; record "
                "the classifier as [in_features]"
            )
        _narrower(sizes, [module.in_features, module.out_features][: len(sizes)], what)
        _resize_linear(module, sizes[0], sizes[1] if len(sizes) == 2 else module.out_features)
    else:
        expected = {nn.Conv2d: "[in, out, groups]", nn.BatchNorm2d: "[features]", nn.Linear: "[in(, out)]"}
        kind = next((k for k in expected if isinstance(module, k)), None)
        if kind is None:
            raise UserError(f"{what} is a {type(module).__name__}, not a Conv2d, BatchNorm2d or Linear")
        raise UserError(f"{what} is a {kind.__name__}, whose sizes are {expected[kind]}, got {sizes}")


def _narrower(sizes: list[int], own: list[int], what: str) -> None:
    """A shape records a pruned network: no layer wider than the architecture's own (which also bounds
    what a hostile shape can make kdforge allocate to the size of the network it names)."""
    if any(size > limit for size, limit in zip(sizes, own, strict=True)):
        raise UserError(
            f"{what} is {sizes}, wider than the architecture's own {own}; a shape only narrows a network"
        )


def _like(tensor: torch.Tensor, *size: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(size, dtype=tensor.dtype, device=tensor.device))


def _resize_conv(conv: nn.Conv2d, in_channels: int, out_channels: int, groups: int) -> None:
    conv.in_channels, conv.out_channels, conv.groups = in_channels, out_channels, groups
    conv.weight = _like(conv.weight, out_channels, in_channels // groups, *conv.kernel_size)
    if conv.bias is not None:
        conv.bias = _like(conv.bias, out_channels)
    conv.reset_parameters()


def _resize_norm(norm: nn.BatchNorm2d, features: int) -> None:
    norm.num_features = features
    if norm.weight is not None and norm.bias is not None:
        norm.weight, norm.bias = _like(norm.weight, features), _like(norm.bias, features)
    if norm.running_mean is not None and norm.running_var is not None:
        norm.running_mean = norm.running_mean.new_zeros(features)
        norm.running_var = norm.running_var.new_ones(features)
    norm.reset_parameters()


def _resize_linear(linear: nn.Linear, in_features: int, out_features: int) -> None:
    linear.in_features, linear.out_features = in_features, out_features
    linear.weight = _like(linear.weight, out_features, in_features)
    if linear.bias is not None:
        linear.bias = _like(linear.bias, out_features)
    linear.reset_parameters()
