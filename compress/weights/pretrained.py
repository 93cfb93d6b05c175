"""torchvision and timm pretrained weights by name, from the local caches those libraries fill; kdforge
never downloads, a missing file is one line with the command that fetches it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from kdforge.compress.errors import UserError


def torchvision_weights(name: str, value: Any, role: str = "network") -> tuple[Path, str]:
    """(cached file, `ResNet18_Weights.IMAGENET1K_V1`) of `tv:<name>`'s weights `value` (DEFAULT or a
    weights name), read from torch.hub's cache ($TORCH_HOME/hub/checkpoints). Missing: one line."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise UserError(
            f"tv:{name} has no published torchvision weights; remove {role}.options.weights"
        ) from None
    text = "DEFAULT" if value is True else value
    if not isinstance(text, str):
        raise UserError(f"{role}.options.weights: expected DEFAULT or a weights name, got {value!r}")
    text = text.removeprefix(f"{enum.__name__}.")
    choices = ["DEFAULT", *enum.__members__]
    if text not in choices:
        raise UserError(
            f"{role}.options.weights: tv:{name} has no weights {text!r}; choose one of {', '.join(choices)}"
        )
    weights = enum.DEFAULT if text == "DEFAULT" else enum[text]
    label = f"{enum.__name__}.{weights.name}"
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if not path.is_file():
        raise UserError(
            f"torchvision weights {label} for tv:{name} are not in the local cache: {path} is missing "
            f"(kdforge never downloads); on a machine with internet run `curl -L --create-dirs -o {path} "
            f"{weights.url}` and copy the file here (TORCH_HOME moves the cache), or train from scratch: "
            f"--set {role}.options={{}}"
        )
    return path, label


def torchvision_keys(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DenseNet's published files name `norm.1` what the model calls `norm1` (torchvision renames too)."""
    pattern = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
    )
    renamed = {}
    for key, value in tensors.items():
        match = pattern.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache: HF_HUB_CACHE, else $HF_HOME/hub (HF_HOME: ~/.cache/huggingface)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    home = os.environ.get("HF_HOME") or os.path.join(cache, "huggingface")
    return Path(home).expanduser() / "hub"


def timm_weights(name: str, value: Any, role: str = "network") -> tuple[Path, str]:
    """(cached file, `timm/<repo>`) of `timm:<name>`'s pretrained weights from the Hugging Face hub
    cache (models--timm--<name>/snapshots/<revision>/model.safetensors). Missing: one line."""
    if value is not True:
        raise UserError(
            f"{role}.options.pretrained: expected true, got {value!r} (a weights tag goes in the name: "
            "timm:resnet18.a1_in1k)"
        )
    try:
        from timm.models import get_pretrained_cfg  # pyright: ignore[reportMissingImports]  (optional)
    except ImportError:
        raise UserError(f"model 'timm:{name}' needs timm, which is not installed: pip install timm") from None
    config = get_pretrained_cfg(name)
    repo = getattr(config, "hf_hub_id", None) if config is not None else None
    if not repo:
        raise UserError(
            f"timm:{name} names no Hugging Face hub weights; fetch its weights yourself and pass the file "
            f"({role}.init: PATH)"
        )
    repo = repo.split("@")[0]
    folder = hf_hub_cache() / ("models--" + repo.replace("/", "--"))
    files = [config.hf_hub_filename] if getattr(config, "hf_hub_filename", None) else []
    files += ["model.safetensors", "pytorch_model.bin"]
    snapshots = folder / "snapshots"
    ref = folder / "refs" / "main"
    order = [ref.read_text().strip()] if ref.is_file() else []
    if snapshots.is_dir():
        order += sorted(p.name for p in snapshots.iterdir() if p.name not in order)
    for revision in order:
        for file in files:
            if (snapshots / revision / file).is_file():
                return snapshots / revision / file, repo
    raise UserError(
        f"timm weights {repo} for timm:{name} are not in the Hugging Face cache: "
        f"{snapshots}/<revision>/model.safetensors is missing (kdforge never downloads); on a machine with "
        f"internet run `huggingface-cli download {repo} model.safetensors` and copy {folder} here "
        f"(HF_HOME / HF_HUB_CACHE move the cache), or train from scratch: --set {role}.options={{}}"
    )
