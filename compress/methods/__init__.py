"""Distillation methods, one file each, built by name from a recipe's `method` section."""

from __future__ import annotations

import dataclasses
import difflib

from torch import nn

from compress.config import MethodConfig, from_dict
from compress.errors import UserError
from compress.methods.base import Distiller, freeze
from compress.methods.ce import CE
from compress.methods.kd import KD

METHODS: dict[str, type[Distiller]] = {cls.name: cls for cls in (CE, KD)}


def method_class(name: str) -> type[Distiller]:
    """The method registered under `name`, or a UserError naming the nearest one."""
    if name not in METHODS:
        near = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"available: {', '.join(sorted(METHODS))}"
        raise UserError(f"method.name: unknown method {name!r}; {hint}")
    return METHODS[name]


def method_options(config: MethodConfig) -> object:
    """Validate `method.options` against the method's own options dataclass."""
    cls = method_class(config.name)
    options = from_dict(cls.Options, config.options, "method.options")
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if isinstance(value, float) and value < 0:
            raise UserError(f"method.options.{f.name}: must be >= 0, got {value}")
    if getattr(options, "temperature", 1.0) <= 0:
        raise UserError("method.options.temperature: must be > 0")
    return options


def build_method(config: MethodConfig, student: nn.Module, teacher: nn.Module | None) -> Distiller:
    """Instantiate the method of `config` around the given networks."""
    cls = method_class(config.name)
    options = method_options(config)
    if cls.needs_teacher and teacher is None:
        raise UserError(
            f"method {config.name!r} needs a teacher: set teacher.checkpoint or pass --teacher PATH"
        )
    return cls(student, teacher if cls.needs_teacher else None, options)


__all__ = ["METHODS", "Distiller", "build_method", "freeze", "method_class", "method_options"]
