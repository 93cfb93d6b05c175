"""What every checkpoint records about its network: enough to rebuild, evaluate and deploy it, and where
its starting weights and its teacher came from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdforge.compress.config import NetworkConfig, RunConfig, to_dict
from kdforge.compress.weights.provenance import Provenance, split_options

if TYPE_CHECKING:
    from kdforge.compress.data import DataBundle


def network_meta(
    network: NetworkConfig,
    data: DataBundle,
    role: str,
    method: str,
    config: RunConfig,
    init: Provenance | None = None,
    teacher: Provenance | None = None,
) -> dict[str, Any]:
    """Metadata stored with every checkpoint: enough to rebuild, evaluate and deploy the network (a pruned
    one's shape included), and where its starting weights (`init`) and its teacher came from (source,
    format, SHA-256)."""
    from kdforge.compress.networks import network_shape

    options = split_options(network.options)[0]  # `weights`/`pretrained` name starting weights, not the arch
    shape = network_shape(network, role)  # its own, or the one its starting checkpoint records
    return {
        "role": role,
        "method": method,
        "seed": config.seed,
        **({"init": init.as_meta()} if init else {}),
        **({"teacher": teacher.as_meta()} if teacher else {}),
        "model": {
            "arch": network.arch,
            "options": options,
            "num_classes": data.num_classes,
            **({"shape": shape} if shape is not None else {}),
        },
        "data": {
            "name": config.data.name,
            "classes": list(data.classes),
            "mean": list(data.mean),
            "std": list(data.std),
            "input_shape": list(data.input_shape),
        },
        "config": to_dict(config),
    }
