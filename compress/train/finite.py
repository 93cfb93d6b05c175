"""Refuse weights that hold NaN/inf (or a negative BatchNorm variance) before they enter a network: such a
file trains or predicts nothing but NaN, so it is a corrupt or diverged file, named in one line."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from kdforge.compress.errors import UserError
from kdforge.compress.text import printable


def check_finite(tensors: Mapping[str, torch.Tensor], where: str, skip: Iterable[str] = ()) -> None:
    """Raise a UserError naming the first floating-point tensor of `tensors` (not in `skip`) with a
    non-finite value, or the first BatchNorm `running_var` with a negative one."""
    skipped = set(skip)
    for key, tensor in tensors.items():
        if key in skipped or not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise UserError(
                f"{where}: tensor {printable(key, 120)!r} holds {bad} NaN/inf value(s) of {tensor.numel()}; "
                "the file is corrupt or from a diverged run: use another file"
            )
        if key.endswith("running_var") and bool((tensor < 0).any()):
            raise UserError(
                f"{where}: tensor {printable(key, 120)!r} (a BatchNorm variance) holds negative values; "
                "the file is corrupt: use another file"
            )
