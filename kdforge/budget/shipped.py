"""The file a candidate would ship as on the target, made by deploy's own stages (ONNX export with its
parity check, fp16 / int8 Q/DQ, the readiness lint, AOTInductor for `aoti`): what the search times is
what `kdforge deploy` would write, never the float PyTorch module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdforge.compress.config import DeployConfig
from kdforge.compress.data import DataBundle
from kdforge.compress.errors import UserError, first_line
from kdforge.compress.train.checkpoint import versions
from kdforge.export.bench.target import Target

CALIBRATION_IMAGES = 256
PARITY_SAMPLES = 8


@dataclass
class Shipped:
    """A candidate's shipped file, or why it has none (its row in the report says so)."""

    path: Path | None
    reason: str | None = None


@dataclass
class ShippingData:
    """What every candidate's export needs from the data set, read once per search."""

    calibration: torch.Tensor
    samples: list[tuple[torch.Tensor, torch.Tensor]]
    describe: dict[str, Any]
    shape: tuple[int, ...]


def shipping_data(data: DataBundle, seed: int, name: str) -> ShippingData:
    """Calibration images (training split) and parity samples (validation split: the test split stays
    unseen until the end) for every candidate's export."""
    train = torch.cat([x for x, _ in data.loader("train", seed=seed)])
    samples = list(data.loader("val", seed=seed))
    describe = {
        "name": name,
        "classes": list(data.classes),
        "mean": list(data.mean),
        "std": list(data.std),
        "input_layout": "NCHW",
        "input_shape": list(data.input_shape),
        "kdforge": versions()["kdforge"],
    }
    return ShippingData(train[:CALIBRATION_IMAGES], samples, describe, (1, *data.input_shape))


def ship(
    model: nn.Module,
    name: str,
    arch: str,
    target: Target,
    data: ShippingData,
    folder: Path,
    log: Callable[[str], None],
) -> Shipped:
    """Export `model` as `target` would run it into `folder`; a parity failure or a file not ready for
    the target's runtime is a reason (the candidate is dropped, never silently)."""
    from kdforge.export.deploy import DeployInput, check_readiness, export_onnx

    source = DeployInput(
        model=model.eval(),
        arch=arch,
        shape=data.shape,
        test=data.samples,
        calibration=data.calibration,
        describe={**data.describe, "arch": arch, "source_checkpoint_sha256": ""},
        stem=name,
    )
    folder.mkdir(parents=True, exist_ok=True)
    precision = target.precision
    options = DeployConfig(precisions=[precision], calibration_images=len(data.calibration))
    try:
        files, _parity = export_onnx(source, options, folder, lambda message: None)
    except UserError as exc:
        return Shipped(None, f"dropped: {first_line(exc, 140)}")
    if target.backend == "aoti":
        return _aoti(source, folder, target)
    ready = check_readiness(files, lambda message: None)[precision]
    if not ready["ready"]:
        first = ready["problems"][0] if ready.get("problems") else "see kdforge check"
        return Shipped(None, f"dropped: not ready for {ready['target']} ({first_line(first, 120)})")
    log(f"{name}: {files[precision].name}")
    return Shipped(files[precision])


def _aoti(source: Any, folder: Path, target: Target) -> Shipped:
    """An AOTInductor package (fp32), compiled here for this machine."""
    from kdforge.export.aoti import compile_package

    try:
        package = compile_package(
            source.model,
            folder / f"{source.stem}-fp32.pt2",
            source.shape,
            device="cpu",
            max_batch=max(1024, target.batch),
            metadata=source.describe,
        )
    except UserError as exc:
        return Shipped(None, f"dropped: AOTInductor compile failed ({first_line(exc, 120)})")
    return Shipped(Path(package))
