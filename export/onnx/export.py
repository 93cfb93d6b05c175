"""`to_onnx`: a reparameterized, eval-mode network -> one checked, simplified, self-describing ONNX file."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from kdforge.compress.errors import UserError, first_line
from kdforge.compress.reparam import reparameterize
from torch import nn

SUPPORTED_OPSETS = range(17, 21)  # TensorRT 10.x parses up to opset 20


def _export(
    model: nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool, opset: int, exporter: str
) -> None:
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=shapes,
                external_data=False,
            )
            program.save(str(path))
        else:
            axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes=axes,
            )


def save_onnx(graph: onnx.ModelProto, path: str | Path) -> Path:
    """Write `graph` to `path` as one file, atomically: a reader or a killed run sees the old file or the
    new one, never a torn one."""
    from kdforge.compress.atomic import atomic_path

    with atomic_path(path) as tmp:
        onnx.save(graph, str(tmp))
    return Path(path)


def _simplify(graph: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim's simplified graph; without onnxslim (GPU images often lack it) the graph as exported, with
    a one-line warning: simplification folds constants and removes no-ops, the file is valid either way."""
    try:
        import onnxslim
    except ImportError:
        warnings.warn(
            "onnxslim is not installed: ONNX file left unsimplified (pip install onnxslim)", stacklevel=3
        )
        return graph
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        return onnxslim.slim(graph)


def to_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, int, int, int] = (1, 3, 32, 32),
    *,
    dynamic_batch: bool = True,
    opset: int = 18,
    exporter: str = "dynamo",
    simplify: bool = True,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Export `model` (reparameterized first: branches merged, BN folded) to one ONNX file at `path`.

    The batch dimension is symbolic when `dynamic_batch`; the file is checked with `onnx.checker`
    (full check) and strict shape inference, simplified with onnxslim, and carries `metadata` as
    metadata_props (values JSON-encoded). `exporter='torchscript'` is the fallback exporter.
    """
    import json

    if opset not in SUPPORTED_OPSETS:
        raise UserError(
            f"opset {opset} is not supported; choose one of 17-20 (TensorRT 10.x parses up to 20)"
        )
    if exporter not in ("dynamo", "torchscript"):
        raise UserError(f"unknown ONNX exporter {exporter!r}; choose 'dynamo' or 'torchscript'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a train-mode model is merged in eval form; that is intended here
        deployable = reparameterize(model).cpu().float()
    example = torch.randn(*input_shape)
    raw = path.with_name(f".{path.stem}.{os.getpid()}.export.onnx")  # the exporter writes here first
    try:
        _export(deployable, example, raw, dynamic_batch, opset, exporter)
    except Exception as exc:  # the exporters raise many types; name the fallback in one line
        hint = " (try exporter='torchscript')" if exporter == "dynamo" else ""
        raise UserError(f"ONNX export of {type(model).__name__} failed: {first_line(exc)}{hint}") from exc
    try:
        graph = onnx.load(str(raw))
    finally:
        raw.unlink(missing_ok=True)
        for stale in path.parent.glob(raw.name + ".data"):
            stale.unlink()
    if simplify:
        graph = _simplify(graph)
    for key, value in (metadata or {}).items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = str(key), json.dumps(value)
    onnx.checker.check_model(graph, full_check=True)
    onnx.shape_inference.infer_shapes(graph, check_type=True, strict_mode=True)
    save_onnx(graph, path)
    return path


def onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata_props of an ONNX file, JSON-decoded where possible."""
    import json

    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, OSError, ...
        raise UserError(f"{str(path)!r} is not a readable ONNX file ({type(exc).__name__})") from None
    found: dict[str, Any] = {}
    for entry in graph.metadata_props:
        try:
            found[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            found[entry.key] = entry.value
    return found
