"""A recipe's network built from the model registry: from its starting weights (training), or holding a
weights file (evaluation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdforge.compress.config import NetworkConfig
from kdforge.compress.methods import NetworkSpec
from kdforge.compress.models import build
from kdforge.compress.shape import apply_shape
from kdforge.compress.train.checkpoint import read_checkpoint
from kdforge.compress.weights import Provenance, sniff, split_options, start_weights
from torch import nn


def network_spec(network: NetworkConfig) -> NetworkSpec:
    """How the network is built: its arch and builder options (without the starting-weight options)."""
    return NetworkSpec(network.arch, split_options(network.options)[0])


def weights_network(path: str | Path, network: NetworkConfig, num_classes: int, role: str) -> nn.Module:
    """`network` (the recipe's arch, options and shape) holding the weights file `path`, read as `--init`
    reads one (tensors only, nothing unpickled) but strictly: a head for another class count is refused."""
    model = _shaped(network, num_classes, role, path)
    start_weights(
        model,
        network.arch,
        num_classes,
        path=path,
        role=role,
        fine_tune=False,
        weights_format=network.weights_format,
    )
    return model


def network_shape(
    network: NetworkConfig, role: str = "network", path: str | Path | None = None
) -> dict[str, Any] | None:
    """The shape (compress/shape.py) the network is built with: its own, else the one recorded in the
    kdforge checkpoint it starts from (`path`, else its `init` or `checkpoint`) when that checkpoint is of
    the same arch, so `--init pruned.safetensors` needs neither the teacher nor a recipe change."""
    found = _shape_source(network, role, path)
    return found[0] if found else None


def _shape_source(
    network: NetworkConfig, role: str, path: str | Path | None = None
) -> tuple[dict[str, Any], str] | None:
    """(shape, where it comes from, for messages) or None: the architecture's own widths."""
    if network.shape is not None:
        return network.shape, f"{role}.shape"
    source = path or network.init or network.checkpoint
    if not source or not Path(source).exists() or sniff(source) != "kdforge":
        return None  # a missing file: a resumed run needs none (its weights are in `last`), a new one fails
    meta = read_checkpoint(source).meta  # its bounds checked, the shape's JSON form included
    shape = meta["model"].get("shape")
    if shape is None or meta["model"]["arch"] != network.arch:
        return None  # another arch: start_weights refuses it in one line
    return shape, f"checkpoint {str(source)!r}"


def _shaped(network: NetworkConfig, num_classes: int, role: str, path: str | Path | None = None) -> nn.Module:
    """The registry's network, rebuilt to its shape when it has one (`network_shape`)."""
    spec = network_spec(network)
    model = build(spec.arch, num_classes, **spec.options)
    found = _shape_source(network, role, path)
    return apply_shape(model, *found) if found else model


def starting_point(network: NetworkConfig, role: str = "network") -> tuple[str, Any] | None:
    """(recipe key, value) of the network's starting weights: `init` (or `checkpoint`, the student's old
    name of it), or a `weights`/`pretrained` option; None: fresh weights. At most one is set: config.check."""
    named = split_options(network.options)[1]
    given = [
        (f"{role}.{key}", value)
        for key, value in (("init", network.init), ("checkpoint", network.checkpoint))
        if value
    ] + [(f"{role}.options.{key}", value) for key, value in named.items()]
    return given[0] if given else None


def start_network(
    network: NetworkConfig, num_classes: int, role: str = "network", *, load: bool = True
) -> tuple[nn.Module, Provenance | None]:
    """Build from the registry (a pruned network: to its shape, its own or its starting checkpoint's) and
    start from the network's starting weights when it has some (any format of kdforge.compress.weights; a
    head for another class count is re-initialised: fine-tuning).
    `load=False` builds the bare network (a resumed run takes its weights from `last`)."""
    start = starting_point(network, role)
    model = _shaped(network, num_classes, role)
    if start is None or not load:
        return model, None
    key, value = start
    if key.startswith(f"{role}.options."):
        named = split_options(network.options)[1]
        return model, start_weights(model, network.arch, num_classes, named=named, role=role)
    return model, start_weights(
        model, network.arch, num_classes, path=value, role=role, weights_format=network.weights_format
    )
