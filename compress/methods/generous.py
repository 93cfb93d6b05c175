"""`generous`: the Generous Teacher (Ding et al., IVC 2024) as a teacher-training strategy.

Stage 2 of the paper: a new teacher of the standard teacher's architecture trains on CE plus the
standard teacher's non-target-class knowledge: NCKD(standard -> generous) at a per-sample temperature
k * std(logits). Dividing a logit row by k * std is the same softmax as z-scoring it and dividing by k,
so the term is `kdforge.kernels.dkd_loss(alpha=0, beta=nckd_weight, temperature=k, standardize=True)`,
i.e. nckd_weight * k^2 * KL(q_standard || q_generous) over the non-target classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kdforge.compress.method_options import GenerousOptions
from kdforge.compress.methods.base import register
from kdforge.compress.methods.logit import LogitDistiller
from kdforge.kernels import dkd_loss


@register
class GenerousTeacher(LogitDistiller):
    """Trains a generous teacher (the `student` slot) from a frozen standard teacher."""

    name = "generous"
    kind = "teacher"  # a teacher strategy: `kdforge teacher` with teacher_strategy.name=generous
    Options = GenerousOptions

    def logit_terms(
        self, logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        options = self.options
        nckd = dkd_loss(logits, teacher_logits, labels, 0.0, options.nckd_weight, options.k, standardize=True)
        return {"ce": options.ce_weight * F.cross_entropy(logits, labels), "nckd": nckd}
