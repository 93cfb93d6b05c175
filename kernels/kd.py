"""Hinton knowledge distillation loss: the public entry point for every backend."""

from __future__ import annotations

import torch
from kdforge.kernels.kd_reference import kd_loss_reference
from kdforge.kernels.validation import check_expected_grad, check_logits, check_temperature, resolve_backend


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float = 4.0,
    *,
    standardize: bool = False,
    backend: str = "auto",
    expected_grad: float | None = None,
) -> torch.Tensor:
    """T^2 * batch-mean KL(softmax(teacher/T) || softmax(student/T)): a float32 scalar (float64 for float64).

    `standardize=True` z-scores each row of both logits first (logit standardization, unbiased std,
    eps 1e-7). Gradients flow to the student and, when it requires grad, to the teacher, in the input
    dtype. `backend`: "auto" (the fused Triton kernel on CUDA tensors, the torch reference elsewhere),
    "triton" or "torch".

    `expected_grad`: the grad_output this loss will receive, when the caller knows it (w for a term
    `w * kd_loss(...)` of a sum backpropagated unscaled). The Triton kernels then write the gradient of
    rows of one chunk (C <= 2048) in the forward and only check grad_output in the backward, recomputing
    when it differs (a GradScaler's scale, say): the same result, with the logits' size moved 3 times
    instead of 5.
    """
    check_logits(student, teacher)
    check_temperature(temperature)
    check_expected_grad(expected_grad)
    if resolve_backend(backend, student) == "triton":
        from kdforge.kernels.kd_triton import kd_loss_triton

        return kd_loss_triton(student, teacher, temperature, standardize, expected_grad=expected_grad)
    return kd_loss_reference(student, teacher, temperature, standardize)
