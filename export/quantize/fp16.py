"""fp16 ONNX: every float tensor in half precision, the form a strongly typed TensorRT network consumes."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import onnx
from kdforge.export.onnx.export import save_onnx


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder `graph.node` so every node comes after the producers of its inputs (in place)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ValueError("the ONNX graph has a cycle or an input nobody produces")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def to_fp16(source: str | Path, target: str | Path, *, keep_io_types: bool = True) -> Path:
    """Convert an fp32 ONNX file to fp16; `keep_io_types` keeps fp32 inputs/outputs (casts inside)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    graph = onnx.load(str(source))
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(graph, keep_io_types=keep_io_types)
    topological_sort(half.graph)  # the converter appends its input casts at the end
    del half.metadata_props[:]
    half.metadata_props.extend(graph.metadata_props)
    onnx.checker.check_model(half, full_check=True)
    save_onnx(half, target)
    return Path(target)
