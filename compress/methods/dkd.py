"""`dkd`: decoupled knowledge distillation (Zhao et al., CVPR 2022), with its linear loss ramp."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from kdforge.compress.config import NonNegative, NonNegativeFloat, PositiveFloat
from kdforge.compress.methods.base import register
from kdforge.compress.methods.logit import LogitDistiller
from kdforge.kernels import dkd_loss


@dataclass
class DKDOptions:
    """CE + ramp * T^2 * (alpha * TCKD + beta * NCKD); the paper's CIFAR-100 defaults."""

    alpha: NonNegativeFloat = 1.0
    beta: NonNegativeFloat = 8.0
    temperature: PositiveFloat = 4.0
    ce_weight: NonNegativeFloat = 1.0
    ramp_epochs: NonNegative = 20  # the DKD term ramps linearly to full weight over these epochs (0: none)
    standardize: bool = False


@register
class DKD(LogitDistiller):
    """TCKD on the target/rest split plus beta-weighted NCKD on the non-target classes."""

    name = "dkd"
    Options = DKDOptions
    renamed_options: ClassVar[dict[str, str]] = {"warmup_epochs": "ramp_epochs"}  # not the lr warm-up

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
