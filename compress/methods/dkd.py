"""`dkd`: decoupled knowledge distillation (Zhao et al., CVPR 2022), with its linear loss ramp."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from kdforge.compress.method_options import DKD_RENAMED_OPTIONS, DKDOptions
from kdforge.compress.methods.base import register
from kdforge.compress.methods.logit import LogitDistiller
from kdforge.kernels import dkd_loss


@register
class DKD(LogitDistiller):
    """TCKD on the target/rest split plus beta-weighted NCKD on the non-target classes."""

    name = "dkd"
    Options = DKDOptions
    renamed_options: ClassVar[dict[str, str]] = DKD_RENAMED_OPTIONS

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """mdistiller's ramp: min(epoch / ramp_epochs, 1) with epochs counted from 1."""
        span = self.options.ramp_epochs
        self.ramp = min((epoch + 1) / span, 1.0) if span > 0 else 1.0

    def logit_terms(
        self, logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        options = self.options
        dkd = dkd_loss(
            logits,
            teacher_logits,
            labels,
            options.alpha,
            options.beta,
            options.temperature,
            standardize=options.standardize,
        )
        return {"ce": options.ce_weight * F.cross_entropy(logits, labels), "dkd": self.ramp * dkd}
