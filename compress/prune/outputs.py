"""The one check every pruning step ends with: the pruned copy still runs and gives the original's output
shape, so a network the pruner misread (a detached or untraced path) fails here in one line, not later at
export or in training."""

from __future__ import annotations

import torch
from kdforge.compress.errors import UserError, first_line
from torch import nn


@torch.no_grad()
def check_same_output(
    original: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...], what: str
) -> None:
    """Run both networks (eval mode, restored after) on one zero image; UserError when the pruned one
    fails or its output shape differs."""
    parameter = next(original.parameters())
    sample = torch.zeros(1, *input_shape, dtype=parameter.dtype, device=parameter.device)
    expected = tuple(_run(original, sample).shape)
    try:
        got = tuple(_run(pruned, sample).shape)
    except Exception as exc:  # a channel count the pruner left inconsistent: shape errors of many types
        raise UserError(
            f"{what}: the pruned network does not run ({first_line(exc)}); use zoo candidates only: "
            "budget.sources: [zoo]"
        ) from None
    if got != expected:
        raise UserError(
            f"{what}: the pruned network outputs {got}, not {expected}; use zoo candidates only: "
            "budget.sources: [zoo]"
        )


def _run(network: nn.Module, sample: torch.Tensor) -> torch.Tensor:
    was_training = network.training
    network.eval()
    try:
        return network(sample)
    finally:
        network.train(was_training)
