"""A deployed artifact (kdforge checkpoint or ONNX file) as something that runs: its network or session,
its input shape, and the preprocessing stored in its metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.errors import UserError

NOT_YET = {
    ".pt2": "AOTInductor packages arrive with the AOTInductor backend",
    ".engine": "TensorRT engines arrive with the TensorRT layer",
    ".plan": "TensorRT engines arrive with the TensorRT layer",
}


@dataclass
class Artifact:
    """What kdforge needs to run an artifact outside its own data loaders."""

    path: Path
    kind: str  # 'checkpoint' or 'onnx'
    input_shape: tuple[int, int, int]  # C, H, W
    mean: list[float]
    std: list[float]
    classes: list[str]
    model: torch.nn.Module | None = None

    def run(self, images: torch.Tensor) -> np.ndarray:
        """Logits of already preprocessed (N, C, H, W) images."""
        if self.model is not None:
            with torch.no_grad():
                return self.model.eval()(images).numpy()
        from export.onnx import ort_session

        session = ort_session(self.path)
        return session.run(None, {session.get_inputs()[0].name: images.numpy().astype(np.float32)})[0]


def open_artifact(path: str | Path) -> Artifact:
    """Open a kdforge checkpoint (.safetensors, merged or not) or an ONNX file written by kdforge."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{str(path)!r} not found; pass a .safetensors checkpoint or an .onnx file")
    suffix = path.suffix.lower()
    if suffix in NOT_YET:
        raise UserError(
            f"{path.name}: {NOT_YET[suffix]}; use the .safetensors checkpoint or its .onnx for now"
        )
    if suffix == ".onnx":
        from export.onnx import onnx_metadata, ort_session

        meta = onnx_metadata(path)
        shape = ort_session(path).get_inputs()[0].shape
        dims = tuple(d for d in shape[1:])
        if len(dims) != 3 or not all(isinstance(d, int) for d in dims):
            raise UserError(
                f"{path.name}: expected an (N, C, H, W) image input with fixed C, H, W, got {shape}"
            )
        missing = [k for k in ("mean", "std", "classes") if k not in meta]
        if missing:
            raise UserError(
                f"{path.name} has no {', '.join(missing)} metadata; export it with `kdforge deploy`"
            )
        return Artifact(path, "onnx", dims, meta["mean"], meta["std"], [str(c) for c in meta["classes"]])
    if suffix == ".safetensors":
        from export.deploy import load_network

        model, meta = load_network(path)
        data: dict[str, Any] = meta["data"]
        return Artifact(
            path, "checkpoint", tuple(data["input_shape"]), data["mean"], data["std"], data["classes"], model
        )
    raise UserError(f"{path.name}: unknown artifact type {suffix!r}; pass a .safetensors or an .onnx file")


def preprocess(images: list[Path], artifact: Artifact) -> torch.Tensor:
    """Image files -> the network's input: RGB in [0, 1], bilinear resize, per-channel normalisation."""
    from PIL import Image, UnidentifiedImageError

    channels, height, width = artifact.input_shape
    batch = []
    for image_path in images:
        try:
            with Image.open(image_path) as image:
                array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError):
            raise UserError(f"{str(image_path)!r} is not a readable image file") from None
        tensor = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)[:, :channels]
        if tensor.shape[-2:] != (height, width):
            tensor = torch.nn.functional.interpolate(
                tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=False
            )
        batch.append(tensor)
    stacked = torch.cat(batch)
    mean = torch.tensor(artifact.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(artifact.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (stacked - mean) / std
