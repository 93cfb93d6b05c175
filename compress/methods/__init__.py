"""Distillation methods, one file each, built by name from a recipe's `method` section.

`METHODS` are student methods (`kdforge compress --method NAME`); `TEACHER_STRATEGIES` train a teacher
(`kdforge teacher` with `teacher_strategy.name`).
"""

from __future__ import annotations

import dataclasses
import difflib

from torch import nn

from compress.config import MethodConfig, from_dict
from compress.errors import UserError
from compress.methods.base import Distiller, MethodContext, NetworkSpec, freeze
from compress.methods.ce import CE
from compress.methods.dist import DIST
from compress.methods.dist_plus import DISTPlus
from compress.methods.dkd import DKD
from compress.methods.generous import GenerousTeacher
from compress.methods.kd import KD
from compress.methods.rsd import RSD
from compress.methods.sate import SATE, student_loss_method

METHODS: dict[str, type[Distiller]] = {cls.name: cls for cls in (CE, KD, DKD, DIST, DISTPlus, SATE, RSD)}
TEACHER_STRATEGIES: dict[str, type[Distiller]] = {"generous": GenerousTeacher}
POSITIVE = (
    "temperature",
    "feature_temperature",
    "k",
    "external_temperature",
)  # options that must be > 0, where a method has them


def method_class(name: str, registry: dict[str, type[Distiller]] | None = None) -> type[Distiller]:
    """The method registered under `name`, or a UserError naming the nearest one."""
    registry = METHODS if registry is None else registry
    if name not in registry:
        near = difflib.get_close_matches(name, list(registry), n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"available: {', '.join(sorted(registry))}"
        if name in TEACHER_STRATEGIES and registry is METHODS:
            hint = f"{name!r} trains a teacher: use `kdforge teacher` with teacher_strategy.name={name}"
        raise UserError(f"method.name: unknown method {name!r}; {hint}")
    return registry[name]


def check_options(options: object, path: str) -> None:
    """Range checks shared by every options dataclass: weights >= 0, temperatures > 0."""
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if isinstance(value, float) and value < 0:
            raise UserError(f"{path}.{f.name}: must be >= 0, got {value}")
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise UserError(f"{path}.{f.name}: must be >= 0, got {value}")
        if f.name in POSITIVE and value <= 0:
            raise UserError(f"{path}.{f.name}: must be > 0, got {value}")


def method_options(config: MethodConfig, registry: dict[str, type[Distiller]] | None = None) -> object:
    """Validate `method.options` against the method's own options dataclass."""
    cls = method_class(config.name, registry)
    options = from_dict(cls.Options, config.options, "method.options")
    check_options(options, "method.options")
    if cls is SATE:
        check_options(student_loss_method(options).options, "method.options.student_loss_options")
    return options


def build_method(
    config: MethodConfig,
    student: nn.Module,
    teacher: nn.Module | None,
    context: MethodContext | None = None,
    registry: dict[str, type[Distiller]] | None = None,
) -> Distiller:
    """Instantiate the method of `config` around the given networks."""
    cls = method_class(config.name, registry)
    options = method_options(config, registry)
    wants = cls.wants_teacher(config.options)
    if wants and teacher is None:
        raise UserError(
            f"method {config.name!r} needs a teacher: set teacher.checkpoint or pass --teacher PATH"
        )
    return cls(student, teacher if wants else None, options, context)


__all__ = [
    "METHODS",
    "TEACHER_STRATEGIES",
    "Distiller",
    "MethodContext",
    "NetworkSpec",
    "build_method",
    "freeze",
    "method_class",
    "method_options",
]
