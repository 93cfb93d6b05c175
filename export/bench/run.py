"""`bench_artifact`: time a checkpoint or an ONNX file on every requested backend and batch size."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from compress.errors import UserError
from export.bench.backends import Backend, OnnxRuntime, TorchEager
from export.bench.timing import TimingPolicy, measure_interleaved

KNOWN_BACKENDS = ("torch", "onnxruntime")


def check_backends(names: tuple[str, ...]) -> None:
    """One line naming an unknown backend name and the known ones."""
    for name in names:
        if name not in KNOWN_BACKENDS:
            later = (
                " (TensorRT engines arrive with the TensorRT layer)" if name in ("tensorrt", "trt") else ""
            )
            raise UserError(f"unknown backend {name!r}; choose from {', '.join(KNOWN_BACKENDS)}{later}")


def bench_artifact(
    path: str | Path,
    backends: tuple[str, ...] | None = None,
    batches: tuple[int, ...] = (1, 64),
    policy: TimingPolicy | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> list[dict[str, Any]]:
    """Latency rows (one per backend and batch) for the artifact at `path`; variants share rounds.
    `backends` None: every backend that can run it (torch needs a checkpoint)."""
    from export.artifact import open_artifact

    if backends is None:
        backends = KNOWN_BACKENDS if Path(path).suffix.lower() == ".safetensors" else ("onnxruntime",)
    check_backends(backends)
    artifact = open_artifact(path)
    if input_shape is not None and tuple(input_shape) != tuple(artifact.input_shape):
        raise UserError(
            f"{artifact.path.name} takes input (C, H, W) = {tuple(artifact.input_shape)}, "
            f"not {tuple(input_shape)}; drop --input-shape or pass the matching one"
        )
    shape = (1, *artifact.input_shape)
    policy = policy or TimingPolicy()
    with tempfile.TemporaryDirectory() as work:
        runners: dict[str, Backend] = {}
        if "torch" in backends:
            if artifact.model is None:
                raise UserError(
                    f"backend torch needs a kdforge checkpoint; {artifact.path.name} is an ONNX file"
                )
            runners["torch"] = TorchEager(artifact.model, shape)
        if "onnxruntime" in backends:
            onnx_path = artifact.path
            if artifact.model is not None:
                from export.onnx import to_onnx

                onnx_path = to_onnx(artifact.model, Path(work) / "model.onnx", shape)
            runners["onnxruntime"] = OnnxRuntime(onnx_path)
        rows = []
        for batch in batches:
            if batch < 1:
                raise UserError(f"batch sizes must be >= 1, got {batch}")
            calls = {name: runner.prepare(batch) for name, runner in runners.items()}
            timed = measure_interleaved(calls, batch, policy)
            rows += [{**runners[name].describe(), **stats.as_dict()} for name, stats in timed.items()]
    return rows
