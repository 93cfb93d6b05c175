"""Distillation methods, one file each, built by name from a recipe's `method` section.

Each method class is decorated with `@register` (kdforge.compress.methods.base); the tables
(`kdforge.compress.registry`) import every module of this package on their first lookup, so adding a
method is adding one file. `METHODS` are student methods (`kdforge compress --method NAME`);
`TEACHER_STRATEGIES` train a teacher (`kdforge teacher` with `teacher_strategy.name`).
"""

from __future__ import annotations

from typing import Any

from kdforge.compress.config import MethodConfig
from kdforge.compress.errors import UserError
from kdforge.compress.methods.base import Distiller, MethodContext, NetworkSpec, freeze, register
from kdforge.compress.registry import METHODS, TEACHER_STRATEGIES, Registry, method_class
from torch import nn


def discover_methods() -> list[str]:
    """Import every module of this package, so each registers its methods; their names, in import order."""
    return METHODS.discover()


def method_options(config: MethodConfig, registry: Registry[type[Distiller]] | None = None) -> Any:
    """`method.options` validated by the method itself (keys, types, limits): its Options instance."""
    return method_class(config.name, registry).validate_options(config.options, "method.options")


def build_method(
    config: MethodConfig,
    student: nn.Module,
    teacher: nn.Module | None,
    context: MethodContext | None = None,
    registry: Registry[type[Distiller]] | None = None,
) -> Distiller:
    """Instantiate the method of `config` around the given networks."""
    cls = method_class(config.name, registry)
    options = cls.validate_options(config.options, "method.options")
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
    "discover_methods",
    "freeze",
    "method_class",
    "method_options",
    "register",
]
