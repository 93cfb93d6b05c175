"""Strict loading into a registry network, except the classifier head when the class count changes
(fine-tuning): every other key and shape must fit, and every value be finite, or one line names the first
that does not."""

from __future__ import annotations

import torch
from kdforge.compress.errors import UserError
from kdforge.compress.train.finite import check_finite
from kdforge.compress.weights.formats import strip_prefixes
from torch import nn


def head_paths(model: nn.Module, num_classes: int) -> list[str]:
    """Module paths of the classifier head(s): every nn.Linear with `num_classes` outputs (the head and an
    auxiliary head, e.g. Inception's), else the last 1x1 nn.Conv2d with `num_classes` outputs
    (SqueezeNet)."""
    linear = [
        p for p, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes
    ]
    if linear:
        return linear
    convs = [
        p
        for p, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.out_channels == num_classes and tuple(m.kernel_size) == (1, 1)
    ]
    return convs[-1:]


def fit_weights(
    model: nn.Module,
    tensors: dict[str, torch.Tensor],
    num_classes: int,
    *,
    where: str,
    arch: str,
    fine_tune: bool,
    path: str | None = None,
) -> tuple[int, tuple[str, ...], tuple[int, int] | None]:
    """Load `tensors` into `model` strictly, except a head whose class count differs when `fine_tune`
    (it keeps its fresh initialisation). Every check runs before the first weight is copied.

    Returns (tensors loaded, head tensors re-initialised, (the file's classes, num_classes) or None)."""
    expected = model.state_dict()
    tensors = strip_prefixes(dict(tensors), set(expected))
    heads = {f"{p}.{n}" for p in head_paths(model, num_classes) for n in ("weight", "bias")}
    if tensors and not set(tensors) & set(expected):
        first_file, first_model = next(iter(tensors)), next(iter(expected))
        raise UserError(
            f"{where} does not fit {arch}: none of its {len(tensors)} tensor names is one of the model's "
            f"(the file has {first_file!r}, the model {first_model!r}); is it another architecture?"
        )
    reinitialised: list[str] = []
    file_classes = None
    for key, want in expected.items():
        got = tensors.get(key)
        if got is None:
            if key.endswith("num_batches_tracked"):  # files older than the counter (torchvision's) lack it
                continue
            raise UserError(f"{where} does not fit {arch}: it has no tensor {key!r}")
        if tuple(got.shape) == tuple(want.shape):
            continue
        if key in heads and got.dim() == want.dim() and got.shape[1:] == want.shape[1:]:
            if not fine_tune:
                fix = f": fine-tune it first (kdforge teacher RECIPE --init {path})" if path else ""
                raise UserError(
                    f"{where} predicts {got.shape[0]} classes but the data set has {num_classes}{fix}"
                )
            reinitialised.append(key)
            file_classes = int(got.shape[0])
            continue
        raise UserError(
            f"{where} does not fit {arch}: {key} has shape {tuple(got.shape)}, the model expects "
            f"{tuple(want.shape)}"
        )
    extra = [k for k in tensors if k not in expected]
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise UserError(f"{where} does not fit {arch}: it has a tensor {extra[0]!r}{more} the model lacks")
    state = {k: v for k, v in tensors.items() if k not in reinitialised}
    check_finite(state, where)  # a NaN running_var would otherwise train to the end and predict "nan%"
    model.load_state_dict(state, strict=False)
    classes = (file_classes, num_classes) if file_classes is not None else None
    return len(state), tuple(reinitialised), classes
