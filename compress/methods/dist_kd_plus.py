"""`dist_plus`: DIST+ (Huang et al., TPAMI 2025) = DIST on logits + DIST on features + teacher acclimation.

Feature DIST, our reading (`feature_reading: ours`, the default): at each tapped stage the student's map
(after a 1x1 conv + BN connector when channel counts differ) and the teacher's map are compared with the
DIST relation twice: the channel relation is the per-position softmax over channels, correlated row by
row (B*H*W rows of C values); the spatial relation is the per-channel softmax over positions (B*C rows of
H*W values). Both use `kdforge.kernels.dist_loss` with gamma = 0 (the rows are the relation; there is no
class axis to transpose).

torchdistill's reading (`feature_reading: torchdistill`, its DISTPlusLoss): raw features, no softmax and
no temperature; the channel relation is the Pearson correlation over channels at each position; the
spatial relation sums the map over channels and correlates each position across the batch. Each term is
1 - mean correlation here (torchdistill adds the channel correlation itself, without the `1 -`; see
docs/methods.md).

Teacher acclimation: the teacher's body stays frozen and in eval mode; only its classifier head trains,
at `acclimation_lr_scale` times the lr, on acclimation_ce_weight * CE(head(f), y) +
acclimation_weight * DIST(head(f), stop_grad(student logits)): it drifts toward relations the student
can follow while cross-entropy keeps it accurate. The student always sees the current, detached head.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from kdforge.compress.errors import UserError
from kdforge.compress.method_options import DISTPlusOptions, check_dist_plus
from kdforge.compress.methods.base import Distiller, freeze, register
from kdforge.compress.methods.dist_kd import dist_relation_loss
from kdforge.compress.models import FeatureTap, classifier_head, probe_channels
from kdforge.compress.train.distributed import gather_rows
from kdforge.kernels import dist_loss
from kdforge.kernels.dist_kd_reference import pearson_correlation
from torch import nn


def default_stages(model: nn.Module, given: list[str] | None, role: str) -> list[str]:
    """The configured stage paths, or the model's last stage when none are given."""
    if given:
        return list(given)
    stages = getattr(model, "stage_names", None)
    if not stages:
        raise UserError(
            f"{type(model).__name__} declares no stage_names: set method.options.{role}_stages "
            "to module paths (see model.named_modules())"
        )
    return [stages[-1]]


def connector(in_channels: int, out_channels: int) -> nn.Module:
    """1x1 conv + BN mapping student channels to the teacher's; identity when they already agree."""
    if in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))


def feature_dist(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float,
    channel: float,
    spatial: float,
    reading: str = "ours",
    global_batch: bool = False,
) -> torch.Tensor:
    """Channel relation + spatial relation of two (N, C, H, W) maps, in `reading` (see the module doc).

    `global_batch` (torchdistill's reading only, whose spatial relation runs across the batch): under DDP,
    correlate over every rank's rows, as DIST's intra-class term does. Other terms are per sample.
    """
    if student.shape[-2:] != teacher.shape[-2:]:  # different strides: compare at the coarser grid
        size = (min(student.shape[-2], teacher.shape[-2]), min(student.shape[-1], teacher.shape[-1]))
        student, teacher = F.adaptive_avg_pool2d(student, size), F.adaptive_avg_pool2d(teacher, size)
    if reading == "torchdistill":
        return torchdistill_feature_dist(student, teacher, channel, spatial, global_batch)
    n, c, h, w = teacher.shape
    loss = student.new_zeros((), dtype=torch.float32)
    if channel > 0 and c > 1:
        rows_s = student.permute(0, 2, 3, 1).reshape(-1, c)
        rows_t = teacher.permute(0, 2, 3, 1).reshape(-1, c)
        loss = loss + channel * dist_loss(rows_s, rows_t, 1.0, 0.0, temperature)
    if spatial > 0 and h * w > 1:
        loss = loss + spatial * dist_loss(
            student.reshape(n * c, h * w), teacher.reshape(n * c, h * w), 1.0, 0.0, temperature
        )
    return loss


def torchdistill_feature_dist(
    student: torch.Tensor, teacher: torch.Tensor, channel: float, spatial: float, global_batch: bool = False
) -> torch.Tensor:
    """torchdistill's DIST+ feature relations on raw maps, each as 1 - mean Pearson correlation.

    channel: at each (n, h, w), the C raw values of student and teacher; spatial: each map summed over
    channels, (N, H*W), then each position's N values across the batch. No softmax, no temperature and no
    T^2. Pearson as in DIST: the centred cosine with 1e-8 added to the product of the norms.
    """
    if student.dtype != torch.float64:  # fp32 math under autocast too
        student, teacher = student.float(), teacher.float()
    c = teacher.shape[1]
    loss = student.new_zeros(())
    if channel > 0 and c > 1:
        r = pearson_correlation(student, teacher, 1e-8, dim=1)  # (N, H, W)
        loss = loss + channel * (1 - r.mean())
    if spatial > 0:
        summed_s, summed_t = student.sum(1).flatten(1), teacher.sum(1).flatten(1)  # (N, H*W)
        if global_batch:
            summed_s, summed_t = gather_rows(summed_s), gather_rows(summed_t)
        if summed_s.shape[0] > 1:
            loss = loss + spatial * (1 - pearson_correlation(summed_s, summed_t, 1e-8, dim=0).mean())
    return loss


@register
class DISTPlus(Distiller):
    """DIST on logits and features; optionally the teacher's head acclimates to the student."""

    name = "dist_plus"
    Options = DISTPlusOptions

    @classmethod
    def validate_options(cls, raw: dict[str, Any], path: str = "method.options") -> DISTPlusOptions:
        """The fields' own limits, then: a feature temperature means nothing in torchdistill's reading."""
        options = super().validate_options(raw, path)
        check_dist_plus(options, path)  # the one declaration, torch-free (compress/method_options.py)
        return options

    def __init__(self, student: nn.Module, teacher: nn.Module | None, options: Any, context: Any = None):
        super().__init__(student, teacher, options, context)
        assert teacher is not None
        self.student_paths = default_stages(student, options.student_stages, "student")
        self.teacher_paths = default_stages(teacher, options.teacher_stages, "teacher")
        if len(self.student_paths) != len(self.teacher_paths):
            raise UserError(
                f"method.options: {len(self.student_paths)} student_stages but "
                f"{len(self.teacher_paths)} teacher_stages; list one teacher stage per student stage"
            )
        student_channels = probe_channels(student, self.student_paths)
        teacher_channels = probe_channels(teacher, self.teacher_paths)
        self.connectors = nn.ModuleList(
            connector(s, t) for s, t in zip(student_channels, teacher_channels, strict=True)
        )
        self.head_path, self.head = classifier_head(teacher)
        if options.acclimation:  # body frozen in eval mode (but resumed: its head trains)
            self.keep_in_eval(freeze(teacher))
            self.head.requires_grad_(True)

    def trains_teacher(self) -> bool:
        return bool(self.options.acclimation)

    def param_groups(self) -> list[dict[str, Any]]:
        student = [p for p in self.student.parameters() if p.requires_grad]
        groups = [{"params": student + list(self.connectors.parameters())}]
        if self.options.acclimation:
            groups.append(
                {"params": list(self.head.parameters()), "lr_scale": self.options.acclimation_lr_scale}
            )
        return groups

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        options = self.options
        head_input: list[torch.Tensor] = []
        hook = self.head.register_forward_pre_hook(lambda module, args: head_input.append(args[0]))
        try:
            with torch.no_grad(), FeatureTap(self.teacher, self.teacher_paths) as tap:
                teacher_logits = self.teacher(images)
                teacher_features = [tap.features[p] for p in self.teacher_paths]
        finally:
            hook.remove()
        with FeatureTap(self.student, self.student_paths) as tap:
            logits = self.student(images)
            student_features = [tap.features[p] for p in self.student_paths]
        features = sum(
            feature_dist(
                project(s),
                t,
                options.feature_temperature,
                options.channel_weight,
                options.spatial_weight,
                options.feature_reading,
                options.global_batch,
            )
            for project, s, t in zip(self.connectors, student_features, teacher_features, strict=True)
        )
        terms = {
            "ce": options.ce_weight * F.cross_entropy(logits, labels),
            "dist": options.kd_weight * dist_relation_loss(logits, teacher_logits, options),
            "feature_dist": options.feature_weight * features / len(self.student_paths),
        }
        if options.acclimation:  # gradients reach only the head: its input and the student are detached
            head_logits = self.head(head_input[-1].detach())
            terms["teacher_ce"] = options.acclimation_ce_weight * F.cross_entropy(head_logits, labels)
            terms["teacher_acclimation"] = options.acclimation_weight * dist_relation_loss(
                head_logits, logits.detach(), options
            )
        return logits, terms
