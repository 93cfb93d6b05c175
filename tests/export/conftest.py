"""Shared by the export tests: networks whose BatchNorms are not at their defaults."""

from __future__ import annotations

import torch
from torch import nn


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-default BN everywhere: random running statistics and affine parameters (moderate ranges)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
                module.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=g) * 0.6 + 0.4)
                module.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model
