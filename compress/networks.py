"""A recipe's network built from the model registry: from its starting weights (training), or holding a
weights file (evaluation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdforge.compress.config import NetworkConfig
from kdforge.compress.methods import NetworkSpec
from kdforge.compress.models import build
from kdforge.compress.weights import Provenance, split_options, start_weights
from torch import nn


def network_spec(network: NetworkConfig) -> NetworkSpec:
    """How the network is built: its arch and builder options (without the starting-weight options)."""
    return NetworkSpec(network.arch, split_options(network.options)[0])


def weights_network(path: str | Path, network: NetworkConfig, num_classes: int, role: str) -> nn.Module:
    """`network` (the recipe's arch and options) holding the weights file `path`, read as `--init` reads
    one (tensors only, nothing unpickled) but strictly: a head for another class count is refused."""
    spec = network_spec(network)
    model = build(spec.arch, num_classes, **spec.options)
    start_weights(model, network.arch, num_classes, path=path, role=role, fine_tune=False)
    return model


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
    """Build from the registry and start from the network's starting weights when it has some (any format
    of kdforge.compress.weights; a head for another class count is re-initialised: fine-tuning).
    `load=False` builds the bare network (a resumed run takes its weights from `last`)."""
    start = starting_point(network, role)
    spec = network_spec(network)
    model = build(spec.arch, num_classes, **spec.options)
    if start is None or not load:
        return model, None
    key, value = start
    if key.startswith(f"{role}.options."):
        named = split_options(network.options)[1]
        return model, start_weights(model, network.arch, num_classes, named=named, role=role)
    return model, start_weights(model, network.arch, num_classes, path=value, role=role)
