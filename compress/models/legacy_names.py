"""kdforge checkpoints written before the CIFAR zoo became the CRD / mdistiller reference models
(2026-12-07), read into today's networks exactly: the renamed classifiers (`shufflenetv2` fc -> linear,
`mobilenetv2` classifier -> classifier.0), VGG's new conv biases filled with zeros (a conv without bias is
one with a zero bias), the old default WRN (post-activation) rebuilt with `preact: false`, and the old
`preact: true` WRN's names moved to the reference's."""

from __future__ import annotations

import re
from typing import Any

import torch

_WRN = re.compile(r"wrn_\d+_\d+")
_OLD_PREACT = (
    (re.compile(r"^(block\d)\.(\d+)\."), r"\1.layer.\2."),
    (re.compile(r"\.shortcut\."), ".convShortcut."),
    (re.compile(r"^bn_out\."), "bn1."),
)


def upgrade(
    model_meta: dict[str, Any], tensors: dict[str, torch.Tensor], expected: set[str]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """(model metadata, tensors) that load into today's zoo network, or None when `tensors` are not an
    older kdforge zoo network's (then the caller's strict check names the first mismatch). `expected`:
    today's keys for `model_meta` as written."""
    arch = str(model_meta.get("arch", ""))
    options = dict(model_meta.get("options") or {})
    if _WRN.fullmatch(arch):
        if "preact" not in options and "block1.0.conv1.weight" in tensors:  # the old default block
            return {**model_meta, "options": {**options, "preact": False}}, tensors
        if options.get("preact") is True and "bn_out.weight" in tensors:
            return model_meta, {_renamed(k): v for k, v in tensors.items()}
        return None
    renames = {"shufflenetv2": ("fc.", "linear."), "mobilenetv2": ("classifier.", "classifier.0.")}
    if arch in renames:
        old, new = renames[arch]
        moved = {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in tensors.items()}
        return (model_meta, moved) if set(moved) == expected and moved.keys() != tensors.keys() else None
    if arch.startswith("vgg"):
        missing = expected - set(tensors)
        if not missing or not all(_is_conv_bias(k, tensors) for k in missing):
            return None
        filled = dict(tensors)
        for key in missing:
            weight = tensors[key.removesuffix(".bias") + ".weight"]
            filled[key] = torch.zeros(weight.shape[0], dtype=weight.dtype)
        return model_meta, filled
    return None


def _renamed(key: str) -> str:
    for pattern, replacement in _OLD_PREACT:
        key = pattern.sub(replacement, key)
    return key


def _is_conv_bias(key: str, tensors: dict[str, torch.Tensor]) -> bool:
    weight = tensors.get(key.removesuffix(".bias") + ".weight")
    return key.endswith(".bias") and weight is not None and weight.dim() == 4
