"""`dist`: DIST (Huang et al., NeurIPS 2022), inter- and intra-class Pearson relations of the logits.

Under DDP the intra-class term correlates each class over the *global* batch: logits are all-gathered
with their gradient, unlike the reference code, which correlates within each rank's shard only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kdforge.compress.method_options import DISTOptions
from kdforge.compress.methods.base import register
from kdforge.compress.methods.logit import LogitDistiller
from kdforge.compress.train.distributed import gather_rows
from kdforge.kernels import dist_loss


def dist_relation_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, options: DISTOptions
) -> torch.Tensor:
    """The unweighted DIST loss of `options`, over the global batch when running under DDP."""
    if options.global_batch:
        logits, teacher_logits = gather_rows(logits), gather_rows(teacher_logits)
    return dist_loss(
        logits,
        teacher_logits,
        options.beta,
        options.gamma,
        options.temperature,
        standardize=options.standardize,
    )


@register
class DIST(LogitDistiller):
    """Student matches the teacher's class ranking per sample and its sample ranking per class."""

    name = "dist"
    Options = DISTOptions

    def logit_terms(
        self, logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        options = self.options
        return {
            "ce": options.ce_weight * F.cross_entropy(logits, labels),
            "dist": options.kd_weight * dist_relation_loss(logits, teacher_logits, options),
        }
