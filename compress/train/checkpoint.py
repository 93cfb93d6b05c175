"""Checkpoints: weights as safetensors with their JSON metadata embedded (one atomic file), a
human-readable JSON sidecar, and for `last` a training-state file (optimizer, scheduler, RNG).

Commit protocol: the training state is written first under a unique name, then the safetensors file,
which names that state file in its metadata, is atomically replaced. So a kill at any moment leaves a
consistent (weights, state) pair. Nothing is unpickled: state files load with `weights_only=True`.
"""

from __future__ import annotations

import json
import platform
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from kdforge.compress.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from kdforge.compress.errors import UserError, first_line
from kdforge.compress.train.finite import check_finite
from kdforge.compress.train.meta_limits import check_meta
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

FORMAT = "kdforge.checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "kdforge"


def versions() -> dict[str, str]:
    """Library versions recorded in every checkpoint, so a result can be traced to its software."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        kdforge_version = version("kdforge")
    except PackageNotFoundError:
        kdforge_version = "source"
    return {"kdforge": kdforge_version, "torch": torch.__version__, "python": platform.python_version()}


@dataclass
class Checkpoint:
    """A loaded checkpoint: the deliverable network's tensors and the metadata written with them."""

    path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return int(self.meta["model"]["num_classes"])


def save_checkpoint(
    directory: Path,
    name: str,
    model: nn.Module,
    meta: dict[str, Any],
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write `<name>.safetensors` (+ `<name>.json`), and `<name>.state-<id>.pt` with `train_state`."""
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **meta,
        "versions": versions(),
        "state_file": None,
    }
    if train_state is not None:
        state_name = f"{name}.state-{uuid.uuid4().hex[:12]}.pt"
        with atomic_path(directory / state_name) as tmp:
            torch.save(train_state, tmp)
        meta["state_file"] = state_name
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    weights = directory / f"{name}.safetensors"
    atomic_write_bytes(weights, safetensors_bytes(tensors, metadata={METADATA_KEY: json.dumps(meta)}))
    atomic_write_text(directory / f"{name}.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    for stale in directory.glob(f"{name}.state-*.pt"):
        if stale.name != meta["state_file"]:
            stale.unlink(missing_ok=True)
    return weights


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a kdforge checkpoint, refusing anything that is not one with a one-line UserError."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} not found; pass a .safetensors file written by kdforge")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(
            f"checkpoint {str(path)!r} is not a readable safetensors file ({first_line(exc)})"
        ) from None
    try:
        meta = json.loads(header[METADATA_KEY])
        check_meta(meta, f"checkpoint {str(path)!r}")  # bounds, before anything is built from it
        if meta.get("format") != FORMAT:
            raise ValueError(meta.get("format"))
        meta["model"]["arch"], int(meta["model"]["num_classes"])
    except (KeyError, ValueError, TypeError, RecursionError):  # JSONDecodeError is a ValueError
        raise UserError(
            f"checkpoint {str(path)!r} has no kdforge metadata; was it written by kdforge?"
        ) from None
    return Checkpoint(path=path, tensors=tensors, meta=meta)


def load_weights(model: nn.Module, checkpoint: Checkpoint) -> nn.Module:
    """Load tensors strictly (same keys, same shapes) or refuse with one line; never partially."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(checkpoint.tensors))
    unexpected = sorted(set(checkpoint.tensors) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise UserError(
            f"checkpoint {str(checkpoint.path)!r} does not fit {checkpoint.meta['model']['arch']}: {detail}"
        )
    for key, tensor in checkpoint.tensors.items():
        if tensor.shape != expected[key].shape:
            raise UserError(
                f"checkpoint {str(checkpoint.path)!r}: {key} has shape {tuple(tensor.shape)}, "
                f"the model expects {tuple(expected[key].shape)}"
            )
    check_finite(checkpoint.tensors, f"checkpoint {str(checkpoint.path)!r}")
    model.load_state_dict(checkpoint.tensors, strict=True)
    return model


def load_train_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """The optimizer/scheduler/RNG state paired with a `last` checkpoint (weights_only, no pickle code)."""
    name = checkpoint.meta.get("state_file")
    if not name:
        raise UserError(
            f"checkpoint {str(checkpoint.path)!r} carries no training state; resume needs a `last` one"
        )
    state_path = recorded_state_path(checkpoint.path, name)
    try:
        return torch.load(state_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"training state {str(state_path)!r} is missing; cannot resume from it") from None
    except Exception as exc:  # a refused pickle or a torn file: say so in one line
        reason = first_line(exc, 160)
        raise UserError(f"training state {str(state_path)!r} cannot be loaded safely ({reason})") from None


def recorded_state_path(checkpoint: Path, name: Any) -> Path:
    """The state file a checkpoint names, which must be a file in the checkpoint's own folder: a run's
    files are data, never a pointer elsewhere (`../../x.pth`, an absolute path or a link out)."""
    folder = checkpoint.parent
    plain = isinstance(name, str) and name not in (".", "..") and Path(name).name == name
    if plain and "\\" not in name and "\x00" not in name:
        path = folder / name
        if path.resolve().is_relative_to(folder.resolve()):
            return path
    shown = repr(name)[:80] if isinstance(name, str) else type(name).__name__
    raise UserError(
        f"checkpoint {str(checkpoint)[:200]!r} names its training state {shown}, which is not a file "
        "next to it; refusing to resume from it (start the run again without --resume, in a new --out)"
    )


def check_fits(checkpoint: Checkpoint, *, num_classes: int | None = None, arch: str | None = None) -> None:
    """Refuse a checkpoint of another architecture or class count before touching any weights."""
    where = f"checkpoint {str(checkpoint.path)!r}"
    if arch is not None and checkpoint.meta["model"]["arch"] != arch:
        raise UserError(
            f"{where} is a {checkpoint.meta['model']['arch']}, not {arch}; fix the arch or the path"
        )
    if num_classes is not None and checkpoint.num_classes != num_classes:
        raise UserError(
            f"{where} predicts {checkpoint.num_classes} classes but the data set has {num_classes}; "
            "use a checkpoint trained on this data set"
        )


def load_model(path: str | Path, *, num_classes: int | None = None) -> tuple[nn.Module, Checkpoint]:
    """The network of any kdforge checkpoint (plain, multi-branch or merged) with its metadata, loaded
    strictly; the class count is checked first when given. Every reader of a checkpoint's network uses
    this one loader, so no caller tells the forms apart itself."""
    from kdforge.compress.reparam.checkpoint import structure

    checkpoint = read_checkpoint(path)
    check_fits(checkpoint, num_classes=num_classes)
    model = structure(checkpoint.meta)
    if set(model.state_dict()) != set(checkpoint.tensors):  # written before the zoo followed CRD's models?
        from kdforge.compress.models.legacy_names import upgrade

        upgraded = upgrade(checkpoint.meta["model"], checkpoint.tensors, set(model.state_dict()))
        if upgraded is not None:
            meta = {**checkpoint.meta, "model": upgraded[0]}
            checkpoint = Checkpoint(checkpoint.path, upgraded[1], meta)
            model = structure(meta)
    return load_weights(model, checkpoint), checkpoint
