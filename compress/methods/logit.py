"""Methods whose whole signal is a loss on (student logits, teacher logits, labels): KD, DKD, DIST.

They share one `forward_train` (frozen teacher first, then the student) and expose `logit_terms`, so a
teacher strategy such as SATE can reuse any of them with its own, changing teacher.
"""

from __future__ import annotations

import abc

import torch
from kdforge.compress.methods.base import Distiller


def expected_grad(weight: float) -> float | None:
    """The grad_output a term `weight * loss` of the Trainer's summed loss receives, for the kernels'
    `expected_grad`: the weight itself, except under fp16 autocast, where the Trainer's GradScaler
    multiplies it by a scale that only the device knows (None: the kernels are told nothing)."""
    if torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.float16:
        return None
    return weight


class LogitDistiller(Distiller):
    """A distiller defined by `logit_terms`; the teacher is frozen and runs first."""

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
