"""Width pruning: remove a share of every layer's channels with Torch-Pruning's dependency graph (DepGraph),
which follows residual adds, depthwise convolutions and the flatten into the classifier, so the pruned
network still runs and inherits the weights of the channels it keeps.

Each coupled group of channels is pruned on its own (local pruning, group L2-norm importance) to a count
chosen here rather than by the pruner's `round_to`: the group's channels times (1 - ratio), rounded DOWN
to a multiple of `divisor` and never below one divisor. `round_to` leaves a count that is not already a
multiple (MobileNetV2's 12 channels stay 12 with round_to=8); deployment kernels want every count a
multiple (TensorRT's tensor-core paths: 8 for fp16, 32 for int8).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from kdforge.compress.errors import UserError, first_line
from kdforge.compress.prune.outputs import check_same_output
from kdforge.compress.shape import classifier
from torch import nn


def prune_width(
    model: nn.Module, input_shape: tuple[int, ...], ratio: float, divisor: int, *, arch: str = "network"
) -> nn.Module:
    """A pruned copy of `model` (the input untouched) without `ratio` (0 < ratio < 1) of its channels, every
    count a multiple of `divisor` except the network's input channels and its class count."""
    import torch_pruning as tp

    if not 0 < ratio < 1:
        raise UserError(f"{arch}: pruning ratio must be in (0, 1), got {ratio}; it is the share removed")
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
        raise UserError(f"{arch}: channel divisor must be a positive integer, got {divisor!r}")
    pruned = copy.deepcopy(model).eval()  # eval: tracing runs a forward, which must not move BN statistics
    parameter = next(pruned.parameters())
    sample = torch.zeros(1, *input_shape, dtype=parameter.dtype, device=parameter.device)
    head = classifier(pruned)
    frozen = {name for name, p in pruned.named_parameters() if not p.requires_grad}
    pruned.requires_grad_(True)  # the tracer follows autograd: a frozen network would show no graph at all
    try:
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=sample)
    except Exception as exc:  # a forward that fails, an op the tracer does not know: many types
        raise UserError(
            f"{arch}: Torch-Pruning cannot trace this network ({first_line(exc)}); use zoo candidates "
            "only: budget.sources: [zoo]"
        ) from None
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    roots = [nn.Conv2d, nn.Linear]
    try:
        for group in graph.get_all_groups(ignored_layers=[head] if head else [], root_module_types=roots):
            root = group[0].dep.target.module
            if _grouped(group):
                continue  # grouped (not depthwise) convs: channels go per group; left whole, checked below
            channels = graph.get_out_channels(root)
            keep = max(divisor, int(channels * (1 - ratio)) // divisor * divisor)
            if keep >= channels:
                continue
            scores = importance(group)
            group.prune(torch.argsort(scores)[: channels - keep].tolist())
    except Exception as exc:
        raise UserError(
            f"{arch}: Torch-Pruning failed to prune this network ({first_line(exc)}); use zoo candidates "
            "only: budget.sources: [zoo]"
        ) from None
    pruned.train(model.training)
    for name, p in pruned.named_parameters():
        p.requires_grad_(name not in frozen)
    _check_widths(pruned, head, input_shape[0], divisor, arch)
    check_same_output(model, pruned, input_shape, arch)
    return pruned


def _grouped(group: Iterable[Any]) -> bool:
    """Whether a pruning group holds a grouped conv that is not depthwise (1 < groups < channels)."""
    return any(
        isinstance(module := item.dep.target.module, nn.Conv2d) and 1 < module.groups < module.out_channels
        for item in group
    )


def _check_widths(model: nn.Module, head: nn.Module | None, inputs: int, divisor: int, arch: str) -> None:
    """Every channel count a multiple of `divisor`, but the network's input channels and its classes."""
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            counts = [module.out_channels] + ([module.in_channels] if module.in_channels != inputs else [])
        elif isinstance(module, nn.BatchNorm2d):
            counts = [module.num_features]
        elif isinstance(module, nn.Linear):
            counts = [module.in_features] + ([module.out_features] if module is not head else [])
        else:
            continue
        odd = [n for n in counts if n % divisor]
        if odd:
            raise UserError(
                f"{arch}: after pruning, {path} has {odd[0]} channels, not a multiple of {divisor}; its "
                f"original width is below {divisor} or grouped: choose a smaller divisor for this network"
            )
