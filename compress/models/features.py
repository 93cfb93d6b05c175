"""Intermediate features by module path, taken with forward hooks so models keep a logits-only ``forward``."""

import difflib
from types import TracebackType
from typing import Any

import torch
from kdforge.compress.errors import UserError
from torch import nn
from torch.utils.hooks import RemovableHandle


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


def classifier_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """(path, module) of the model's classifier: its last ``nn.Linear`` in registration order."""
    linears = [(path, module) for path, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise UserError(f"{type(model).__name__} has no nn.Linear classifier head to train")
    return linears[-1]


def probe_channels(model: nn.Module, paths: list[str], image_size: int = 32) -> list[int]:
    """Channel count of each tapped output, from one no-grad forward of a dummy batch in eval mode."""
    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    model.eval()
    try:
        with torch.no_grad(), FeatureTap(model, paths) as tap:
            model(torch.zeros(2, 3, image_size, image_size, device=device))
            features = dict(tap.features)
    finally:
        model.train(was_training)
    channels = []
    for path in paths:
        output = features.get(path)
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise UserError(f"module {path!r} outputs {shape}, not an (N, C, H, W) feature map; pick a stage")
        channels.append(int(output.shape[1]))
    return channels
