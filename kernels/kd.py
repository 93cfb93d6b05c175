"""Hinton knowledge distillation loss: the public entry point for every backend."""

from __future__ import annotations

import torch
from kdforge.kernels.defaults import KD_TEMPERATURE
from kdforge.kernels.kd_reference import kd_loss_reference
from kdforge.kernels.validation import check_logits, check_temperature, resolve_backend


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float = KD_TEMPERATURE,
    *,
    standardize: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """T^2 * batch-mean KL(softmax(teacher/T) || softmax(student/T)): a float32 scalar (float64 for float64).

    `standardize=True` z-scores each row of both logits first (logit standardization, unbiased std,
    eps 1e-7). Gradients flow to the student and, when it requires grad, to the teacher, in the input
    dtype. `backend`: "auto" (the fused Triton kernel on CUDA tensors, the torch reference elsewhere),
    "triton" or "torch".
    """
    check_logits(student, teacher)
    check_temperature(temperature)
    if resolve_backend(backend, student) == "triton":
        from kdforge.kernels.kd_triton import kd_loss_triton

        return kd_loss_triton(student, teacher, temperature, standardize)
    return kd_loss_reference(student, teacher, temperature, standardize)
