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
    TRT10_TENSOR_AXES_SINCE,
    TRT11_OPERATORS,
    TRT11_SINCE,
    TRT_ALL_DATA_INPUTS,
    TRT_CONSTANT_INPUTS,
    TRT_LATE_OPSET_NOTE,
    TRT_OPSETS,
    TRT_PARSER_TYPES,
    TRT_QUANTIZED_TYPES,
    TRT_RESIZE,
    TRT_WEIGHT_TYPES,
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
    problems += _io_types(view)
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
    if opset > newest:
        return [
            make_problem(
                "trt-opset",
                f"opset {opset}: TensorRT {trt_version} parses opsets {lowest}-{newest}",
                source=_table_source(trt_version),
            )
        ]
    if opset < lowest:  # ModelImporter::importModel: a warning below opset 7, no opset is refused
        note = "the parser warns below opset 7 that such models 'are not guaranteed to work'"
        return [
            make_problem(
                "trt-opset-old",
                f"opset {opset}: below the table's opset {lowest}-{newest}, but the parser imports it "
                f"({note if opset < 7 else 'without a warning'}); re-export at opset >= {lowest} to stay "
                "within the documented range",
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
        problems += _parser_checks(view, node, name, trt_version)
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
        # AveragePool / MaxPool import 1-D pooling by unsqueezing it to 2-D (importerUtils.cpp poolingHelper,
        # release/10.1-GA); the LpPool importer does not, and addPoolingNd pools in 2-D or 3-D only.
        kernel = attribute(node, "kernel_shape", [])
        spatial = (1, 2, 3) if op != "LpPool" else (2, 3)
        if len(kernel) not in spatial:
            found.append(f"{len(kernel)}-D pooling ({op} pools in {'-D, '.join(map(str, spatial))}-D only)")
        dilations = attribute(node, "dilations", [])
        if any(d != 1 for d in dilations):
            found.append(f"dilations {list(dilations)} (must be empty or all ones)")
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
    elif op == "ScatterND" and attribute(node, "reduction", "none") != "none":
        found.append(f"reduction={attribute(node, 'reduction')!r} (only 'none')")
    return [make_problem("trt-op-restriction", text, name, op, source=source) for text in found]


def _parser_checks(view: GraphView, node: onnx.NodeProto, name: str, trt_version: int) -> list[Problem]:
    """What the parser's static checkers and importers (release/10.1-GA) refuse beyond the table."""
    op = node.op_type
    found: list[str] = []
    extra = [o for o in node.output[1:] if o]
    if op == "MaxPool" and len(node.output) > 1:  # onnxOpCheckers.cpp MaxPool: node.output().size() == 1
        found.append("declares the Indices output (the checker wants exactly one output, used or not)")
    elif op == "LayerNormalization" and extra:  # onnxOpCheckers.cpp LayerNormalization: emptyOutputChecker(1)
        found.append(
            f"declares Mean / InvStdDev outputs ({', '.join(extra)}); only Y may be named, used or not"
        )
    elif op == "BatchNormalization":  # onnxOpCheckers.cpp BatchNormalization
        if attribute(node, "training_mode", 0):
            found.append("training_mode=1 (the checker refuses training mode)")
        if extra:
            found.append(f"declares running mean / var outputs ({', '.join(extra)}); only Y may be named")
    elif op == "Resize":
        found += _resize_checks(view, node)
    elif op in TRT10_TENSOR_AXES_SINCE and trt_version == 10 and _tensor_axes(view, node):
        since = TRT10_TENSOR_AXES_SINCE[op]
        return [
            make_problem(
                "trt-tensor-axes",
                f"axes ({node.input[3]}) is not a constant: TensorRT {since} and later parse it, earlier "
                "10.x releases require an initializer",
                name,
                op,
            )
        ]
    return [make_problem("trt-parser-restriction", text, name, op) for text in found]


def _tensor_axes(view: GraphView, node: onnx.NodeProto) -> bool:
    """True when a Slice / Pad takes its axes (input 3) from something other than constants."""
    return len(node.input) > 3 and bool(node.input[3]) and not view.from_weight(node.input[3])


def _resize_checks(view: GraphView, node: onnx.NodeProto) -> list[str]:
    """Resize in onnxOpCheckers.cpp / onnxOpImporters.cpp: tf_half_pixel_for_nn rounding, axes with tensor
    scales."""
    found: list[str] = []
    opset = default_opset(view.model) or 0
    mode = attribute(node, "coordinate_transformation_mode", "half_pixel")
    nearest = attribute(node, "nearest_mode", "round_prefer_floor")
    if opset >= 11 and mode == "tf_half_pixel_for_nn" and nearest != "round_prefer_floor":
        found.append(f"tf_half_pixel_for_nn with nearest_mode={nearest!r} (only round_prefer_floor)")
    axes = [int(a) for a in attribute(node, "axes", []) or []]
    scales_at = 2 if opset >= 11 else 1
    scales = node.input[scales_at] if len(node.input) > scales_at else ""
    sizes = node.input[3] if opset >= 11 and len(node.input) > 3 else ""
    if not axes or not scales or sizes or view.is_constant(scales):
        return found
    rank = view.rank(node.input[0])
    normalised = [a + rank if rank and a < 0 else a for a in axes]
    if normalised != list(range(len(axes))) or (rank is not None and len(axes) != rank):
        found.append(
            f"axes {axes} with scales from a tensor ({scales}): the importer takes tensor scales only when "
            "axes is 0..rank-1 (make scales an initializer, or use sizes)"
        )
    return found


def _io_types(view: GraphView) -> list[Problem]:
    """Graph inputs, outputs and initializers: tensors of a type convertDtype knows, or the parser stops."""
    problems: list[Problem] = []
    values = [("input", v) for v in view.graph.input if v.name in view.graph_inputs]
    values += [("output", v) for v in view.graph.output]
    for role, value in values:
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            what = (kind or "untyped").replace("_type", "")
            problems.append(
                make_problem(
                    "trt-io-type",
                    f"graph {role} {value.name} is a {what}, not a tensor (TensorRT networks have tensor "
                    "inputs and outputs only)",
                )
            )
            continue
        elem = value.type.tensor_type.elem_type
        if elem and type_name(elem) not in TRT_PARSER_TYPES:
            problems.append(
                make_problem(
                    "trt-io-type",
                    f"graph {role} {value.name} is {type_name(elem)}: the parser converts only "
                    f"{', '.join(sorted(TRT_PARSER_TYPES))}",
                )
            )
    for tensor in view.graph.initializer:
        if tensor.data_type and type_name(tensor.data_type) not in TRT_WEIGHT_TYPES:
            problems.append(
                make_problem(
                    "trt-io-type",
                    f"initializer {tensor.name} is {type_name(tensor.data_type)}: the parser's weight import "
                    "(validateOnnxInitializer / getDtypeSizeBits) has no size for it",
                )
            )
    return problems


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
        problems += _node_input_types(view, node, name)
    return problems


def _node_input_types(view: GraphView, node: onnx.NodeProto, name: str) -> list[Problem]:
    """The table's types on the data inputs (every input of element-wise operators, which elementwiseCheck
    tests), Cast / CastLike targets, and any input of a type the parser cannot hold in a tensor."""
    op = node.op_type
    allowed = (TRT10_OPERATORS.get(op) or TRT11_OPERATORS[op]).split()
    problems: list[Problem] = []
    target = None
    if op == "Cast":
        to = int(attribute(node, "to", 0))
        target = type_name(to) if to else None
    elif op == "CastLike" and len(node.input) > 1 and node.input[1]:
        target = view.type_of(node.input[1])  # CastLike casts to its second input's type
    if target and target not in allowed and target != "DOUBLE":
        problems.append(
            make_problem("trt-input-type", f"casts to {target}; {op} supports {', '.join(allowed)}", name, op)
        )
    if op in _UNTYPED_INPUT:
        return problems
    first = TRT_ALL_DATA_INPUTS.get(op)
    data = {0} if first is None else set(range(first, len(node.input)))
    for index, tensor in enumerate(node.input):
        kind = view.type_of(tensor) if tensor else None
        if kind is None or kind == "DOUBLE":
            continue
        if index in data:
            if kind in allowed or (kind == "UINT8" and tensor not in view.graph_inputs):
                continue  # UINT8 inside the network: the trt-uint8 rule reports the tensor once
            problems.append(
                make_problem(
                    "trt-input-type",
                    f"input {index} ({tensor}) is {kind}; {op} supports {', '.join(allowed)}",
                    name,
                    op,
                )
            )
        elif (
            kind not in TRT_PARSER_TYPES
            and tensor not in view.graph_inputs
            and tensor not in view.initializers
        ):
            problems.append(  # graph inputs and initializers: trt-io-type reports them once
                make_problem(
                    "trt-input-type",
                    f"input {index} ({tensor}) is {kind}: the parser holds no tensor of that type",
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
