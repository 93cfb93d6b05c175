"""The torch device a recipe's `device` names: on its own so that deploy, bench and AOTInductor resolve a
device without importing the Trainer and every method."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from kdforge.compress.errors import UserError

if TYPE_CHECKING:
    from kdforge.compress.train.distributed import DistContext


def resolve_device(name: str, context: DistContext | None = None) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is a user error."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError(
                "device cuda: no CUDA device is visible; use cpu (--set device=cpu, --device cpu)"
            )
        return torch.device("cuda", context.local_rank if context else 0)
    return torch.device("cpu")
