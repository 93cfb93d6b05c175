"""Refuse a malformed ONNX model before any rule reads it: tensors whose stored data does not match their
declared shape (a 1e12-element tensor stored in 0 bytes), negative dimensions, graphs too large or too deeply
nested to lint. Such a file is unreadable (exit 2), not a model with problems: no runtime loads it.

Values are only ever converted through `small_array`, which checks the stored size first and converts at most
`VALUE_CAP` elements, so a declared shape can never make the linter allocate more than the file holds.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
from kdforge.compress.errors import UserError
from onnx import TensorProto, helper, numpy_helper

MAX_NODES = 250_000  # nodes in all graphs together: 100k lint in a few seconds; beyond this, refuse
MAX_DEPTH = 64  # nested subgraphs; protobuf (upb) already refuses to parse more than about 32 levels
VALUE_CAP = 1 << 20  # elements the linter converts to numpy at most (axes, scales, zero points are tiny)

_PACKED_BITS = {
    TensorProto.INT4: 4,
    TensorProto.UINT4: 4,
    TensorProto.FLOAT4E2M1: 4,
    TensorProto.INT2: 2,
    TensorProto.UINT2: 2,
    TensorProto.FLOAT6E2M3: 6,
    TensorProto.FLOAT6E3M2: 6,
}


def short(name: str, most: int = 60) -> str:
    """`name` quoted, cut to `most` characters: names come from the file and can be any length."""
    return repr(name if len(name) <= most else name[:most] + "...")


def element_count(dims: object) -> int | None:
    """The number of elements `dims` declares (exact Python int), or None when a dimension is negative."""
    count = 1
    for dim in dims:  # type: ignore[attr-defined]
        if dim < 0:
            return None
        count *= int(dim)
    return count


def _expected(data_type: int, count: int, field: str) -> int:
    """How many entries of `field` (bytes of raw_data) `count` elements of `data_type` take."""
    bits = _PACKED_BITS.get(data_type)
    if field == "raw_data":
        if bits:
            return (count * bits + 7) // 8
        return count * helper.tensor_dtype_to_np_dtype(data_type).itemsize
    if bits in (4, 2):  # packed bytes, one per int32 entry
        return (count * bits + 7) // 8
    if data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
        return 2 * count
    return count


def tensor_defect(tensor: TensorProto) -> str | None:
    """Why `tensor` cannot be read as declared (one clause), or None when its data matches its shape."""
    name = short(tensor.name)
    known = tensor.data_type in TensorProto.DataType.values()
    if tensor.data_type == TensorProto.UNDEFINED or not known:
        return f"tensor {name} has no valid element type ({tensor.data_type})"
    count = element_count(tensor.dims)
    if count is None:
        return f"tensor {name} has a negative dimension"
    if tensor.HasField("segment"):
        return f"tensor {name} is segmented (not supported by ONNX runtimes)"
    if tensor.data_location == TensorProto.EXTERNAL:
        return None  # not loaded here (in-memory model): ONNX Runtime reads and checks it from the file
    kind = TensorProto.DataType.Name(tensor.data_type)
    if tensor.HasField("raw_data"):
        if tensor.data_type == TensorProto.STRING:
            return f"tensor {name} stores STRING data as raw bytes"
        field, stored = "raw_data", len(tensor.raw_data)
    else:
        field = helper.tensor_dtype_to_field(tensor.data_type)
        stored = len(getattr(tensor, field))
    expected = _expected(tensor.data_type, count, field)
    if stored != expected:
        unit = "bytes" if field == "raw_data" else "values"
        return f"tensor {name} declares {count} {kind} elements but stores {stored} {unit} (needs {expected})"
    return None


def small_array(tensor: TensorProto) -> np.ndarray | None:
    """`tensor`'s values, or None when it is malformed, external or larger than VALUE_CAP elements."""
    count = element_count(tensor.dims)
    if count is None or count > VALUE_CAP or tensor_defect(tensor) is not None:
        return None
    if tensor.data_location == TensorProto.EXTERNAL:
        return None
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError):  # a type numpy cannot hold: the rules treat it as unknown
        return None


def _graphs(model: onnx.ModelProto) -> Iterator[tuple[onnx.GraphProto, int]]:
    """The main graph and every subgraph, with its nesting depth (iterative: no recursion limit)."""
    pending = [(model.graph, 0)]
    while pending:
        graph, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise _Refusal(f"subgraphs nested more than {MAX_DEPTH} deep")
        yield graph, depth
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    pending.append((attribute.g, depth + 1))
                elif attribute.type == onnx.AttributeProto.GRAPHS:
                    pending.extend((sub, depth + 1) for sub in attribute.graphs)


class _Refusal(Exception):
    """Why the model is refused, before the file's name is put in front."""


def _tensors(nodes: Iterator[onnx.NodeProto] | list[onnx.NodeProto]) -> Iterator[TensorProto]:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                yield attribute.t
            elif attribute.type == onnx.AttributeProto.TENSORS:
                yield from attribute.tensors
            elif attribute.type == onnx.AttributeProto.SPARSE_TENSOR:
                yield from (attribute.sparse_tensor.values, attribute.sparse_tensor.indices)
            elif attribute.type == onnx.AttributeProto.SPARSE_TENSORS:
                for sparse in attribute.sparse_tensors:
                    yield from (sparse.values, sparse.indices)


def _check(model: onnx.ModelProto) -> None:
    nodes = sum(len(f.node) for f in model.functions)
    for graph, _ in _graphs(model):
        nodes += len(graph.node)
        if nodes > MAX_NODES:
            raise _Refusal(f"more than {MAX_NODES} nodes, the most kdforge check lints")
        tensors = [*graph.initializer, *_tensors(graph.node)]
        tensors += [t for sparse in graph.sparse_initializer for t in (sparse.values, sparse.indices)]
        for tensor in tensors:
            defect = tensor_defect(tensor)
            if defect:
                raise _Refusal(defect)
    for function in model.functions:
        for tensor in _tensors(function.node):
            defect = tensor_defect(tensor)
            if defect:
                raise _Refusal(defect)


def check_integrity(model: onnx.ModelProto, label: str) -> None:
    """Raise a one-line UserError naming `label` when `model` is malformed or too large to lint."""
    try:
        _check(model)
    except _Refusal as refusal:
        raise UserError(f"{label}: not a readable ONNX model ({refusal})") from None
