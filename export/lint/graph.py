"""A read-only view of an ONNX graph for the linter: tensor types and shapes (after shape inference),
constants, producers and consumers, and stable node names."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import numpy as np
import onnx
from kdforge.export.lint.integrity import VALUE_CAP, small_array

# ONNX element types under the names onnx-tensorrt's table uses. The table's FP8 is E4M3FN only: the parser's
# convertDtype (importerUtils.cpp, release/10.1-GA) maps FLOAT8E4M3FN to kFP8 and no other FP8 variant, so
# E5M2 and the FNUZ types keep their ONNX names and match no "Supported Types" entry.
_TABLE_NAMES = {
    "FLOAT": "FP32",
    "FLOAT16": "FP16",
    "BFLOAT16": "BF16",
    "FLOAT8E4M3FN": "FP8",
    "FLOAT4E2M1": "FP4",
}


@functools.cache
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
    """Every node of `graph` and of its subgraphs (If / Loop / Scan bodies), depth first; iterative, so
    nesting depth is bounded by `integrity.MAX_DEPTH`, not by Python's recursion limit."""
    pending: list[Iterator[onnx.NodeProto]] = [iter(graph.node)]
    while pending:
        node = next(pending[-1], None)
        if node is None:
            pending.pop()
            continue
        yield node
        subgraphs: list[onnx.GraphProto] = []
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                subgraphs.append(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                subgraphs.extend(attribute.graphs)
        pending.extend(iter(sub.node) for sub in reversed(subgraphs))


_CONSTANT_LISTS = {
    "value_float": np.float32,
    "value_floats": np.float32,
    "value_int": np.int64,
    "value_ints": np.int64,
}
_ONNX = ("", "ai.onnx")


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

    def _source(self, tensor: str) -> str:
        """`tensor`, or the tensor it is an Identity (chain) of; a loop of Identities ends where it closes."""
        seen: set[str] = set()
        while tensor not in self.initializers and tensor not in seen:
            seen.add(tensor)
            node = self.producer.get(tensor)
            if node is None or node.op_type != "Identity" or node.domain not in _ONNX or not node.input:
                break
            tensor = node.input[0]
        return tensor

    def constant(self, tensor: str) -> np.ndarray | None:
        """The value of `tensor` when it is an initializer, a Constant's output or an Identity of one, and
        small (integrity.VALUE_CAP); never converts a tensor whose data does not match its shape."""
        tensor = self._source(tensor)
        if tensor in self.initializers:
            return small_array(self.initializers[tensor])
        node = self.producer.get(tensor)
        if node is None or node.op_type != "Constant" or node.domain not in _ONNX:
            return None
        for attr in node.attribute:
            if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                return small_array(attr.t)
            if attr.name in _CONSTANT_LISTS and len(attr.floats) + len(attr.ints) <= VALUE_CAP:
                return np.asarray(onnx.helper.get_attribute_value(attr), dtype=_CONSTANT_LISTS[attr.name])
        return None

    def is_constant(self, tensor: str) -> bool:
        """True when `tensor` is an initializer, a Constant's output or an Identity of one (values unread)."""
        tensor = self._source(tensor)
        if tensor in self.initializers:
            return True
        node = self.producer.get(tensor)
        return node is not None and node.op_type == "Constant" and node.domain in _ONNX

    @functools.cached_property
    def _activations(self) -> set[str]:
        """Tensors computed from a graph input (or a name nothing produces), found in one forward pass."""
        found = {t for t in self.consumers if t not in self.producer and not self.is_constant(t)}
        pending = list(found)
        while pending:
            for node, _ in self.consumers.get(pending.pop(), []):
                for output in node.output:
                    if output and output not in found and not self.is_constant(output):
                        found.add(output)
                        pending.append(output)
        return found

    def from_weight(self, tensor: str) -> bool:
        """True when `tensor` is a constant or is computed from constants alone (a weight, possibly
        quantized / transposed / reshaped on the way)."""
        if not tensor or self.is_constant(tensor):
            return True
        return tensor in self.producer and tensor not in self._activations

    def size(self, tensor: str) -> int | None:
        """How many elements `tensor` has, when its shape is known."""
        shape = self.shapes.get(tensor)
        if shape is None or not all(isinstance(d, int) for d in shape):
            return None
        return int(np.prod(shape, dtype=object)) if shape else 1

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
