"""Model registry: ``build(name, num_classes)`` for the CIFAR zoo, ``tv:<name>`` and ``timm:<name>``.

A zoo model file decorates its builders with ``@register(name)``; the ``MODELS`` table imports every module
of this package on its first lookup, so adding a model is one new file. Zoo models return logits only;
take intermediate features with ``FeatureTap`` (forward hooks by module path).
"""

import difflib
import inspect
from typing import Any

from kdforge.compress.errors import UserError
from kdforge.compress.registry import MODELS
from torch import nn

from . import convnet, wrn
from .features import FeatureTap, classifier_head, extract_features, probe_channels
from .registry import Builder, register

__all__ = [
    "FeatureTap",
    "available",
    "build",
    "classifier_head",
    "extract_features",
    "probe_channels",
    "register",
]


def available() -> list[str]:
    """Zoo model names (``wrn_<depth>_<width>`` is open-ended; the common sizes are listed)."""
    return sorted(MODELS)


def build(name: str, num_classes: int, **kw: Any) -> nn.Module:
    """Build a freshly initialised model (never pretrained weights) with a ``num_classes``-way classifier.

    Starting weights (a file, or a recipe's `weights`/`pretrained` option) are loaded afterwards by
    ``kdforge.compress.weights``, from local files only."""
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
    check_options(name, builder, kw)
    try:
        return builder(num_classes, **kw)
    except TypeError as exc:
        if not kw:
            raise
        # a name the signature allows but the model refuses (a torchvision argument its builder sets itself)
        raise UserError(f"model {name!r} rejected options {kw} ({exc}): fix or remove them") from exc


def option_names(builder: Builder) -> tuple[list[str], bool]:
    """The options ``builder(num_classes, **options)`` names in its signature, and whether it takes others."""
    params = list(inspect.signature(builder).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    taken = positional[0].name if positional else None  # receives num_classes
    names = [
        p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != taken
    ]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def check_options(name: str, builder: Builder, options: dict[str, Any]) -> None:
    """Refuse, in one line, an option the builder's signature does not take (before anything is built)."""
    names, open_ended = option_names(builder)
    for key in options:
        if key in (
            "weights",
            "pretrained",
        ):  # a recipe's starting weights: kdforge.compress.weights loads them
            raise UserError(
                f"model {name!r}: build() makes networks without pretrained weights, so it takes no "
                f"option {key!r}; in a recipe, `options: {{{key}: ...}}` starts the network from the "
                "locally cached pretrained weights (kdforge.compress.networks.start_network)"
            )
        if key in names or open_ended:
            continue
        near = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        valid = f"options: {', '.join(names)}" if names else "it takes no options"
        raise UserError(f"model {name!r} has no option {key!r}{hint} ({valid})")


def _zoo_builder(name: str) -> Builder:
    builder = MODELS.get(name) or wrn.builder_for(name) or convnet.builder_for(name)
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

    signature = _torchvision_signature(torchvision.models.get_model_builder(name))
    make.__signature__ = signature  # type: ignore[attr-defined]  # what check_options reads
    return make


def _torchvision_signature(builder: Builder) -> inspect.Signature:
    """``(num_classes, *, <options>)`` of a torchvision model: its builder's keywords (not `weights` or
    `progress`) and its model class's constructor arguments, along the class's bases.

    A class whose constructor takes ``**kwargs`` (MobileNetV3, ConvNeXt, the quantizable models) hands
    them to code we cannot see: then any option passes here and the model itself judges it.
    """
    own = inspect.signature(builder)
    skip = ("weights", "progress", "num_classes")  # no pretrained weights: nothing to download either
    params = [p for p in own.parameters.values() if p.kind is p.KEYWORD_ONLY and p.name not in skip]
    open_ended = True
    model = own.return_annotation
    if isinstance(model, type) and issubclass(model, nn.Module):
        open_ended = False
        for cls in model.__mro__:
            if cls is nn.Module or not issubclass(cls, nn.Module) or "__init__" not in vars(cls):
                continue
            for p in inspect.signature(cls.__init__).parameters.values():
                if p.kind is p.VAR_KEYWORD or p.kind is p.VAR_POSITIONAL:
                    open_ended = True
                elif p.name not in ("self", "num_classes") and p.name not in {q.name for q in params}:
                    params.append(p.replace(kind=p.KEYWORD_ONLY))
    head = inspect.Parameter("num_classes", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    tail = [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)] if open_ended else []
    return inspect.Signature([head, *params, *tail])


def _timm_builder(name: str) -> Builder:
    try:
        import timm  # pyright: ignore[reportMissingImports]  (optional, not a dependency)
    except ImportError:
        raise UserError(f"model 'timm:{name}' needs timm, which is not installed: pip install timm") from None
    if not timm.is_model(name):
        near = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.4)
        hint = _did_you_mean([f"timm:{n}" for n in near]) if near else "see timm.list_models()"
        raise UserError(f"unknown timm model 'timm:{name}': {hint}")

    def make(num_classes: int, **kw: Any) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kw)

    return make
