"""Merged (deployable) checkpoints: the plain architecture, BN folded, next to the training checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdforge.compress.models import build
from kdforge.compress.train.checkpoint import (
    Checkpoint,
    load_model,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)
from kdforge.export.reparam.merge import reparameterize
from torch import nn


def save_merged(path: str | Path, name: str = "merged") -> Path:
    """Merge the network of checkpoint `path` and write `<name>.safetensors` in the same folder."""
    model, checkpoint = load_model(path)
    merged = reparameterize(model.eval())
    model_meta = {key: value for key, value in checkpoint.meta["model"].items() if key != "rep"}
    meta: dict[str, Any] = {
        key: value
        for key, value in checkpoint.meta.items()
        if key not in ("format", "format_version", "versions", "state_file")
    }
    meta["model"] = {**model_meta, "reparameterized": True}
    meta["merged_from"] = Path(path).name
    return save_checkpoint(Path(path).parent, name, merged, meta)


def load_merged(path: str | Path) -> tuple[nn.Module, Checkpoint]:
    """A merged checkpoint as an eval-mode network (the plain architecture, BN folded)."""
    checkpoint = read_checkpoint(path)
    model_meta = checkpoint.meta["model"]
    plain = build(model_meta["arch"], checkpoint.num_classes, **model_meta.get("options", {}))
    structure = reparameterize(plain.eval())  # same module paths and shapes as the merged network
    return load_weights(structure, checkpoint).eval(), checkpoint
