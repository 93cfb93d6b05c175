"""A network's cost before it is exported or timed: parameters and multiply-accumulates for one image, the
proxies `kdforge run --budget` spreads its candidates over before measuring latency."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def cost(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(parameters, MACs) of `model` on one image of `input_shape` (C, H, W).

    MACs are those of the conv and linear layers as Torch-Pruning counts them (kernel products per output
    element, plus one per output element for a bias); BN, activations and pooling are left out, as BN
    folds into the conv at deployment and the rest is elementwise."""
    import torch_pruning as tp

    parameter = next(model.parameters())
    sample = torch.zeros(1, *input_shape, dtype=parameter.dtype, device=parameter.device)
    with torch.no_grad():
        counted: Any = tp.utils.count_ops_and_params(model, sample, layer_wise=True)  # untyped: 2 or 4 values
    layer_macs: dict[nn.Module, float | None] = counted[2]
    macs = sum(
        count
        for module, count in layer_macs.items()
        if isinstance(module, nn.modules.conv._ConvNd | nn.Linear) and count is not None
    )
    return sum(p.numel() for p in model.parameters()), round(macs)
