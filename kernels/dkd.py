"""Decoupled knowledge distillation (Zhao et al., CVPR 2022): the public entry point for every backend."""

from __future__ import annotations

import math

import torch
from kdforge.kernels.defaults import DKD_TEMPERATURE
from kdforge.kernels.dkd_reference import dkd_loss_reference
from kdforge.kernels.validation import check_logits, check_target, check_temperature, resolve_backend


def _check_weight(name: str, value: float) -> None:
    """A loss weight: a finite number >= 0 (a NaN would silently poison every gradient)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def dkd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = DKD_TEMPERATURE,
    *,
    standardize: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """DKD: T^2 * batch-mean(alpha * TCKD + beta * NCKD) of (B, C) logits and (B,) class indices.

    With p = softmax(z / T): TCKD = KL(b_t || b_s) of the binary target/rest distributions
    b = [p_target, 1 - p_target], and NCKD = KL(q_t || q_s) of the softmax over the non-target classes
    only. The defaults alpha=1, beta=8, T=4 are the paper's (CIFAR-100; mdistiller). Returns a float32
    scalar (float64 for float64 inputs on the torch backend).

    `standardize=True` z-scores each row of both logits first, (z - mean) / (std + 1e-7) with the unbiased
    std (logit standardization, Sun et al., CVPR 2024). `backend`: 'auto' (the fused Triton kernel on CUDA
    tensors, plain torch elsewhere), 'torch' or 'triton'. Gradients flow to the student and, when it
    requires grad, to the teacher. A single class (C == 1) gives 0. A non-finite or negative alpha or beta is
    a ValueError.
    """
    check_logits(student, teacher)
    check_target(target, student)
    check_temperature(temperature)
    _check_weight("alpha", alpha)
    _check_weight("beta", beta)
    if resolve_backend(backend, student) == "triton":
        from kdforge.kernels.dkd_triton import dkd_loss_triton  # imports triton: only where it is used

        return dkd_loss_triton(student, teacher, target, alpha, beta, temperature, standardize)
    return dkd_loss_reference(student, teacher, target, alpha, beta, temperature, standardize)
