"""`sate`: a student-aware intermediate teacher trained together with the student (Chen et al., PR 2025).

Our reading: one run trains the student and an intermediate teacher.
The intermediate teacher learns from labels (CE), from the fixed strong teacher (KD at `temperature`)
and from a student-aware term, KL(p_student || p_intermediate) with the student detached, that keeps it
within reach of the student. The student learns with any logit loss (kd, dist, dkd) from the
intermediate teacher's current, detached outputs, i.e. from a sequence of ever stronger teachers; with
`ema: true` it learns from an exponential moving average of the intermediate teacher instead (an
explicit form of that implicit ensemble). The student's distillation terms ramp in linearly over
`student_warmup_epochs`: the intermediate teacher starts untrained, and without the ramp DIST's
scale-free gradients follow its noise and diverge. A loss with a warm-up of its own (DKD) is ramped
once, over the longer of the two, not twice. The strong teacher never trains; the student is the
deliverable.

The authors' code is a zip archive (Source_Code.zip, on mmpretrain / mmrazor) in github.com/diqichen91/SATE;
it could not be read when this was written, so this remains our reading of the paper.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from kdforge.compress.errors import UserError
from kdforge.compress.method_options import SATEOptions, check_sate
from kdforge.compress.methods.base import Distiller, MethodContext, NetworkSpec, freeze, register
from kdforge.compress.methods.dist_kd import DIST
from kdforge.compress.methods.dkd import DKD
from kdforge.compress.methods.kd import KD
from kdforge.compress.methods.logit import LogitDistiller
from kdforge.compress.models import build
from kdforge.kernels import kd_loss
from torch import nn

STUDENT_LOSSES: dict[str, type[LogitDistiller]] = {"kd": KD, "dist": DIST, "dkd": DKD}


def student_loss_method(options: SATEOptions, path: str = "method.options") -> LogitDistiller:
    """The wrapped logit method, its options validated by that method as a recipe's own `method.options`."""
    cls = STUDENT_LOSSES[options.student_loss]
    inner = cls.validate_options(options.student_loss_options, f"{path}.student_loss_options")
    return cls(nn.Identity(), None, inner)


@register
class SATE(Distiller):
    """Student + student-aware intermediate teacher in one run, under a fixed strong teacher."""

    name = "sate"
    Options = SATEOptions

    @classmethod
    def validate_options(cls, raw: dict[str, Any], path: str = "method.options") -> SATEOptions:
        """SATE's own options, then `student_loss_options` by the chosen student loss's method."""
        options = super().validate_options(raw, path)
        check_sate(options, path)  # the one declaration, torch-free (compress/method_options.py)
        return options

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        options: SATEOptions,
        context: MethodContext | None = None,
    ) -> None:
        super().__init__(student, teacher, options, context)
        if context is None:
            raise UserError("method 'sate' needs the class count and the teacher's architecture")
        self.spec = self._intermediate_spec(options, context)
        self.intermediate = build(self.spec.arch, context.num_classes, **self.spec.options)
        if options.init_from_teacher:
            if context.teacher is None or context.teacher != self.spec:
                raise UserError(
                    "method.options.init_from_teacher: the intermediate teacher must have the strong "
                    "teacher's architecture and options; unset intermediate_arch or init_from_teacher"
                )
            self.intermediate.load_state_dict(teacher.state_dict())
        self.ema_teacher: nn.Module | None = None
        if options.ema:
            self.ema_teacher = self.keep_in_eval(freeze(copy.deepcopy(self.intermediate)))
        self._student_loss = [student_loss_method(options)]  # a list: no parameters, not a submodule

    @staticmethod
    def _intermediate_spec(options: SATEOptions, context: MethodContext) -> NetworkSpec:
        if options.intermediate_arch is not None:
            return NetworkSpec(options.intermediate_arch, dict(options.intermediate_options))
        if context.teacher is None:
            raise UserError("method.options.intermediate_arch: set it (the teacher's arch is unknown)")
        return NetworkSpec(
            context.teacher.arch, dict(options.intermediate_options or context.teacher.options)
        )

    def param_groups(self) -> list[dict[str, Any]]:
        return [
            {"params": [p for p in self.student.parameters() if p.requires_grad]},
            {"params": list(self.intermediate.parameters()), "lr_scale": self.options.lr_scale},
        ]

    ramp: float = 1.0  # the factor SATE adds on the student's distillation terms this epoch

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """The wrapped loss's own schedule, then one ramp of the student's distillation terms.

        The terms ramp in once, over the longer of `student_warmup_epochs` and the wrapped loss's own
        ramp (DKD's `ramp_epochs`): the effective weight is min(SATE's ramp, the loss's ramp), never
        their product. `self.ramp` is the factor SATE multiplies on top of what the loss already applies.
        """
        inner = self._student_loss[0]
        inner.on_epoch_start(epoch, epochs)
        span = self.options.student_warmup_epochs
        own = min((epoch + 1) / span, 1.0) if span > 0 else 1.0
        applied = inner.ramp  # > 0: DKD's ramp starts at 1 / ramp_epochs
        self.ramp = min(own, applied) / applied

    @torch.no_grad()
    def after_step(self) -> None:
        """EMA update of the intermediate teacher's weights; BN statistics are copied."""
        if self.ema_teacher is None:
            return
        ema = list(self.ema_teacher.parameters())
        torch._foreach_lerp_(ema, list(self.intermediate.parameters()), 1.0 - self.options.ema_decay)
        for mine, theirs in zip(self.ema_teacher.buffers(), self.intermediate.buffers(), strict=True):
            mine.copy_(theirs)

    def companions(self) -> dict[str, tuple[nn.Module, NetworkSpec]]:
        networks = {"intermediate_teacher": (self.intermediate, self.spec)}
        if self.ema_teacher is not None:
            networks["intermediate_teacher_ema"] = (self.ema_teacher, self.spec)
        return networks

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        options = self.options
        with torch.no_grad():
            strong = self.teacher(images)
            guide = self.ema_teacher(images) if self.ema_teacher is not None else None
        middle = self.intermediate(images)
        logits = self.student(images)
        if guide is None:
            guide = middle.detach()
        terms = {  # the intermediate teacher starts untrained: its guidance ramps in
            f"student_{k}": v if k == "ce" else self.ramp * v
            for k, v in self._student_loss[0].logit_terms(logits, guide, labels).items()
        }
        t = options.temperature
        terms["intermediate_ce"] = options.ce_weight * F.cross_entropy(middle, labels)
        terms["intermediate_kd"] = options.kd_weight * kd_loss(middle, strong, t)
        terms["intermediate_aware"] = options.aware_weight * kd_loss(middle, logits.detach(), t)
        return logits, terms
