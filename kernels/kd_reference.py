"""Plain-torch reference of the KD loss (fp32 or wider math, autograd for gradients): the CPU path of
`kd_loss` and the baseline the Triton kernel is tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kdforge.kernels.defaults import KD_TEMPERATURE
from kdforge.kernels.standardize import prepare_logits


def kd_loss_reference(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float = KD_TEMPERATURE,
    standardize: bool = False,
) -> torch.Tensor:
    """Hinton KD: T^2 * batch-mean KL(softmax(t/T) || softmax(s/T)), computed in fp32 or wider."""
    student, teacher = prepare_logits(student, teacher, standardize)
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    return kl.mean() * temperature**2
