"""BatchNorm statistics re-estimated after pruning: removed channels and blocks change what each remaining
BN sees, so its stored mean and variance no longer fit; re-estimating them (no weight changes) gives the
accuracy right after pruning that ranks candidates before any training."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from kdforge.compress.errors import UserError
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    batches: Iterable[torch.Tensor | Sequence[torch.Tensor]],
    max_batches: int = 20,
) -> nn.Module:
    """Reset every BN's running statistics and re-estimate them as the plain average over at most
    `max_batches` batches (images, or (images, labels) as a DataLoader gives them), BN layers alone in
    train mode (momentum None: cumulative average; dropout stays off); returns `model` in eval mode."""
    norms = [module for module in model.modules() if isinstance(module, _BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    parameter = next(model.parameters())
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    seen = 0
    try:
        for batch in batches:
            if seen >= max_batches:
                break
            images = batch if isinstance(batch, torch.Tensor) else batch[0]
            model(images.to(device=parameter.device, dtype=parameter.dtype))
            seen += 1
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.eval()
    if norms and not seen:
        raise UserError("recalibrate_bn: no calibration batches were given; pass a few training batches")
    return model
