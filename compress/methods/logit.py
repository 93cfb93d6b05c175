"""Methods whose whole signal is a loss on (student logits, teacher logits, labels): KD, DKD, DIST.

They share one `forward_train` (frozen teacher first, then the student) and expose `logit_terms`, so a
teacher strategy such as SATE can reuse any of them with its own, changing teacher.
"""

from __future__ import annotations

import abc

import torch
from kdforge.compress.methods.base import Distiller


class LogitDistiller(Distiller):
    """A distiller defined by `logit_terms`; the teacher is frozen and runs first."""

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():  # teacher first: its activations are freed before the student's graph is built
            teacher_logits = self.teacher(images)
        logits = self.student(images)
        return logits, self.logit_terms(logits, teacher_logits, labels)

    # The ramp: the factor the method's own warm-up puts on its distillation terms this epoch (1: none).
    # DKD's warm-up sets it; a wrapper with a ramp of its own (SATE) reads it so the terms ramp once.
    ramp: float = 1.0

    @abc.abstractmethod
    def logit_terms(
        self, logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The weighted loss terms of the student's `logits` against (detached) `teacher_logits`."""
