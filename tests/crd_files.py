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
