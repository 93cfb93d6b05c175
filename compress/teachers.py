"""A trained teacher from a file: a kdforge checkpoint, a state dict or safetensors file of the recipe's
teacher, or a torch.export program (forward pass only), with where it came from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from kdforge.compress.config import NetworkConfig, RunConfig
from kdforge.compress.data import DataBundle, build_data
from kdforge.compress.errors import UserError
from kdforge.compress.layout import RunLayout
from kdforge.compress.methods import NetworkSpec
from kdforge.compress.models import build
from kdforge.compress.networks import network_spec
from kdforge.compress.train.checkpoint import check_fits, load_model, read_checkpoint, save_checkpoint
from kdforge.compress.train.distributed import DistContext
from kdforge.compress.train.meta import network_meta
from kdforge.compress.train.progress import announce
from kdforge.compress.weights import (
    Provenance,
    fit_weights,
    load_exported,
    read_state_dict,
    sha256_file,
    sniff,
)
from kdforge.compress.weights.reference_format import arrange
from torch import nn


class Teacher(NamedTuple):
    """A loaded teacher, how it was built (None for a torch.export program) and where it came from."""

    model: nn.Module
    spec: NetworkSpec | None
    source: Provenance


def load_teacher(
    path: str | Path,
    data: DataBundle,
    arch: str | None = None,
    network: NetworkConfig | None = None,
    *,
    exported: bool = True,
) -> Teacher:
    """A trained teacher, checked against the data's class count (and `arch` if given).

    `path`: a kdforge checkpoint; a state dict or safetensors file of `network` (the recipe's teacher:
    arch and options); or, when `exported`, a torch.export program (.pt2) run for its forward pass only."""
    kind = sniff(path)
    if kind == "kdforge":
        checkpoint = read_checkpoint(path)
        check_fits(checkpoint, num_classes=data.num_classes, arch=arch)
        model, checkpoint = load_model(path, num_classes=data.num_classes)
        model_meta = checkpoint.meta["model"]
        spec = NetworkSpec(model_meta["arch"], dict(model_meta.get("options") or {}))
        return Teacher(
            model, spec, Provenance(os.path.abspath(path), "kdforge", sha256_file(checkpoint.path))
        )
    if kind in ("torch.export", "aoti"):
        if not exported:
            raise UserError(
                f"teacher {str(path)!r} is a torch.export program (.pt2); this needs the teacher's "
                "architecture: give a checkpoint or a state dict"
            )
        teacher, source = load_exported(path, data.input_shape, data.num_classes)
        return Teacher(teacher, None, source)
    if network is None or (arch is not None and network.arch != arch):
        raise UserError(
            f"teacher {str(path)!r} is a plain state dict: set teacher.arch (and teacher.options) to the "
            "architecture it was saved from"
        )
    spec = network_spec(network)
    model = build(spec.arch, data.num_classes, **spec.options)
    tensors, kind, _ = read_state_dict(path)
    tensors, part, where = arrange(
        tensors, spec.arch, set(model.state_dict()), network.weights_format, f"teacher {str(path)!r}"
    )
    kind = part or kind
    loaded, _, _ = fit_weights(
        model,
        tensors,
        data.num_classes,
        where=where,
        arch=spec.arch,
        fine_tune=False,
        path=str(path),
    )
    return Teacher(model, spec, Provenance(os.path.abspath(path), kind, sha256_file(path), loaded))


def given_teacher(
    config: RunConfig,
    path: str | Path,
    out_dir: str | Path,
    data: DataBundle | None = None,
    context: DistContext | None = None,
) -> tuple[str, str]:
    """A given teacher as something every later stage (eval, deploy) reads: a kdforge checkpoint or a
    torch.export program as they are; a state dict or safetensors file of `config.teacher` is checked and
    written as the kdforge checkpoint `best` of the run folder `out_dir` (its source, format and SHA-256 in
    the metadata under `init`). Returns (the path to use, "kdforge" or "torch.export")."""
    kind = sniff(path)
    if kind == "kdforge":
        return str(path), kind
    if kind in ("torch.export", "aoti"):
        data = data or build_data(config.data)
        load_exported(path, data.input_shape, data.num_classes)  # fits the data set, or one line now
        return str(path), "torch.export"
    data = data or build_data(config.data)
    model, _, source = load_teacher(path, data, network=config.teacher)
    meta = network_meta(config.teacher, data, "teacher", "given", config, init=source)
    layout = RunLayout(out_dir)
    written = save_checkpoint(layout.checkpoints, layout.best.stem, model, meta)
    announce(f"{source.line('teacher', config.teacher.arch, 'weights')}; written as {written}", context)
    return str(written), "kdforge"
