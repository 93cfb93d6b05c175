"""`@register(name)`: how a model file adds a builder to the zoo (the `MODELS` table of compress/registry)."""

from collections.abc import Callable

from kdforge.compress.registry import MODELS
from torch import nn

Builder = Callable[..., nn.Module]


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator adding ``fn(num_classes, **options) -> nn.Module`` to the zoo under ``name``."""

    def add(fn: Builder) -> Builder:
        return MODELS.register(name, fn)

    return add
