"""Argument checks and backend choice shared by every public loss function (one clear ValueError each)."""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

LOSS_IMPLEMENTATIONS = ("auto", "torch", "triton")


def check_logits(student: torch.Tensor, teacher: torch.Tensor) -> None:
    """Both logits must be floating (B, C) tensors of one shape and device, B, C >= 1 (dtypes may differ)."""
    for name, tensor in (("student", student), ("teacher", teacher)):
        if not torch.is_floating_point(tensor):
            raise ValueError(f"{name} logits must be a floating tensor, got {tensor.dtype}")
        if tensor.dim() != 2:
            raise ValueError(f"{name} logits must be 2-D (batch, classes), got shape {tuple(tensor.shape)}")
    if student.shape != teacher.shape:
        raise ValueError(
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} logits differ in shape"
        )
    if student.device != teacher.device:
        raise ValueError(f"student logits are on {student.device}, teacher logits on {teacher.device}")
    if student.shape[0] < 1 or student.shape[1] < 1:
        raise ValueError(f"logits need at least one row and one class, got {tuple(student.shape)}")


def check_target(target: torch.Tensor, student: torch.Tensor) -> None:
    """Class indices: an integer (B,) tensor on the logits' device with values in [0, C).

    The range is checked without reading the values back to the host: on the CPU eagerly (a ValueError),
    elsewhere by a device-side assert (torch._assert_async), which fails the next synchronizing call.
    """
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"target must hold integer class indices, got {target.dtype}")
    if target.shape != student.shape[:1]:
        raise ValueError(f"target must have shape ({student.shape[0]},), got {tuple(target.shape)}")
    if target.device != student.device:
        raise ValueError(f"target is on {target.device}, logits on {student.device}")
    if not target.numel():
        return
    message = f"target holds class indices outside [0, {student.shape[1]})"
    inside = ((target >= 0) & (target < student.shape[1])).all()
    if target.device.type != "cpu":
        torch._assert_async(inside, message)
    elif not inside:
        raise ValueError(message)


def check_temperature(temperature: float) -> None:
    """Temperatures divide logits, so they must be positive and finite."""
    if not (temperature > 0 and temperature != float("inf")):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")


@functools.cache
def triton_installed() -> bool:
    """Whether the `triton` package is importable (it ships with CUDA builds of torch)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """TRITON_INTERPRET=1 runs Triton kernels on CPU tensors (it must be set before `kernels` is imported)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """'auto' is Triton on CUDA tensors and torch elsewhere; 'triton' must be runnable where asked."""
    if backend not in LOSS_IMPLEMENTATIONS:
        raise ValueError(f"backend must be one of {LOSS_IMPLEMENTATIONS}, got {backend!r}")
    if backend == "auto":
        return "triton" if tensor.is_cuda and triton_installed() else "torch"
    if backend == "triton":
        if not triton_installed():
            raise ValueError("backend='triton' needs the triton package (it comes with CUDA builds of torch)")
        if not (tensor.is_cuda or interpreting()):
            raise ValueError(
                "backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before kernels is imported)"
            )
    return backend
