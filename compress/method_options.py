"""Every built-in method's and teacher strategy's options, torch-free: recipes are checked before torch loads.

`kdforge run` must refuse a typo in `method.options` in one line within 2 seconds; importing the method
modules costs torch's import (over a second). So each method's options dataclass, its `renamed_options` and
its checks across fields live here, registered by name with `@options_for` into `METHOD_OPTIONS` /
`STRATEGY_OPTIONS` (kdforge.compress.registry); the method class takes `Options` and `renamed_options` from
here. This module sits outside the `methods` package: importing that package imports torch. A method in a
file of its own that is not listed here still works: the recipe check then imports and asks its class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Literal

from annotated_types import Interval
from kdforge.compress.config import (
    Fraction,
    NonNegative,
    NonNegativeFloat,
    PositiveFloat,
    options_from_dict,
)
from kdforge.compress.errors import UserError
from kdforge.compress.registry import METHOD_OPTIONS, STRATEGY_OPTIONS
from kdforge.kernels.defaults import DIST_TEMPERATURE, DKD_TEMPERATURE, KD_TEMPERATURE


@dataclass(frozen=True)
class MethodOptions:
    """A method's options declaration: what `Distiller.validate_options` checks, without the class."""

    name: str
    options: type  # the options dataclass (the class's `Options`)
    renamed_options: Mapping[str, str] = field(default_factory=dict)  # old name -> new: the old keeps working
    check: Callable[[Any, str], None] | None = None  # checks across fields, after each field's own

    def validate_options(self, raw: dict[str, Any], path: str = "method.options") -> Any:
        """The options dataclass from raw options: keys, types, field limits, then `check`; or a UserError."""
        options = options_from_dict(self.options, raw, path, dict(self.renamed_options))
        if self.check is not None:
            self.check(options, path)
        return options


def options_for(
    name: str,
    kind: Literal["student", "teacher"] = "student",
    renamed_options: Mapping[str, str] | None = None,
    check: Callable[[Any, str], None] | None = None,
) -> Callable[[type], type]:
    """Class decorator: register an options dataclass under its method's `name` (teacher: a strategy)."""

    def decorate(options: type) -> type:
        table = STRATEGY_OPTIONS if kind == "teacher" else METHOD_OPTIONS
        renames = MappingProxyType(dict(renamed_options or {}))
        table.register(name, MethodOptions(name, options, renames, check))
        return options

    return decorate


@options_for("ce")
@dataclass
class CEOptions:
    """Label smoothing is off by default, as in the papers' baselines."""

    label_smoothing: Annotated[float, Interval(ge=0, le=1)] = 0.0  # cross_entropy refuses more than 1


@options_for("kd")
@dataclass
class KDOptions:
    """CE weight + KD weight * T^2 * KL(p_t || p_s); `standardize` z-scores logits first (Sun et al.)."""

    temperature: PositiveFloat = KD_TEMPERATURE
    ce_weight: NonNegativeFloat = 0.1
    kd_weight: NonNegativeFloat = 0.9
    standardize: bool = False


DKD_RENAMED_OPTIONS = {"warmup_epochs": "ramp_epochs"}  # not the lr warm-up


@options_for("dkd", renamed_options=DKD_RENAMED_OPTIONS)
@dataclass
class DKDOptions:
    """CE + ramp * T^2 * (alpha * TCKD + beta * NCKD); the paper's CIFAR-100 defaults."""

    alpha: NonNegativeFloat = 1.0
    beta: NonNegativeFloat = 8.0
    temperature: PositiveFloat = DKD_TEMPERATURE
    ce_weight: NonNegativeFloat = 1.0
    ramp_epochs: NonNegative = 20  # the DKD term ramps linearly to full weight over these epochs (0: none)
    standardize: bool = False


@options_for("dist")
@dataclass
class DISTOptions:
    """CE weight + KD weight * tau^2 * (beta * inter + gamma * intra); CIFAR defaults (tau 4, KD 2)."""

    temperature: PositiveFloat = DIST_TEMPERATURE  # kdforge.kernels.defaults, the kernel's default too
    beta: NonNegativeFloat = 1.0
    gamma: NonNegativeFloat = 1.0
    ce_weight: NonNegativeFloat = 1.0
    kd_weight: NonNegativeFloat = 2.0
    standardize: bool = False
    global_batch: bool = True  # under DDP: relations over every rank's rows (all-gather with gradient)


def check_dist_plus(options: DISTPlusOptions, path: str) -> None:
    """A feature temperature means nothing in torchdistill's reading (raw features, no softmax)."""
    if options.feature_reading == "torchdistill" and options.feature_temperature != 1.0:
        raise UserError(
            f"{path}.feature_temperature: torchdistill's feature reading uses raw features (no softmax, "
            f"no temperature); leave it at 1 or set feature_reading: ours"
        )


@options_for("dist_plus", check=check_dist_plus)
@dataclass
class DISTPlusOptions(DISTOptions):
    """DIST's options plus the feature term and the teacher acclimation (see docs/methods.md)."""

    feature_weight: NonNegativeFloat = 1.0
    feature_reading: Literal["ours", "torchdistill"] = "ours"  # how the feature relations are read
    feature_temperature: PositiveFloat = 1.0  # ours only (torchdistill's reading has no softmax)
    channel_weight: NonNegativeFloat = 1.0  # the channel relation (correlation over channels per position)
    spatial_weight: NonNegativeFloat = 1.0  # the spatial relation (see feature_reading)
    student_stages: list[str] | None = None  # module paths; default: the model's last `stage_names` entry
    teacher_stages: list[str] | None = None
    acclimation: bool = True
    acclimation_weight: NonNegativeFloat = 1.0
    acclimation_ce_weight: NonNegativeFloat = 1.0
    acclimation_lr_scale: NonNegativeFloat = 0.1  # the head's lr as a multiple of the run's lr


@options_for("generous", kind="teacher")
@dataclass
class GenerousOptions:
    """CE + nckd_weight * k^2 * NCKD at temperature k * std(logits) per sample."""

    k: PositiveFloat = 2.0  # temperature as a multiple of each sample's logit std
    nckd_weight: NonNegativeFloat = 1.0
    ce_weight: NonNegativeFloat = 1.0


@options_for("rsd")
@dataclass
class RSDOptions:
    """The paper's defaults: T 3, alpha = beta = 1, drop rate 0.2, mixture at a random stage."""

    temperature: PositiveFloat = 3.0
    alpha: NonNegativeFloat = 1.0
    beta: NonNegativeFloat = 1.0
    drop_rate: Fraction = 0.2  # [0, 1)
    # kept: survivors x branches / kept, one kept at least (ours); keep_prob: x 1 / (1 - rate), all may
    # drop (the official code's DropPath). Both keep every branch's expected weight at 1.
    drop_rescale: Literal["kept", "keep_prob"] = "kept"
    extra_branches: list[str] = field(default_factory=list)  # any of '1x1', 'identity', 'avg'
    stages: list[str] | None = None  # feature-mixture points; default: the model's `stage_names`
    mix: bool = True
    mix_after_stem: bool = False  # also mix at the input of the first stage (the official ResNets' index 0)
    use_teacher: bool = False  # distill the teacher pass from an external (frozen) teacher too
    rsd_weight: NonNegativeFloat = 0.1  # with use_teacher: weight of the RSD loss
    external_weight: NonNegativeFloat = 0.9  # with use_teacher: weight of KD(teacher pass || external)
    external_temperature: PositiveFloat = KD_TEMPERATURE  # KD from the external teacher


def check_sate(options: SATEOptions, path: str) -> None:
    """`student_loss_options` checked by the chosen student loss's own options, as its `method.options`."""
    METHOD_OPTIONS[options.student_loss].validate_options(
        options.student_loss_options, f"{path}.student_loss_options"
    )


@options_for("sate", check=check_sate)
@dataclass
class SATEOptions:
    """The student's loss and the intermediate teacher's architecture, objective and EMA."""

    student_loss: Literal["kd", "dist", "dkd"] = "kd"
    student_loss_options: dict[str, Any] = field(default_factory=dict)  # that method's options
    intermediate_arch: str | None = None  # default: the strong teacher's architecture
    intermediate_options: dict[str, Any] = field(default_factory=dict)
    init_from_teacher: bool = False  # start from the strong teacher's weights (same arch only)
    temperature: PositiveFloat = KD_TEMPERATURE  # the intermediate teacher's KD terms
    ce_weight: NonNegativeFloat = 1.0  # intermediate teacher: labels
    kd_weight: NonNegativeFloat = 1.0  # intermediate teacher: KD from the strong teacher
    aware_weight: NonNegativeFloat = 1.0  # intermediate: KL(student || intermediate), student detached
    lr_scale: NonNegativeFloat = 1.0  # the intermediate teacher's lr as a multiple of the run's lr
    student_warmup_epochs: NonNegative = 20  # the student's distillation terms ramp up linearly (0: none)
    ema: bool = False  # the student distills from an EMA of the intermediate teacher
    ema_decay: Fraction = 0.99  # per optimizer step, in [0, 1)
