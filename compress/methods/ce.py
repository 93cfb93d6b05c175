"""`ce`: the student alone with cross-entropy (the baseline every distillation is compared with)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compress.methods.base import Distiller


@dataclass
class CEOptions:
    """Label smoothing is off by default, as in the papers' baselines."""

    label_smoothing: float = 0.0


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
