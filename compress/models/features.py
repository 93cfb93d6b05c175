"""Intermediate features by module path, taken with forward hooks so models keep a logits-only ``forward``."""

import difflib
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from compress.errors import UserError


class FeatureTap:
    """Context manager recording the outputs of named submodules on every forward of ``model``.

    ``tap.features`` maps path -> output (not detached) of the latest forward; a new dict is made per forward,
    so a dict taken earlier keeps its tensors. On exit the hooks are removed and the tap drops its features.
    """

    def __init__(self, model: nn.Module, paths: list[str] | tuple[str, ...]) -> None:
        if isinstance(paths, str):
            paths = [paths]
        self.model = model
        self.paths = list(dict.fromkeys(paths))
        self._modules = {path: resolve_module(model, path) for path in self.paths}
        self._handles: list[RemovableHandle] = []
        self.features: dict[str, Any] = {}

    def __enter__(self) -> "FeatureTap":
        if self._handles:
            raise RuntimeError("FeatureTap is already active; it cannot be entered twice at once")
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._start))
            for path, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._recorder(path)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.features = {}

    def _start(self, module: nn.Module, args: Any) -> None:
        self.features = {}

    def _recorder(self, path: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.features[path] = output

        return hook


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path`` ("" = the model); UserError naming the nearest paths if absent."""
    modules = dict(model.named_modules())
    if path in modules:
        return modules[path]
    near = difflib.get_close_matches(str(path), [p for p in modules if p], n=5, cutoff=0.5)
    valid = (
        f"nearest valid paths are {', '.join(near)}"
        if near
        else (f"top-level modules are {', '.join(name for name, _ in model.named_children())}")
    )
    raise UserError(f"no module {path!r} in {type(model).__name__}: {valid} (see model.named_modules())")


def extract_features(
    model: nn.Module, images: torch.Tensor, paths: list[str] | tuple[str, ...]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model(images)`` once and return (logits, {path: output}) with gradients still attached."""
    with FeatureTap(model, paths) as tap:
        logits = model(images)
        features = tap.features
    return logits, features
