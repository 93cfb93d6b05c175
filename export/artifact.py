"""A deployed artifact (kdforge checkpoint, ONNX file, AOTInductor package or TensorRT engine) as something
that runs: its network, session or engine, its input shape, and the preprocessing stored in its metadata
(ONNX metadata_props, or the JSON sidecar of a compiled file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kdforge.compress.data.images import open_rgb
from kdforge.compress.errors import UserError
from kdforge.compress.text import printable
from kdforge.compress.train.meta_limits import preprocessing

SUFFIXES = ".safetensors, .onnx, .pt2 or .engine"


@dataclass
class Artifact:
    """What kdforge needs to run an artifact outside its own data loaders."""

    path: Path
    kind: str  # 'checkpoint', 'onnx', 'aoti' or 'engine'
    input_shape: tuple[int, int, int]  # C, H, W
    mean: list[float]
    std: list[float]
    classes: list[str]
    model: torch.nn.Module | None = None

    def run(self, images: torch.Tensor, trust_code: bool = False) -> np.ndarray:
        """Logits of already preprocessed (N, C, H, W) images. A .pt2 package or engine is native code:
        one kdforge did not build here runs only with `trust_code`."""
        if self.model is not None:
            with torch.no_grad():
                return self.model.eval()(images).numpy()
        if self.kind == "aoti":
            from kdforge.export.aoti import AotiPackage

            return AotiPackage(self.path, trust_code=trust_code)(images).float().cpu().numpy()
        if self.kind == "engine":
            from kdforge.export.tensorrt import TensorRTEngine

            return TensorRTEngine(self.path, trust_code=trust_code).infer(images).float().cpu().numpy()
        from kdforge.export.onnx import ort_session

        session = ort_session(self.path)
        return session.run(None, {session.get_inputs()[0].name: images.numpy().astype(np.float32)})[0]


def open_artifact(path: str | Path) -> Artifact:
    """Open a kdforge checkpoint (.safetensors, merged or not) or an ONNX file written by kdforge."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{str(path)!r} not found; pass a {SUFFIXES} file")
    suffix = path.suffix.lower()
    if suffix in (".pt2", ".engine", ".plan"):
        return _compiled(path, "aoti" if suffix == ".pt2" else "engine")
    if suffix == ".onnx":
        from kdforge.export.onnx import onnx_metadata, ort_session

        meta = onnx_metadata(path)
        session = ort_session(path)
        shape = session.get_inputs()[0].shape
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
        outputs = session.get_outputs()[0].shape
        heads = outputs[-1] if outputs and isinstance(outputs[-1], int) else None
        return described(path, "onnx", {**meta, "input_shape": list(dims)}, num_classes=heads)
    if suffix == ".safetensors":
        from kdforge.compress.train.checkpoint import load_model

        model, checkpoint = load_model(path)
        data: dict[str, Any] = checkpoint.meta.get("data") or {}
        return described(path, "checkpoint", data, model.eval(), checkpoint.num_classes)
    raise UserError(f"{path.name}: unknown artifact type {suffix!r}; pass a {SUFFIXES} file")


def _compiled(path: Path, kind: str) -> Artifact:
    """An AOTInductor package or a TensorRT engine, described by its (checked) sidecar."""
    if kind == "aoti":
        from kdforge.export.aoti import package_metadata as read
    else:
        from kdforge.export.tensorrt import engine_metadata as read
    meta = read(path)
    missing = [k for k in ("input_shape", "mean", "std", "classes") if k not in meta]
    if missing:
        listed = ", ".join(missing)
        raise UserError(f"{path.name}: no {listed} in its sidecar; rebuild it with kdforge deploy")
    return described(path, kind, meta)


def described(
    path: Path,
    kind: str,
    meta: dict[str, Any],
    model: torch.nn.Module | None = None,
    num_classes: int | None = None,
) -> Artifact:
    """An Artifact from checked metadata (meta_limits bounds; one class name per output when that count
    is known), its class names made printable (a name from a file must not drive the terminal)."""
    checked = preprocessing(meta, path.name, num_classes)
    classes = [printable(c) for c in checked.classes]
    return Artifact(path, kind, checked.input_shape, checked.mean, checked.std, classes, model)


def preprocess(images: list[Path], artifact: Artifact) -> torch.Tensor:
    """Image files -> the network's input: RGB in [0, 1], bilinear resize, per-channel normalisation."""
    channels, height, width = artifact.input_shape
    if channels > 3:
        raise UserError(f"{artifact.path.name} takes {channels}-channel input; predict reads RGB images")
    batch = []
    for image_path in images:  # decoded within open_rgb's pixel bounds (a header bomb is one line)
        array = np.asarray(open_rgb(image_path, at_least=(width, height)), dtype=np.float32) / 255.0
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
