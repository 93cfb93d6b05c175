"""`rsd`: restructured self-distillation (Zheng et al., TIP 2024).

The student network is expanded (`kdforge.compress.reparam.expand`): every KxK conv + BN becomes a
multi-branch block.
One step runs it twice: the *student pass* with branches dropped per sample (`drop_rate`; `drop_rescale`
picks ours, survivors times branches / kept with one kept at least, or the official code's DropPath,
survivors times 1 / (1 - rate), all may drop), and the *teacher pass* with all branches; at a random
mixing point (the output of a stage, by module path; with `mix_after_stem` also the input of the first
stage, i.e. the stem's output, as the official ResNets) the teacher pass continues on [x, x_tt, x_ts]
with x_tt = lam x + (1 - lam) x[perm] and x_ts = lam x + (1 - lam) f_s[perm], f_s the student pass's
features there, lam ~ Beta(2, 2). Loss (teacher logits not detached, as the
paper's code): alpha [CE(s) + CE(t) + mixCE(tt) + mixCE(ts)] + beta [KL_T(s || t) + KL_T(ts || tt)],
T = 3. With `use_teacher: true` an external frozen teacher adds KD: rsd_weight * L_RSD +
external_weight * KD(teacher pass || external teacher). Evaluation and deployment use all branches,
which `kdforge.export.reparameterize` merges back into the plain architecture.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from kdforge.compress.errors import UserError
from kdforge.compress.method_options import RSDOptions
from kdforge.compress.methods.base import Distiller, MethodContext, register
from kdforge.compress.models.features import resolve_module
from kdforge.compress.reparam import branch_dropping, expand
from kdforge.kernels import kd_loss
from torch import nn
from torch.utils.hooks import RemovableHandle

MixPoint = tuple[str, str]  # (module path, "output" | "input")


def tap_point(net: nn.Module, point: MixPoint, hook: Any) -> RemovableHandle:
    """Register `hook(tensor) -> tensor | None` on a point's output (forward hook) or input (pre-hook)."""
    path, where = point
    module = net.get_submodule(path)
    if where == "output":
        return module.register_forward_hook(lambda m, args, out: hook(out))

    def pre(m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        new = hook(args[0])
        return None if new is None else (new, *args[1:])

    return module.register_forward_pre_hook(pre)


def mixed_ce(
    logits: torch.Tensor, labels: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy against the mixture of the labels and the permuted labels."""
    return lam * F.cross_entropy(logits, labels) + (1 - lam) * F.cross_entropy(logits, labels[perm])


@register
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
        self.points: list[MixPoint] = [(path, "output") for path in self.stages]
        if options.mix and options.mix_after_stem:
            if not self.stages:
                raise UserError(
                    "method.options.mix_after_stem: needs at least one stage (method.options.stages)"
                )
            self._check_stem(expanded, self.stages[0])
            self.points.insert(0, (self.stages[0], "input"))

    @staticmethod
    def _check_stem(net: nn.Module, first: str) -> None:
        """The input of `first` must be a feature map some layers produced, not the images themselves."""
        seen: list[Any] = []
        images = torch.zeros(2, 3, 32, 32, device=next(net.parameters()).device)
        handle = net.get_submodule(first).register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                net(images)
        finally:
            handle.remove()
            net.train(was_training)
        if not seen or seen[0] is images or not (isinstance(seen[0], torch.Tensor) and seen[0].dim() == 4):
            raise UserError(
                f"method.options.mix_after_stem: the input of {first!r} is not a stem's (N, C, H, W) "
                "output but the images; list the stem's own module in method.options.stages instead"
            )

    def deliverable_meta(self) -> dict[str, Any]:
        return {"rep": {"extra": list(self.options.extra_branches)}}

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        options, net = self.options, self.student
        point = self.points[int(torch.randint(len(self.points), ()))] if options.mix else None
        with branch_dropping(net, options.drop_rate, options.drop_rescale):
            if point is None:
                student_logits = net(images)
            else:
                seen: list[torch.Tensor] = []
                handle = tap_point(net, point, seen.append)
                try:
                    student_logits = net(images)
                finally:
                    handle.remove()
                student_features = seen[-1]
        terms = {"ce_student": F.cross_entropy(student_logits, labels)}
        if point is None:
            teacher_logits = net(images)
        else:
            batch = images.shape[0]
            lam = torch.distributions.Beta(2.0, 2.0).sample().to(images.device)
            perm = torch.randperm(batch, device=images.device)

            def mixture(x: torch.Tensor) -> torch.Tensor:
                mixed_tt = lam * x + (1 - lam) * x[perm]
                mixed_ts = lam * x + (1 - lam) * student_features[perm]
                return torch.cat([x, mixed_tt, mixed_ts])

            handle = tap_point(net, point, mixture)
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
