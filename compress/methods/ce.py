"""`ce`: the student alone with cross-entropy (the baseline every distillation is compared with)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Interval
from kdforge.compress.methods.base import Distiller, register


@dataclass
class CEOptions:
    """Label smoothing is off by default, as in the papers' baselines."""

    label_smoothing: Annotated[float, Interval(ge=0, le=1)] = 0.0  # cross_entropy refuses more than 1


@register
class CE(Distiller):
    """Trains the student on labels only; used for teachers and for the CE-student baseline."""

    name = "ce"
    needs_teacher = False
    Options = CEOptions

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.student(images)
        return logits, {"ce": F.cross_entropy(logits, labels, label_smoothing=self.options.label_smoothing)}
