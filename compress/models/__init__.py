"""Model registry: ``build(name, num_classes)`` for the CIFAR zoo, ``tv:<name>`` and ``timm:<name>``.

Zoo models return logits only; take intermediate features with ``FeatureTap`` (forward hooks by module path).
"""

import difflib
import inspect
import re
from typing import Any

from torch import nn

from compress.errors import UserError

from . import mobilenetv2, resnet_cifar, shufflenetv2, vgg, wrn
from .features import FeatureTap, classifier_head, extract_features, probe_channels
from .registry import Builder, lookup, register, registered_names

__all__ = [
    "FeatureTap",
    "available",
    "build",
    "classifier_head",
    "extract_features",
    "probe_channels",
    "register",
]

_ZOO_MODULES = (resnet_cifar, wrn, vgg, mobilenetv2, shufflenetv2)  # imported for their @register side effect


def available() -> list[str]:
    """Zoo model names (``wrn_<depth>_<width>`` is open-ended; the common sizes are listed)."""
    return registered_names()


def build(name: str, num_classes: int, **kw: Any) -> nn.Module:
    """Build a freshly initialised model (never pretrained weights) with a ``num_classes``-way classifier."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive int, got {num_classes!r}: set it to the class count")
    if not isinstance(name, str):
        raise UserError(f"model name must be a string, got {name!r}: use one of {', '.join(available())}")
    if name.startswith("tv:"):
        builder = _torchvision_builder(name[3:])
    elif name.startswith("timm:"):
        builder = _timm_builder(name[5:])
    else:
        builder = _zoo_builder(name.strip().lower())
    try:
        return builder(num_classes, **kw)
    except TypeError as exc:
        if not kw:
            raise
        found = re.search(r"keyword argument '(\w+)'", str(exc))
        if found is None:
            raise UserError(f"model {name!r} rejected options {kw} ({exc}): fix or remove them") from exc
        raise UserError(f"model {name!r} has no option {found[1]!r}{_options(builder)}: remove it") from exc


def _options(builder: Builder) -> str:
    params = inspect.signature(builder).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return ""  # torchvision / timm: options are the model class's
    names = [p.name for p in params if p.name != "num_classes"]
    return f" (options: {', '.join(names)})" if names else " (it takes no options)"


def _zoo_builder(name: str) -> Builder:
    builder = lookup(name) or wrn.builder_for(name)
    if builder is not None:
        return builder
    near = difflib.get_close_matches(name, available(), n=3, cutoff=0.4)
    if name in _torchvision_names():
        near.insert(0, f"tv:{name}")
    hint = _did_you_mean(near) if near else f"choose one of {', '.join(available())}"
    raise UserError(f"unknown model {name!r}: {hint} (torchvision: 'tv:<name>', timm: 'timm:<name>')")


def _did_you_mean(names: list[str]) -> str:
    return f"did you mean {' or '.join(map(repr, names))}?"


def _torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models()


def _torchvision_builder(name: str) -> Builder:
    import torchvision

    names = _torchvision_names()
    if name not in names:
        near = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
        hint = _did_you_mean([f"tv:{n}" for n in near]) if near else "see torchvision.models"
        raise UserError(f"unknown torchvision model 'tv:{name}': {hint}")

    def make(num_classes: int, **kw: Any) -> nn.Module:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kw)

    return make


def _timm_builder(name: str) -> Builder:
    try:
        import timm
    except ImportError:
        raise UserError(f"model 'timm:{name}' needs timm, which is not installed: pip install timm") from None
    if not timm.is_model(name):
        near = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.4)
        hint = _did_you_mean([f"timm:{n}" for n in near]) if near else "see timm.list_models()"
        raise UserError(f"unknown timm model 'timm:{name}': {hint}")

    def make(num_classes: int, **kw: Any) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kw)

    return make
