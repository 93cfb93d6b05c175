"""Plain-torch reference implementations of the logit losses (fp32 math, autograd for gradients).

These are the CPU path of the public loss functions and the baseline the fused Triton kernels are
tested against. Inputs are (B, C) logits of any float dtype; the math runs in float32 or wider.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

STANDARDIZE_EPS = 1e-7  # as in the logit-standardization paper's code: (z - mean) / (eps + std)


def standardize_logits(logits: torch.Tensor, eps: float = STANDARDIZE_EPS) -> torch.Tensor:
    """Per-row z-score with the unbiased std (Sun et al., CVPR 2024): (z - mean) / (std + eps)."""
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (std + eps)


def _prepare(
    student: torch.Tensor, teacher: torch.Tensor, standardize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    compute = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)
    student, teacher = student.to(compute), teacher.to(compute)
    if standardize:
        student, teacher = standardize_logits(student), standardize_logits(teacher)
    return student, teacher


def kd_loss_reference(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0, standardize: bool = False
) -> torch.Tensor:
    """Hinton KD: T^2 * batch-mean KL(softmax(t/T) || softmax(s/T)), computed in fp32 or wider."""
    student, teacher = _prepare(student, teacher, standardize)
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    return kl.mean() * temperature**2
