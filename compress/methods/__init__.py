"""Distillation methods, one file each, built by name from a recipe's `method` section.

Every module of this package is imported here, and each `Distiller` subclass that sets `name` registers
itself: adding a method is adding one file. `METHODS` are student methods (`kdforge compress --method
NAME`); `TEACHER_STRATEGIES` train a teacher (`kdforge teacher` with `teacher_strategy.name`).
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Any

from kdforge.compress.config import MethodConfig
from kdforge.compress.errors import UserError
from kdforge.compress.methods.base import (
    METHODS,
    TEACHER_STRATEGIES,
    Distiller,
    MethodContext,
    NetworkSpec,
    freeze,
)
from torch import nn


def discover_methods() -> list[str]:
    """Import every module of this package, so each registers its methods; their names, in import order."""
    names = [module.name for module in pkgutil.iter_modules(__path__)]
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names


discover_methods()


def method_class(
    name: str, registry: dict[str, type[Distiller]] | None = None, key: str = "method.name"
) -> type[Distiller]:
    """The method registered under `name`, or a UserError (naming the recipe `key`) with the nearest one."""
    registry = METHODS if registry is None else registry
    if name not in registry:
        near = difflib.get_close_matches(name, list(registry), n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"available: {', '.join(sorted(registry))}"
        if name in TEACHER_STRATEGIES and registry is METHODS:
            hint = f"{name!r} trains a teacher: use `kdforge teacher` with teacher_strategy.name={name}"
        what = "teacher strategy" if registry is TEACHER_STRATEGIES else "method"
        raise UserError(f"{key}: unknown {what} {name!r}; {hint}")
    return registry[name]


def method_options(config: MethodConfig, registry: dict[str, type[Distiller]] | None = None) -> Any:
    """`method.options` validated by the method itself (keys, types, limits): its Options instance."""
    return method_class(config.name, registry).validate_options(config.options, "method.options")


def build_method(
    config: MethodConfig,
    student: nn.Module,
    teacher: nn.Module | None,
    context: MethodContext | None = None,
    registry: dict[str, type[Distiller]] | None = None,
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
]
