"""Which conv feeds which BatchNorm: found by tracing the model (torch.fx), never by editing forward()."""

from __future__ import annotations

import itertools

from torch import fx, nn


def conv_bn_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], str | None]:
    """(conv path, bn path) for every Conv2d whose only use is a BatchNorm2d, and a note if tracing failed.

    Traces with torch.fx; a model fx cannot trace falls back to module registration order (a Conv2d
    registered right before a BatchNorm2d of its out_channels), which the note then says.
    """
    modules = dict(model.named_modules())
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # any tracing failure: use the fallback
        return _by_registration_order(
            model
        ), f"torch.fx could not trace the model ({type(exc).__name__}); paired by registration order"
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Conv2d):
            continue
        users = list(node.users)
        if len(users) != 1:
            continue
        (user,) = users
        if user.op == "call_module" and isinstance(modules.get(user.target), nn.BatchNorm2d):
            pairs.append((str(node.target), str(user.target)))
    return pairs, None


def _by_registration_order(model: nn.Module) -> list[tuple[str, str]]:
    named = list(model.named_modules())
    pairs = []
    for (path, module), (next_path, following) in itertools.pairwise(named):
        if (
            isinstance(module, nn.Conv2d)
            and isinstance(following, nn.BatchNorm2d)
            and following.num_features == module.out_channels
        ):
            pairs.append((path, next_path))
    return pairs


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at dotted `path`."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)
