"""`dkd`: decoupled knowledge distillation (Zhao et al., CVPR 2022), with its linear loss warm-up."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kdforge.compress.config import NonNegative, NonNegativeFloat, PositiveFloat
from kdforge.compress.methods.logit import LogitDistiller
from kdforge.kernels import dkd_loss


@dataclass
class DKDOptions:
    """CE + warm-up * T^2 * (alpha * TCKD + beta * NCKD); the paper's CIFAR-100 defaults."""

    alpha: NonNegativeFloat = 1.0
    beta: NonNegativeFloat = 8.0
    temperature: PositiveFloat = 4.0
    ce_weight: NonNegativeFloat = 1.0
    warmup_epochs: NonNegative = 20  # the DKD term ramps linearly to full weight over these epochs (0: none)
    standardize: bool = False


class DKD(LogitDistiller):
    """TCKD on the target/rest split plus beta-weighted NCKD on the non-target classes."""

    name = "dkd"
    Options = DKDOptions

    warmup: float = 1.0  # the current ramp factor, set at every epoch start

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """mdistiller's ramp: min(epoch / warmup, 1) with epochs counted from 1."""
        warmup = self.options.warmup_epochs
        self.warmup = min((epoch + 1) / warmup, 1.0) if warmup > 0 else 1.0

    def distill_scale(self) -> float:
        return self.warmup

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
        return {"ce": options.ce_weight * F.cross_entropy(logits, labels), "dkd": self.warmup * dkd}
