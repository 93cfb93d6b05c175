"""The name -> builder table of the CIFAR model zoo, filled by ``@register`` in the model files."""

from collections.abc import Callable

from torch import nn

Builder = Callable[..., nn.Module]

_ZOO: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator adding ``fn(num_classes, **options) -> nn.Module`` to the zoo under ``name``."""

    def add(fn: Builder) -> Builder:
        if name in _ZOO:
            raise ValueError(f"model name {name!r} is registered twice")
        _ZOO[name] = fn
        return fn

    return add


def lookup(name: str) -> Builder | None:
    """The builder registered under ``name``, or None."""
    return _ZOO.get(name)


def registered_names() -> list[str]:
    """All registered zoo names, sorted."""
    return sorted(_ZOO)
