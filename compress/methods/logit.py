"""Methods whose whole signal is a loss on (student logits, teacher logits, labels): KD, DKD, DIST.

They share one `forward_train` (frozen teacher first, then the student) and expose `logit_terms`, so a
teacher strategy such as SATE can reuse any of them with its own, changing teacher.
"""

from __future__ import annotations

import abc

import numpy as np
import torch
from kdforge.compress.methods.base import Distiller


def expected_grad(*factors: float) -> float | None:
    """The grad_output a term `f1 * (f2 * ... * loss)` of the Trainer's summed loss receives, for the
    kernels' `expected_grad`: the product of the factors rounded to float32 one multiplication at a time,
    outermost first, as autograd's backward forms it (so it matches bit for bit). None under fp16
    autocast, where the Trainer's GradScaler multiplies in a scale that only the device knows."""
    if torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.float16:
        return None
    grad = np.float32(1.0)  # numpy, not a tensor: no .item() in the training step
    for factor in factors:
        grad = grad * np.float32(factor)
    return float(grad)


class LogitDistiller(Distiller):
    """A distiller defined by `logit_terms`; the teacher is frozen and runs first."""

    outer_scale: float = 1.0  # what a wrapping method (SATE's ramp) multiplies on the distillation terms

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():  # teacher first: its activations are freed before the student's graph is built
            teacher_logits = self.teacher(images)
        logits = self.student(images)
        return logits, self.logit_terms(logits, teacher_logits, labels)

    def distill_scale(self) -> float:
        """The factor the method's own schedule puts on its distillation terms this epoch (1: none).

        DKD's warm-up is one; a wrapper with a ramp of its own (SATE) reads it so the terms ramp once.
        """
        return 1.0

    @abc.abstractmethod
    def logit_terms(
        self, logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The weighted loss terms of the student's `logits` against (detached) `teacher_logits`."""
