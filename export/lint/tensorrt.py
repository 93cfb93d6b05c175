"""TensorRT readiness of an ONNX model, checked without TensorRT: the parser's operator table (opset range,
operators, input types, documented restrictions), its explicit-quantization rules, and dynamic shapes.

Each check cites the rule it applies (`rules.RULES`), and each rule its document (`sources.SOURCES`).
"""

from __future__ import annotations

import numpy as np
import onnx
from kdforge.export.lint.graph import GraphView, attribute, default_opset, type_name, walk
from kdforge.export.lint.problem import Problem, make_problem
from kdforge.export.lint.rules import (
    ONNX_DOMAINS,
    TRT10_OPERATORS,
    TRT10_SINCE,
    TRT11_OPERATORS,
    TRT11_SINCE,
    TRT_CONSTANT_INPUTS,
    TRT_LATE_OPSET_NOTE,
    TRT_OPSETS,
    TRT_QUANTIZED_TYPES,
    TRT_RESIZE,
    WEIGHTED_OPS,
)

_QDQ = ("QuantizeLinear", "DequantizeLinear")
# Operators whose data input the table types; Q/DQ inputs have their own rules below.
_UNTYPED_INPUT = {*_QDQ, "Constant", "ConstantOfShape", "RandomNormal", "RandomUniform", "EyeLike", "Range"}


def _table_source(trt_version: int) -> str | None:
    return "trt11-notes" if trt_version == 11 else None


def check_tensorrt(model: onnx.ModelProto, trt_version: int = 10) -> list[Problem]:
    """Every rule violation of `model` for TensorRT `trt_version` (10 or 11), in graph order."""
    view = GraphView(model)
    problems = _opset(model, trt_version)
    problems += _operators(view, trt_version)
    problems += _types(view)
    problems += _quantization(view)
    problems += _shapes(view)
    return problems


def _opset(model: onnx.ModelProto, trt_version: int) -> list[Problem]:
    lowest, every, newest = TRT_OPSETS[trt_version]
    opset = default_opset(model)
    if opset is None:
        return [make_problem("trt-opset", "the model imports no ai.onnx opset")]
    if opset < lowest or opset > newest:
        return [
            make_problem(
                "trt-opset",
                f"opset {opset}: TensorRT {trt_version} parses opsets {lowest}-{newest}",
                source=_table_source(trt_version),
            )
        ]
    if opset > every:
        return [
            make_problem(
                "trt-opset-late",
                f"opset {opset}: {TRT_LATE_OPSET_NOTE[trt_version]}; export at opset <= {every} to parse on "
                f"every TensorRT {trt_version}.x",
                source="trt11-notes" if trt_version == 11 else None,
            )
        ]
    return []


def _operators(view: GraphView, trt_version: int) -> list[Problem]:
    table = TRT11_OPERATORS if trt_version == 11 else TRT10_OPERATORS
    since = TRT11_SINCE if trt_version == 11 else TRT10_SINCE
    source = _table_source(trt_version)
    problems: list[Problem] = []
    for node in walk(view.graph):
        name, op = view.name(node), node.op_type
        if node.domain not in ONNX_DOMAINS:
            problems.append(
                make_problem(
                    "trt-custom-domain",
                    f"domain '{node.domain}' is not ONNX's: TensorRT parses it only if a plugin named "
                    f"'{op}' is registered",
                    name,
                    op,
                )
            )
            continue
        if op not in table:
            problems.append(
                make_problem(
                    "trt-unsupported-op",
                    f"TensorRT {trt_version}'s ONNX parser has no importer for {op}",
                    name,
                    op,
                    source=source,
                )
            )
            continue
        if op in since:
            problems.append(
                make_problem(
                    "trt-op-since",
                    f"{op} is imported from TensorRT {since[op]} on, not by earlier {trt_version}.x releases",
                    name,
                    op,
                    source=source,
                )
            )
        problems += _restrictions(view, node, name, source)
    return problems


def _restrictions(view: GraphView, node: onnx.NodeProto, name: str, source: str | None) -> list[Problem]:
    """The table's restrictions column for the operators kdforge's networks (and most CNNs) use."""
    op = node.op_type
    found: list[str] = []
    if op in TRT_CONSTANT_INPUTS:
        index, what = TRT_CONSTANT_INPUTS[op]
        if len(node.input) > index and node.input[index] and not view.from_weight(node.input[index]):
            return [
                make_problem(
                    "trt-constant-input",
                    f"input '{what}' ({node.input[index]}) must be an initializer / build-time constant",
                    name,
                    op,
                    source=source,
                )
            ]
    if op in ("AveragePool", "MaxPool", "LpPool"):
        kernel = attribute(node, "kernel_shape", [])
        if len(kernel) not in (2, 3):
            found.append(f"{len(kernel)}-D pooling (TensorRT pools in 2-D or 3-D only)")
        dilations = attribute(node, "dilations", [])
        if any(d != 1 for d in dilations):
            found.append(f"dilations {list(dilations)} (must be empty or all ones)")
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            used = node.output[1] in view.consumers or node.output[1] in view.graph_outputs
            if used:
                found.append("the Indices output is used (unsupported)")
    elif op == "Resize":
        defaults = {
            "coordinate_transformation_mode": "half_pixel",
            "mode": "nearest",
            "nearest_mode": "round_prefer_floor",
            "keep_aspect_ratio_policy": "stretch",
        }
        for key, allowed in TRT_RESIZE.items():
            value = attribute(node, key, defaults[key])
            if value not in allowed:
                found.append(f"{key}={value!r} (supported: {', '.join(sorted(allowed))})")
        if attribute(node, "antialias", 0):
            found.append("antialias=1 (antialiasing is not supported)")
    elif op == "TopK" and attribute(node, "sorted", 1) != 1:
        found.append("sorted=0 (must be 1)")
    elif op == "LayerNormalization" and any(o and o in view.consumers for o in node.output[1:]):
        found.append("Mean / InvStdDev outputs are used (only the first output Y is supported)")
    elif op == "ScatterND" and attribute(node, "reduction", "none") != "none":
        found.append(f"reduction={attribute(node, 'reduction')!r} (only 'none')")
    return [make_problem("trt-op-restriction", text, name, op, source=source) for text in found]


def _types(view: GraphView) -> list[Problem]:
    """Input types against the table; UINT8 inside the network; DOUBLE tensors cast down."""
    problems: list[Problem] = []
    reported: set[str] = set()
    qdq_tensors = _qdq_tensors(view)
    for node in view.graph.node:
        name, op = view.name(node), node.op_type
        if node.domain not in ONNX_DOMAINS or (op not in TRT10_OPERATORS and op not in TRT11_OPERATORS):
            continue
        tensors = [t for t in [*node.input, *node.output] if t and t not in reported]
        for tensor in tensors:
            kind = view.type_of(tensor)
            if kind == "DOUBLE":
                reported.add(tensor)
                problems.append(
                    make_problem("trt-double", f"tensor {tensor} is DOUBLE: cast down to FLOAT", name, op)
                )
            elif (
                kind == "UINT8"
                and tensor not in view.graph_inputs
                and tensor not in view.graph_outputs
                and tensor not in qdq_tensors
            ):
                reported.add(tensor)
                problems.append(
                    make_problem("trt-uint8", f"tensor {tensor} is UINT8 inside the network", name, op)
                )
        if op in _UNTYPED_INPUT or not node.input or not node.input[0]:
            continue
        kind = view.type_of(node.input[0])
        allowed = (TRT10_OPERATORS.get(op) or TRT11_OPERATORS[op]).split()
        if op == "Cast":
            to = int(attribute(node, "to", 0))
            to_kind = type_name(to) if to else None
            if to_kind and to_kind not in allowed and to_kind != "DOUBLE":
                problems.append(
                    make_problem(
                        "trt-input-type", f"casts to {to_kind}; Cast supports {', '.join(allowed)}", name, op
                    )
                )
        if kind is None or kind in allowed or kind == "DOUBLE":
            continue
        if kind == "UINT8" and node.input[0] not in view.graph_inputs:
            continue  # inside the network: the trt-uint8 rule reports the tensor once
        problems.append(
            make_problem(
                "trt-input-type",
                f"input {node.input[0]} is {kind}; {op} supports {', '.join(allowed)}",
                name,
                op,
            )
        )
    return problems


def _qdq_tensors(view: GraphView) -> set[str]:
    """Tensors Q/DQ rules judge: Q outputs, DQ data inputs and both zero points."""
    tensors: set[str] = set()
    for node in view.graph.node:
        if node.op_type == "QuantizeLinear":
            tensors.update(node.output[:1])
            tensors.update(node.input[2:3])
        elif node.op_type == "DequantizeLinear":
            tensors.update(node.input[:1])
            tensors.update(node.input[2:3])
    return tensors


def _quantized_type(view: GraphView, node: onnx.NodeProto) -> str | None:
    """What a Q/DQ node quantizes to: the zero point's type, else output_dtype, else (DQ) its input's."""
    if len(node.input) > 2 and node.input[2]:
        return view.type_of(node.input[2])
    if node.op_type == "DequantizeLinear":
        return view.type_of(node.input[0])
    dtype = attribute(node, "output_dtype", 0)
    if dtype:
        return type_name(int(dtype))
    return "INT8"  # no zero point: ONNX means UINT8, TensorRT's parser takes INT8 (QuantDequantLinearHelper)


def _quantization(view: GraphView) -> list[Problem]:
    problems: list[Problem] = []
    nodes = [n for n in view.graph.node if n.op_type in _QDQ and n.domain in ONNX_DOMAINS]
    for node in nodes:
        name, op = view.name(node), node.op_type
        data = node.input[0]
        kind = _quantized_type(view, node)
        data_kind = view.type_of(data)
        if (
            op == "DequantizeLinear"
            and data_kind
            and data_kind not in TRT_QUANTIZED_TYPES
            and data_kind != "UINT8"
        ):
            what = "a quantized bias" if view.from_weight(data) else "a tensor"
            problems.append(
                make_problem(
                    "trt-dq-input",
                    f"dequantizes {what} of type {data_kind} ({data}); TensorRT's DequantizeLinear takes "
                    f"{', '.join(sorted(TRT_QUANTIZED_TYPES))} only (keep biases in float)",
                    name,
                    op,
                )
            )
        elif kind == "UINT8" or data_kind == "UINT8":
            problems.append(
                make_problem(
                    "trt-qdq-uint8",
                    "quantizes to UINT8 (asymmetric); TensorRT quantizes activations and weights to signed "
                    "INT8 with zero point 0",
                    name,
                    op,
                )
            )
        elif kind and kind not in TRT_QUANTIZED_TYPES:
            problems.append(
                make_problem(
                    "trt-qdq-type",
                    f"quantizes to {kind}; TensorRT supports {', '.join(sorted(TRT_QUANTIZED_TYPES))}",
                    name,
                    op,
                )
            )
        if len(node.input) > 2 and node.input[2]:
            zero = view.constant(node.input[2])
            if zero is not None and np.any(zero.astype(np.float64) != 0):
                problems.append(
                    make_problem(
                        "trt-qdq-zero-point",
                        f"zero point {node.input[2]} has non-zero values (e.g. {_first_nonzero(zero)}); "
                        "TensorRT's quantization is symmetric",
                        name,
                        op,
                    )
                )
        scale = view.constant(node.input[1]) if len(node.input) > 1 else None
        if scale is not None and not np.all(scale.astype(np.float64) > 0):
            problems.append(make_problem("trt-qdq-scale", f"scale {node.input[1]} has values <= 0", name, op))
        size = int(scale.size) if scale is not None else _constant_size(view, node.input[1:2])
        if size > 1:
            problems += _per_channel(view, node, name)
        if op == "DequantizeLinear":
            users = view.consumers.get(node.output[0], [])
            if len(users) > 1 and not view.from_weight(data):
                problems.append(
                    make_problem(
                        "trt-qdq-shared",
                        f"its output feeds {len(users)} nodes ({_listed([view.name(u) for u, _ in users])}); "
                        "give each consumer its own Q/DQ pair",
                        name,
                        op,
                    )
                )
    if nodes:
        problems += _partial(view)
    return problems


def _constant_size(view: GraphView, scale: list[str]) -> int:
    """The declared size of a constant scale too large to read (integrity.VALUE_CAP), else 1."""
    if not scale or not view.is_constant(scale[0]):
        return 1
    return view.size(scale[0]) or 1


def _listed(names: list[str], most: int = 3) -> str:
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def _first_nonzero(values: np.ndarray) -> object:
    flat = values.reshape(-1)
    return flat[np.flatnonzero(flat)[0]]


def _per_channel(view: GraphView, node: onnx.NodeProto, name: str) -> list[Problem]:
    op, data = node.op_type, node.input[0]
    if not view.from_weight(data):
        return [
            make_problem(
                "trt-qdq-per-channel-activation",
                f"per-channel scales on activation {data}; activations must be quantized per-tensor",
                name,
                op,
            )
        ]
    if op != "DequantizeLinear":
        return []  # a weight's Q: its DQ (what the weighted op reads) carries the axis that matters
    rank = view.rank(data)
    axis = int(attribute(node, "axis", 1))
    if rank:
        axis = axis + rank if axis < 0 else axis
    problems = []
    for user, index in view.consumers.get(node.output[0], []):
        if user.op_type not in WEIGHTED_OPS or index != 1:
            continue
        expected = _output_channel_axis(user, rank)
        if expected is not None and axis != expected:
            problems.append(
                make_problem(
                    "trt-qdq-weight-axis",
                    f"per-channel axis {axis} for the weights of {user.op_type} {view.name(user)}; its "
                    f"output-channel axis is {expected}",
                    name,
                    op,
                )
            )
    return problems


def _output_channel_axis(user: onnx.NodeProto, rank: int | None) -> int | None:
    if user.op_type == "Conv":
        return 0
    if user.op_type == "ConvTranspose":
        return 1
    if user.op_type == "Gemm":
        return 0 if attribute(user, "transB", 0) else 1
    return rank - 1 if rank else None  # MatMul: B is ... x K x N


def _partial(view: GraphView) -> list[Problem]:
    """Weighted ops with a Q/DQ on the data input but not the weights, or the other way round."""
    problems = []
    for node in view.graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        quantized = [_dequantized(view, t) for t in node.input[:2]]
        if quantized[0] != quantized[1]:
            which = "input" if quantized[0] else "weights"
            other = "weights" if quantized[0] else "input"
            problems.append(
                make_problem(
                    "trt-qdq-partial",
                    f"its {which} come through a DequantizeLinear but its {other} do not: TensorRT runs it "
                    "in floating point",
                    view.name(node),
                    node.op_type,
                )
            )
    return problems


def _dequantized(view: GraphView, tensor: str) -> bool:
    producer = view.producer.get(tensor)
    while producer is not None and producer.op_type in ("Reshape", "Transpose", "Identity"):
        producer = view.producer.get(producer.input[0])
    return producer is not None and producer.op_type == "DequantizeLinear"


def _shapes(view: GraphView) -> list[Problem]:
    problems = []
    for value in view.graph.input:
        if value.name not in view.graph_inputs:
            continue
        shape = view.shapes.get(value.name)
        if shape is None:
            continue
        for axis, dim in enumerate(shape):
            if isinstance(dim, int) and dim > 0:
                continue
            label = f"'{dim}'" if dim else "unknown"
            if axis == 0:
                problems.append(
                    make_problem(
                        "trt-dynamic-batch",
                        f"input {value.name} has a dynamic batch ({label}): build with a min/opt/max profile "
                        "(kdforge's engine builder sets one; trtexec needs --minShapes, --optShapes and "
                        "--maxShapes)",
                    )
                )
            else:
                problems.append(
                    make_problem(
                        "trt-dynamic-dim",
                        f"input {value.name} dimension {axis} is dynamic ({label}): every profile must "
                        "give it a range (kdforge's engine builder profiles the batch only)",
                    )
                )
    return problems
