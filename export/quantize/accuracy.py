"""Top-1 of an ONNX file on a data split, run in ONNX Runtime (CPU): accuracy per precision."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from export.onnx.parity import ort_session


def onnx_top1(path: str | Path, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy (%) of the ONNX model at `path` over (images, labels) batches."""
    session = ort_session(path)
    name = session.get_inputs()[0].name
    correct = seen = 0
    for images, labels in batches:
        logits = session.run(None, {name: images.float().cpu().numpy().astype(np.float32)})[0]
        correct += int((logits.argmax(1) == labels.cpu().numpy()).sum())
        seen += labels.numel()
    return 100.0 * correct / max(seen, 1)
