"""Argument checks shared by every public loss function (one clear ValueError each)."""

from __future__ import annotations

import torch

BACKENDS = ("auto", "torch")


def check_logits(student: torch.Tensor, teacher: torch.Tensor) -> None:
    """Both logits must be floating (B, C) tensors of the same shape with B >= 1 and C >= 2."""
    for name, tensor in (("student", student), ("teacher", teacher)):
        if not torch.is_floating_point(tensor):
            raise ValueError(f"{name} logits must be a floating tensor, got {tensor.dtype}")
        if tensor.dim() != 2:
            raise ValueError(f"{name} logits must be 2-D (batch, classes), got shape {tuple(tensor.shape)}")
    if student.shape != teacher.shape:
        raise ValueError(
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} logits differ in shape"
        )
    if student.shape[0] < 1 or student.shape[1] < 2:
        raise ValueError(f"logits need at least one row and two classes, got {tuple(student.shape)}")


def check_temperature(temperature: float) -> None:
    """Temperatures divide logits, so they must be positive and finite."""
    if not (temperature > 0 and temperature != float("inf")):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """Pick the implementation: 'auto' means the fastest one available for the tensor's device."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return "torch"
