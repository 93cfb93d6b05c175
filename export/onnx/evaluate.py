"""`evaluate_onnx`: an ONNX file kdforge exported, scored in ONNX Runtime (CPU) on a split of a recipe's
data set with the preprocessing stored in the file (input size, mean, std), so `kdforge eval` reports it
as it reports the checkpoint it came from: top-1, top-5 and mean cross-entropy."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from kdforge.compress.config import RunConfig
from kdforge.compress.data import DataBundle, build_data
from kdforge.compress.errors import UserError
from kdforge.compress.train.metrics import evaluate
from kdforge.export.artifact import Artifact, open_artifact
from kdforge.export.onnx.parity import ort_session


def evaluate_onnx(path: str | Path, config: RunConfig, split: str = "test") -> dict[str, float]:
    """Top-1/top-5 (%), mean CE and image count of the ONNX file at `path` on `split` of `config`'s data
    set, its images sized and normalised as the file's metadata says (one line if they cannot be)."""
    artifact = open_artifact(path)  # checked metadata: input shape, mean, std, one class name per output
    channels, height, width = artifact.input_shape
    sized = dataclasses.replace(config.data, image_size=height) if height == width else config.data
    data = build_data(sized)
    name = Path(path).name
    if data.input_shape != artifact.input_shape:
        shown = "x".join(map(str, data.input_shape))
        raise UserError(
            f"{name} takes {channels}x{height}x{width} images but {config.data.name} gives {shown}; "
            "evaluate it on the data set it was exported for (--recipe, --set data.*)"
        )
    if data.num_classes != len(artifact.classes):
        raise UserError(
            f"{name} predicts {len(artifact.classes)} classes but {config.data.name} has "
            f"{data.num_classes}; evaluate it on the data set it was exported for (--recipe)"
        )
    forward = onnx_forward(artifact, data)
    return evaluate(forward, data.loader(split, seed=config.seed), torch.device("cpu"))


def onnx_forward(artifact: Artifact, data: DataBundle) -> Callable[[torch.Tensor], torch.Tensor]:
    """Logits of a batch the data set's loader normalised, re-normalised with the file's mean and std and
    run in one ONNX Runtime session (in chunks when the file's batch size is fixed)."""
    session = ort_session(artifact.path)
    declared = session.get_inputs()[0]
    fixed = declared.shape[0] if isinstance(declared.shape[0], int) else None

    def stats(values: list[float] | tuple[float, ...]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64).view(1, -1, 1, 1)

    scale = stats(data.std) / stats(artifact.std)  # x_file = (x * std + mean - mean_file) / std_file
    shift = (stats(data.mean) - stats(artifact.mean)) / stats(artifact.std)

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {declared.name: batch})[0]

    def forward(images: torch.Tensor) -> torch.Tensor:
        batch = (images.double() * scale + shift).float().numpy()
        if fixed is None or len(batch) == fixed:
            return torch.from_numpy(run(batch))
        chunks = []
        for start in range(0, len(batch), fixed):
            part = batch[start : start + fixed]
            padded = np.concatenate([part, np.zeros((fixed - len(part), *part.shape[1:]), part.dtype)])
            chunks.append(run(padded)[: len(part)])
        return torch.from_numpy(np.concatenate(chunks))

    return forward
