"""Checkpoint files written the way the CIFAR distillation reference code writes them (CRD's
train_teacher.py: `{epoch, model, accuracy, optimizer}`), optionally in the pre-zip torch.save format with
the storages marked as CUDA ones, as a file saved on a GPU before PyTorch 1.6 is."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def mark_storages_cuda(path: Path) -> None:
    """Make a pre-zip torch.save file say its storages live on cuda:0, as a file saved on a GPU does."""
    data = path.read_bytes()
    cpu = b"X\x03\x00\x00\x00cpu"  # BINUNICODE 'cpu': the storage location in the persistent ids
    assert cpu in data, "not a pre-zip torch.save file"
    path.write_bytes(data.replace(cpu, b"X\x06\x00\x00\x00cuda:0"))


def crd_checkpoint(model: nn.Module, path: Path, x: torch.Tensor, *, legacy: bool, prefix: str = "") -> Path:
    """Save `model` as CRD's training script does after one SGD step on `x` (so the optimizer state holds
    momentum buffers); `legacy`: the pre-zip format with CUDA-located storages. The model ends in eval."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    model(x).sum().backward()
    optimizer.step()
    model.eval()
    state = {f"{prefix}{k}": v for k, v in model.state_dict().items()}
    record = {
        "epoch": 240,
        "model": state,
        "accuracy": torch.tensor(71.5),
        "optimizer": optimizer.state_dict(),
    }
    torch.save(record, path, _use_new_zipfile_serialization=not legacy)
    if legacy:
        mark_storages_cuda(path)
    return path


class _Payload:
    """Unpickling this calls `touch` on a marker file: what a planted checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def legacy_payload_file(path: Path, marker: Path) -> Path:
    """A pre-zip torch.save stream (magic, protocol, system info) whose object runs code when unpickled."""
    import pickle

    with open(path, "wb") as handle:
        pickle.dump(0x1950A86A20F9469CFC6C, handle, protocol=2)  # torch's legacy magic number
        pickle.dump(1001, handle, protocol=2)
        sys_info = {
            "protocol_version": 1001,
            "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4},
        }
        pickle.dump(sys_info, handle, protocol=2)
        pickle.dump({"model": _Payload(marker)}, handle, protocol=2)
    return path


def legacy_oversized_file(path: Path, numel: int) -> Path:
    """A pre-zip torch.save file of 4 floats whose storage record claims `numel` elements."""
    torch.save({"w": torch.zeros(4)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    record = b"X\x03\x00\x00\x00cpuq\x06K\x04N"  # location 'cpu', then the element count 4 (BININT1)
    assert record in data, "torch.save's legacy layout changed"
    long8 = b"\x8a\x08" + numel.to_bytes(8, "little")  # LONG1 with 8 bytes
    path.write_bytes(data.replace(record, record[:-3] + long8 + b"N"))
    return path
