"""`ce`: the student alone with cross-entropy (the baseline every distillation is compared with)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kdforge.compress.method_options import CEOptions
from kdforge.compress.methods.base import Distiller, register


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
