"""The one place that reads a checkpoint's network form: plain, multi-branch (`model.rep`, a training
network) or merged (`model.reparameterized`, BN folded, deployable). `structure` builds the untrained
network of a form (what `load_model` fills); `save_merged` writes the merged form of a multi-branch one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from kdforge.compress.reparam.expand import expand
from kdforge.compress.reparam.merge import reparameterize
from torch import nn

Form = Literal["plain", "multi-branch", "merged"]


def network_form(meta: dict[str, Any]) -> Form:
    """Which network a checkpoint's metadata describes, so no caller reads the `model` flags itself."""
    model_meta = meta["model"]
    if model_meta.get("reparameterized"):
        return "merged"
    return "multi-branch" if "rep" in model_meta else "plain"


def structure(meta: dict[str, Any]) -> nn.Module:
    """The untrained network of a checkpoint's metadata, with the module paths and shapes of its tensors
    (a merged one in eval mode: its dropout must stay off, it has no BN left to train); a pruned network's
    recorded shape is applied before any other form is made from it."""
    from kdforge.compress.models import build

    model_meta = meta["model"]
    plain = build(model_meta["arch"], int(model_meta["num_classes"]), **model_meta.get("options", {}))
    if model_meta.get("shape") is not None:  # a pruned network: its recorded widths and dropped blocks
        from kdforge.compress.shape import apply_shape

        plain = apply_shape(plain, model_meta["shape"], "checkpoint metadata model.shape")
    form = network_form(meta)
    if form == "merged":
        return reparameterize(plain.eval())  # same module paths and shapes as the merged network
    if form == "multi-branch":
        return expand(plain, extra=tuple(model_meta["rep"].get("extra", ())))
    return plain


def save_merged(path: str | Path, name: str = "merged") -> Path:
    """Merge the multi-branch network of checkpoint `path` and write `<name>.safetensors` next to it."""
    from kdforge.compress.train.checkpoint import load_model, save_checkpoint

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
