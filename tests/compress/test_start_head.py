"""A network started from a file with the data set's class count keeps every tensor of that file, its trained
classifier head included, bit for bit: only a head for another class count is re-initialised (fine-tuning).
Guards `init` / `checkpoint` for the student and `--init` for the teacher in every file format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from kdforge.compress.config import NetworkConfig
from kdforge.compress.models import build
from kdforge.compress.networks import start_network
from kdforge.compress.train.checkpoint import save_checkpoint
from kdforge.compress.weights import head_paths
from safetensors.torch import save_file

CLASSES = 10


def _trained(arch: str) -> dict[str, torch.Tensor]:
    """A network's tensors, its head set to values no fresh initialisation draws (a trained head)."""
    torch.manual_seed(123)
    model = build(arch, CLASSES)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    (head,) = head_paths(model, CLASSES)
    for name in ("weight", "bias"):
        tensor = state[f"{head}.{name}"]
        state[f"{head}.{name}"] = torch.linspace(-3.0, 3.0, tensor.numel()).reshape(tensor.shape)
    return state


def _pth(path: Path, arch: str, state: dict[str, torch.Tensor]) -> Path:
    """A training script's state dict (torch.save)."""
    torch.save(state, path.with_suffix(".pth"))
    return path.with_suffix(".pth")


def _safetensors(path: Path, arch: str, state: dict[str, torch.Tensor]) -> Path:
    """A plain safetensors file without kdforge metadata."""
    save_file(state, str(path.with_suffix(".safetensors")))
    return path.with_suffix(".safetensors")


def _kdforge(path: Path, arch: str, state: dict[str, torch.Tensor]) -> Path:
    """A kdforge checkpoint (weights + metadata)."""
    model = build(arch, CLASSES)
    model.load_state_dict(state)
    meta = {"role": "teacher", "model": {"arch": arch, "options": {}, "num_classes": CLASSES}}
    return save_checkpoint(path, "best", model, meta)


WRITERS: dict[str, Callable[[Path, str, dict[str, torch.Tensor]], Path]] = {
    "pth": _pth,
    "safetensors": _safetensors,
    "kdforge": _kdforge,
}


STARTS = [("student", "init"), ("student", "checkpoint"), ("teacher", "init")]  # recipe keys; --init


@pytest.mark.parametrize("arch", ["resnet8", "cnn_2_16"])
@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize(("role", "key"), STARTS)
def test_a_file_with_the_same_class_count_starts_the_network_with_its_head_bit_for_bit(
    tmp_path: Path, arch: str, fmt: str, role: str, key: str
) -> None:
    saved = _trained(arch)
    path = WRITERS[fmt](tmp_path / "start", arch, saved)
    torch.manual_seed(0)  # the fresh head a dropped one would be replaced with differs from the saved one
    model, source = start_network(NetworkConfig(arch=arch, **{key: str(path)}), CLASSES, role)
    assert source is not None and source.reinitialised == () and source.classes is None
    got = model.state_dict()
    assert set(got) == set(saved)
    for name, tensor in saved.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), f"{name} was not kept"
