"""A read-only view of an ONNX graph for the linter: tensor types and shapes (after shape inference),
constants, producers and consumers, and stable node names."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

# ONNX element types under the names onnx-tensorrt's table uses.
_TABLE_NAMES = {
    "FLOAT": "FP32",
    "FLOAT16": "FP16",
    "BFLOAT16": "BF16",
    "FLOAT8E4M3FN": "FP8",
    "FLOAT8E4M3FNUZ": "FP8",
    "FLOAT8E5M2": "FP8",
    "FLOAT8E5M2FNUZ": "FP8",
    "FLOAT4E2M1": "FP4",
}


def type_name(elem_type: int) -> str:
    """The table's name of an ONNX element type: FP32, FP16, BF16, FP8, FP4, INT8, UINT8, INT32, ..."""
    name = onnx.TensorProto.DataType.Name(elem_type)
    return _TABLE_NAMES.get(name, name)


def default_opset(model: onnx.ModelProto) -> int | None:
    """The model's ai.onnx opset, or None when it imports none."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of `graph` and of its subgraphs (If / Loop / Scan bodies), depth first."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from walk(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from walk(sub)


class GraphView:
    """Types, shapes, constants, producers and consumers of a model's main graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        inferred = model
        with contextlib.suppress(Exception):  # custom ops or broken graphs: keep what the file declares
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        graph = inferred.graph
        self.graph = model.graph
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.types: dict[str, int] = {}
        self.shapes: dict[str, list[int | str | None]] = {}
        for value in [*graph.input, *graph.value_info, *graph.output]:
            tensor = value.type.tensor_type
            if value.type.HasField("tensor_type") and tensor.elem_type:
                self.types[value.name] = tensor.elem_type
                if tensor.HasField("shape"):
                    self.shapes[value.name] = [
                        d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                        for d in tensor.shape.dim
                    ]
        for tensor in model.graph.initializer:
            self.types[tensor.name] = tensor.data_type
            self.shapes[tensor.name] = list(tensor.dims)
        # Unnamed nodes go by their index, keyed by their outputs (protobuf wrappers have no stable id).
        self.unnamed = {
            tuple(node.output): f"#{index}" for index, node in enumerate(model.graph.node) if not node.name
        }
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in model.graph.node:
            for output in node.output:
                if output:
                    self.producer[output] = node
            for index, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, index))
        self.graph_inputs = {v.name for v in model.graph.input} - set(self.initializers)
        self.graph_outputs = {v.name for v in model.graph.output}

    def name(self, node: onnx.NodeProto) -> str:
        """The node's name, or '#<index>' for an unnamed node of the main graph ('#?' in a subgraph)."""
        return node.name or self.unnamed.get(tuple(node.output), "#?")

    def type_of(self, tensor: str) -> str | None:
        """The table's type name of `tensor`, or None when neither the file nor inference says."""
        elem = self.types.get(tensor)
        return type_name(elem) if elem else None

    def constant(self, tensor: str) -> np.ndarray | None:
        """The value of `tensor` when it is an initializer, a Constant's output or an Identity of one."""
        if tensor in self.initializers:
            return numpy_helper.to_array(self.initializers[tensor])
        node = self.producer.get(tensor)
        if node is None:
            return None
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attribute in node.attribute:
                if attribute.name == "value":
                    return numpy_helper.to_array(attribute.t)
            return None
        if node.op_type == "Identity" and node.input:
            return self.constant(node.input[0])
        return None

    def is_constant(self, tensor: str) -> bool:
        return self.constant(tensor) is not None

    def from_weight(self, tensor: str) -> bool:
        """True when `tensor` is a constant or is computed from constants alone (a weight, possibly
        quantized / transposed / reshaped on the way)."""
        seen: set[str] = set()
        pending = [tensor]
        while pending:
            name = pending.pop()
            if name in seen or not name:
                continue
            seen.add(name)
            if self.is_constant(name):
                continue
            node = self.producer.get(name)
            if node is None:  # a graph input: an activation
                return False
            pending.extend(node.input)
        return True

    def rank(self, tensor: str) -> int | None:
        shape = self.shapes.get(tensor)
        return len(shape) if shape is not None else None


def attribute(node: onnx.NodeProto, name: str, default: object = None) -> object:
    """The value of attribute `name` of `node` (decoded), or `default`."""
    for attr in node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default
