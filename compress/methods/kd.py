"""`kd`: Hinton et al. (2015) knowledge distillation with mdistiller's defaults (T=4, CE 0.1, KD 0.9)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kdforge.compress.method_options import KDOptions
from kdforge.compress.methods.base import register
from kdforge.compress.methods.logit import LogitDistiller
from kdforge.kernels import kd_loss


@register
class KD(LogitDistiller):
    """Student learns from labels and from the frozen teacher's softened distribution."""

    name = "kd"
    Options = KDOptions

    def logit_terms(
        self, logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        options = self.options
        return {
            "ce": options.ce_weight * F.cross_entropy(logits, labels),
            "kd": options.kd_weight
            * kd_loss(logits, teacher_logits, options.temperature, standardize=options.standardize),
        }
