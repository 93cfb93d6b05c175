"""Top-1 on a data split of anything that maps images to logits (a network, an ONNX Runtime session, a
compiled package or engine): accuracy per precision and runtime."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kdforge.export.onnx.parity import ort_session


def top1(run: Callable[[torch.Tensor], Any], batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy (%) of `run` (images -> logits, any array-like) over (images, labels) batches."""
    correct = seen = 0
    for images, labels in batches:
        logits = np.asarray(run(images))
        correct += int((logits.argmax(1) == labels.cpu().numpy()).sum())
        seen += labels.numel()
    return 100.0 * correct / max(seen, 1)


def onnx_top1(path: str | Path, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy (%) of the ONNX model at `path` in ONNX Runtime (CPU)."""
    session = ort_session(path)
    name = session.get_inputs()[0].name
    return top1(
        lambda images: session.run(None, {name: images.float().cpu().numpy().astype(np.float32)})[0], batches
    )
