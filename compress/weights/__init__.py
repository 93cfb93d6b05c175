"""Starting weights a user already has, in the form they have them (see docs/training.md, "Bring your
own model").

Accepted, for a network of the model registry (`arch` + `options` of the recipe):

- a kdforge checkpoint (safetensors with kdforge metadata);
- a plain PyTorch state dict (`.pth`/`.pt`/`.bin`, `torch.save`), read with `torch.load(weights_only=True)`
  so no pickled code ever runs; DDP's `module.`, `model.` and torch.compile's `_orig_mod.` prefixes and
  `state_dict`/`model` wrapper dicts are unwrapped;
- a safetensors state dict without kdforge metadata (what timm and Hugging Face ship);
- torchvision and timm pretrained weights by name (`options: {weights: DEFAULT}` for `tv:`,
  `pretrained: true` for `timm:`), read from the local caches those libraries fill. kdforge never
  downloads: a missing file is one line naming it and the command that fetches it;

and, as a teacher used as is only, a `torch.export` program (`.pt2`) a user can no longer rebuild as
Python code: `ExportedTeacher` runs its forward pass and nothing else.

Loading is strict: every tensor of the network, same keys, same shapes, or one line naming the first key
that does not fit, before any weight is touched. The one exception is fine-tuning: when the file's
classifier head predicts another number of classes, the head (the final Linear / 1x1 conv producing
`num_classes` outputs, and an auxiliary head of the same kind) keeps its fresh initialisation and
`Provenance` says so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdforge.compress.digest import sha256_file
from kdforge.compress.errors import UserError
from kdforge.compress.weights.exported import EXPORTED_ONLY, ExportedTeacher, load_exported
from kdforge.compress.weights.fit import fit_weights, head_paths
from kdforge.compress.weights.formats import inside_name, read_state_dict, sniff
from kdforge.compress.weights.pretrained import timm_weights, torchvision_keys, torchvision_weights
from kdforge.compress.weights.provenance import STARTING_OPTIONS, Provenance, split_options
from kdforge.compress.weights.reference_format import WEIGHTS_FORMATS, arrange
from torch import nn

__all__ = [
    "EXPORTED_ONLY",
    "STARTING_OPTIONS",
    "WEIGHTS_FORMATS",
    "ExportedTeacher",
    "Provenance",
    "fit_weights",
    "head_paths",
    "inside_name",
    "load_exported",
    "read_state_dict",
    "sha256_file",
    "sniff",
    "split_options",
    "start_weights",
    "timm_weights",
    "torchvision_weights",
]


def start_weights(
    model: nn.Module,
    arch: str,
    num_classes: int,
    *,
    path: str | Path | None = None,
    named: Mapping[str, Any] | None = None,
    role: str = "network",
    fine_tune: bool = True,
    weights_format: str = "auto",
) -> Provenance:
    """Load the starting weights of `model` (built as `arch` with `num_classes` outputs): from the file
    `path` in any accepted format, or the pretrained weights `named` (`{weights: ...}` / `{pretrained:
    true}`) from the local caches. Fine-tunes (a new head) when the class count differs and `fine_tune`.
    `weights_format` says how the file names its tensors (reference_format.WEIGHTS_FORMATS)."""
    if path is not None:
        file, label = Path(path), os.path.abspath(path)
        if file.is_dir():
            file = file / "best.safetensors"
        tensors, kind, meta = read_state_dict(file)
        if meta is not None and meta["model"]["arch"] != arch:
            raise UserError(
                f"checkpoint {str(file)!r} is a {meta['model']['arch']}, not {arch}; fix the arch or the path"
            )
    else:
        meta = None
        named = dict(named or {})
        if arch.startswith("tv:") and set(named) == {"weights"}:
            file, label = torchvision_weights(arch[3:], named["weights"], role)
            kind = "torchvision"
        elif arch.startswith("timm:") and set(named) == {"pretrained"}:
            file, label = timm_weights(arch[5:], named["pretrained"], role)
            kind = "timm"
        else:
            key = next(iter(named))
            if arch.startswith("tv:"):
                hint = "torchvision models take weights: DEFAULT (or a weights name such as IMAGENET1K_V1)"
            elif arch.startswith("timm:"):
                hint = "timm models take pretrained: true"
            else:
                hint = f"zoo models have no published weights; start from a file ({role}.init: PATH)"
            raise UserError(f"{role}.options.{key}: {hint}")
        tensors, _, _ = read_state_dict(file)
        if kind == "torchvision":
            tensors = torchvision_keys(tensors)
        label = f"{label} ({file})"
    where = f"{role} weights {str(file)!r}"
    if kind == "kdforge" and meta is not None:
        tensors = _older_zoo(meta, tensors, set(model.state_dict()), where, role)
    if kind in ("state_dict", "safetensors"):
        tensors, part, where = arrange(tensors, arch, set(model.state_dict()), weights_format, where)
        kind = part or kind
    loaded, reinitialised, classes = fit_weights(
        model, tensors, num_classes, where=where, arch=arch, fine_tune=fine_tune, path=str(path or file)
    )
    return Provenance(label, kind, sha256_file(file), loaded, reinitialised, classes)


def _older_zoo(
    meta: dict[str, Any], tensors: dict[str, Any], expected: set[str], where: str, role: str
) -> dict[str, Any]:
    """A kdforge checkpoint written before the zoo followed the reference models, under today's names
    (compress/models/legacy_names.py); an old post-activation WRN needs `preact: false`: one line says so."""
    if set(tensors) == expected:
        return tensors
    from kdforge.compress.models.legacy_names import upgrade

    upgraded = upgrade(meta["model"], tensors, expected)
    if upgraded is None:
        return tensors
    model_meta, renamed = upgraded
    if model_meta.get("options", {}).get("preact") is False and set(renamed) != expected:
        raise UserError(
            f"{where} is a post-activation {model_meta['arch']}, written before kdforge's wrn_* became the "
            f"reference (pre-activation) WRN: build it as one with --set {role}.options.preact=false"
        )
    return renamed
