"""Per-row logit standardization and input preparation shared by the plain-torch references."""

from __future__ import annotations

import torch

STANDARDIZE_EPS = 1e-7  # as in the logit-standardization paper's code: (z - mean) / (eps + std)


def standardize_logits(logits: torch.Tensor, eps: float = STANDARDIZE_EPS) -> torch.Tensor:
    """Per-row z-score with the unbiased std (Sun et al., CVPR 2024): (z - mean) / (std + eps).

    A row with zero spread (C == 1 or all-equal logits) has std 0 and standardizes to zeros; its
    gradient through the std is taken as 0 rather than the 0/0 that torch.std's backward gives.
    """
    mean = logits.mean(dim=-1, keepdim=True)
    centred = logits - mean
    var = centred.pow(2).sum(dim=-1, keepdim=True) / max(logits.shape[-1] - 1, 1)
    positive = var > 0
    std = torch.where(
        positive, torch.where(positive, var, torch.ones_like(var)).sqrt(), torch.zeros_like(var)
    )
    return centred / (std + eps)


def prepare_logits(
    student: torch.Tensor, teacher: torch.Tensor, standardize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both logits in float32 (or wider, for float64 inputs), z-scored per row when asked."""
    compute = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)
    student, teacher = student.to(compute), teacher.to(compute)
    if standardize:
        student, teacher = standardize_logits(student), standardize_logits(teacher)
    return student, teacher
