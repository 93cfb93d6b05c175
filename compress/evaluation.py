"""Top-1/top-5 of a network, a network file or a torch.export program on a split of a recipe's data set."""

from __future__ import annotations

from pathlib import Path

from kdforge.compress.config import RunConfig
from kdforge.compress.data import DataBundle, build_data
from kdforge.compress.device import resolve_device
from kdforge.compress.networks import weights_network
from kdforge.compress.train.checkpoint import load_model
from kdforge.compress.weights import load_exported, sniff
from torch import nn


def evaluate_model(
    model: nn.Module, config: RunConfig, split: str = "test", data: DataBundle | None = None
) -> dict[str, float]:
    """Top-1/top-5 of a network on a split of the recipe's data set."""
    from kdforge.compress.train.metrics import evaluate

    data = data or build_data(config.data)
    device = resolve_device(config.device)
    model.to(device).eval()
    return evaluate(model, data.loader(split, seed=config.seed, device=device), device)


def evaluate_checkpoint(
    path: str | Path, config: RunConfig, split: str = "test", role: str = "student"
) -> dict[str, float]:
    """Top-1/top-5 of a network file on a split of the recipe's data set (its class count checked): a
    kdforge checkpoint (plain, multi-branch or merged), or a state dict or safetensors file of the
    recipe's `role` network ('student' or 'teacher')."""
    data = build_data(config.data)
    if sniff(path) == "kdforge":
        model, _ = load_model(path, num_classes=data.num_classes)
    else:
        model = weights_network(path, getattr(config, role), data.num_classes, role)
    return evaluate_model(model, config, split, data)


def evaluate_exported(
    path: str | Path, config: RunConfig, split: str = "test"
) -> tuple[dict[str, float], float]:
    """Top-1/top-5 of a torch.export teacher on a split of the recipe's data set, and its parameters (M)."""
    data = build_data(config.data)
    teacher, _ = load_exported(path, data.input_shape, data.num_classes)
    return evaluate_model(teacher, config, split, data), round(teacher.parameter_count() / 1e6, 3)
