"""`rsd`: restructured self-distillation (Zheng et al., TIP 2024).

The student network is expanded (`kdforge.compress.reparam.expand`): every KxK conv + BN becomes a
multi-branch block.
One step runs it twice: the *student pass* with branches dropped per sample (`drop_rate`), and
the *teacher pass* with all branches; at a random stage (forward hook, module path) the teacher pass
continues on [x, x_tt, x_ts] with x_tt = lam x + (1 - lam) x[perm] and x_ts = lam x + (1 - lam) f_s[perm],
f_s the student pass's features there, lam ~ Beta(2, 2). Loss (teacher logits not detached, as the
paper's code): alpha [CE(s) + CE(t) + mixCE(tt) + mixCE(ts)] + beta [KL_T(s || t) + KL_T(ts || tt)],
T = 3. With `use_teacher: true` an external frozen teacher adds KD: rsd_weight * L_RSD +
external_weight * KD(teacher pass || external teacher). Evaluation and deployment use all branches,
which `kdforge.export.reparameterize` merges back into the plain architecture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from kdforge.compress.config import Fraction, NonNegativeFloat, PositiveFloat
from kdforge.compress.errors import UserError
from kdforge.compress.methods.base import Distiller, MethodContext
from kdforge.compress.models import FeatureTap
from kdforge.compress.models.features import resolve_module
from kdforge.compress.reparam import branch_dropping, expand
from kdforge.kernels import kd_loss
from torch import nn


@dataclass
class RSDOptions:
    """The paper's defaults: T 3, alpha = beta = 1, drop rate 0.2, mixture at a random stage."""

    temperature: PositiveFloat = 3.0
    alpha: NonNegativeFloat = 1.0
    beta: NonNegativeFloat = 1.0
    drop_rate: Fraction = 0.2  # [0, 1)
    extra_branches: list[str] = field(default_factory=list)  # any of '1x1', 'identity', 'avg'
    stages: list[str] | None = None  # feature-mixture points; default: the model's `stage_names`
    mix: bool = True
    use_teacher: bool = False  # distill the teacher pass from an external (frozen) teacher too
    rsd_weight: NonNegativeFloat = 0.1  # with use_teacher: weight of the RSD loss
    external_weight: NonNegativeFloat = 0.9  # with use_teacher: weight of KD(teacher pass || external)
    external_temperature: PositiveFloat = 4.0


def mixed_ce(
    logits: torch.Tensor, labels: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy against the mixture of the labels and the permuted labels."""
    return lam * F.cross_entropy(logits, labels) + (1 - lam) * F.cross_entropy(logits, labels[perm])


class RSD(Distiller):
    """One expanded network that distills its own branch-dropped sub-networks."""

    name = "rsd"
    needs_teacher = False
    Options = RSDOptions

    @classmethod
    def wants_teacher(cls, options: dict[str, Any]) -> bool:
        return bool(options.get("use_teacher", False))

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        options: RSDOptions,
        context: MethodContext | None = None,
    ) -> None:
        expanded = expand(student, extra=tuple(options.extra_branches))
        super().__init__(expanded, teacher, options, context)
        stages = options.stages if options.stages is not None else list(getattr(student, "stage_names", []))
        if options.mix and not stages:
            raise UserError(
                f"{type(student).__name__} declares no stage_names: set method.options.stages to module "
                "paths for the feature mixture, or mix: false"
            )
        for path in stages:
            resolve_module(expanded, path)
        self.stages = list(stages)

    def deliverable_meta(self) -> dict[str, Any]:
        return {"rep": {"extra": list(self.options.extra_branches)}}

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        options, net = self.options, self.student
        stage = self.stages[int(torch.randint(len(self.stages), ()))] if options.mix else None
        with branch_dropping(net, options.drop_rate):
            if stage is None:
                student_logits = net(images)
            else:
                with FeatureTap(net, [stage]) as tap:
                    student_logits = net(images)
                    student_features = tap.features[stage]
        terms = {"ce_student": F.cross_entropy(student_logits, labels)}
        if stage is None:
            teacher_logits = net(images)
        else:
            batch = images.shape[0]
            lam = torch.distributions.Beta(2.0, 2.0).sample().to(images.device)
            perm = torch.randperm(batch, device=images.device)

            def mixture(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
                mixed_tt = lam * out + (1 - lam) * out[perm]
                mixed_ts = lam * out + (1 - lam) * student_features[perm]
                return torch.cat([out, mixed_tt, mixed_ts])

            handle = net.get_submodule(stage).register_forward_hook(mixture)
            try:
                teacher_logits, mix_tt, mix_ts = net(images).split(batch)
            finally:
                handle.remove()
            terms["mix_ce_tt"] = mixed_ce(mix_tt, labels, perm, lam)
            terms["mix_ce_ts"] = mixed_ce(mix_ts, labels, perm, lam)
            terms["kl_mix"] = kd_loss(mix_ts, mix_tt, options.temperature)
        terms["ce_teacher"] = F.cross_entropy(teacher_logits, labels)
        terms["kl_student"] = kd_loss(student_logits, teacher_logits, options.temperature)
        kl = {"kl_student", "kl_mix"}
        scale = options.rsd_weight if self.teacher is not None else 1.0
        terms = {k: scale * (options.beta if k in kl else options.alpha) * v for k, v in terms.items()}
        if self.teacher is not None:
            with torch.no_grad():
                external = self.teacher(images)
            terms["kd_external"] = options.external_weight * kd_loss(
                teacher_logits, external, options.external_temperature
            )
        return student_logits, terms
