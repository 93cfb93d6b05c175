"""The rules the linter applies, as data: rule ids, severities, sources, and the TensorRT parser's operator
table (which ONNX operators it imports, for which input types, under which documented restrictions).

TensorRT 10: the table is onnx-tensorrt's `docs/operators.md` as published with TensorRT 10.15 GA (the
latest 10.x table, opset 9-24). Operators the 10.x changelog says arrived after 10.0 carry the release
that added them (`TRT10_SINCE`), and opsets 21-24 are warnings, because the 10.0 table stops at opset 20.
TensorRT 11: no 11.x `operators.md` was available to us; the 11 profile is the 10.15 table plus what the
11.0-11.5 release notes add to the parser (Swish in 11.0, DFT in 11.2, opset 25 in 11.5).
Where the parser's source (onnx-tensorrt release/10.1-GA, commit 96e7811) departs from the table - opsets
below 9, 1-D pooling, declared-but-unused outputs, Resize axes with tensor scales, types on every input,
FP8 E4M3FN only, sequence / optional types - the rules follow the source and cite it ("trt10-parser").
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)


@dataclass(frozen=True)
class Rule:
    """One check: its id (what `kdforge check` prints), severity, one-line summary and source key."""

    id: str
    severity: str
    summary: str
    source: str


RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        # --- TensorRT: the parser's operator table --------------------------------------------------
        Rule("trt-opset", ERROR, "default-domain opset above the parser's range", "trt10-table"),
        # The table starts at opset 9, but ModelImporter::importModel only logs a warning below opset 7 and
        # rejects no opset: an old opset is a warning, not an error.
        Rule(
            "trt-opset-old", WARNING, "opset below the table's range (the parser imports it)", "trt10-parser"
        ),
        Rule(
            "trt-opset-late",
            WARNING,
            "opset only the later releases of this major version parse",
            "trt10.0-table",
        ),
        Rule(
            "trt-custom-domain",
            ERROR,
            "operator in a non-ONNX domain (parsed only as a plugin)",
            "trt-plugin-fallback",
        ),
        Rule("trt-unsupported-op", ERROR, "operator the parser does not import", "trt10-table"),
        Rule(
            "trt-op-since",
            WARNING,
            "operator only later releases of this major version import",
            "trt10-changelog",
        ),
        Rule("trt-input-type", ERROR, "input type outside the operator's supported types", "trt10-table"),
        Rule(
            "trt-io-type",
            ERROR,
            "graph input / output / initializer that is not a tensor of a type the parser converts",
            "trt10-parser",
        ),
        Rule(
            "trt-constant-input",
            ERROR,
            "input the table requires to be an initializer / build-time constant",
            "trt10-table",
        ),
        Rule(
            "trt-op-restriction",
            ERROR,
            "attribute or output the table's restrictions column excludes",
            "trt10-table",
        ),
        Rule(
            "trt-parser-restriction",
            ERROR,
            "node form the parser's static checker or importer refuses (beyond the table's restrictions)",
            "trt10-parser",
        ),
        Rule(
            "trt-tensor-axes",
            WARNING,
            "Slice / Pad axes from a tensor: only later 10.x releases parse it (10.3 / 10.4)",
            "trt10.6-parser",
        ),
        Rule(
            "trt-uint8",
            ERROR,
            "UINT8 tensor inside the network (only network inputs/outputs may be UINT8)",
            "trt10-table",
        ),
        Rule(
            "trt-double",
            WARNING,
            "DOUBLE tensor: TensorRT casts it down to FLOAT, clamping to +-FLT_MAX",
            "trt10-table",
        ),
        # --- TensorRT: explicit quantization ---------------------------------------------------------
        Rule(
            "trt-qdq-type",
            ERROR,
            "Q/DQ quantized type other than INT8, FP8, INT4 (FP4 from 10.8)",
            "trt-parser-qdq",
        ),
        Rule(
            "trt-qdq-uint8",
            ERROR,
            "UINT8 (asymmetric) Q/DQ: TensorRT quantizes to signed types only",
            "trt-parser-qdq",
        ),
        Rule(
            "trt-qdq-zero-point",
            ERROR,
            "non-zero Q/DQ zero point: TensorRT quantization is symmetric",
            "trt-parser-qdq",
        ),
        Rule(
            "trt-dq-input",
            ERROR,
            "DequantizeLinear on a non-quantized type (int32 bias): 'only activation types allowed'",
            "trt-issue-850",
        ),
        Rule("trt-qdq-scale", ERROR, "Q/DQ scale not a positive constant", "trt-parser-qdq"),
        Rule(
            "trt-qdq-per-channel-activation",
            ERROR,
            "per-channel Q/DQ on an activation (only weights may be per-channel)",
            "trt-quant-guide",
        ),
        Rule(
            "trt-qdq-weight-axis",
            ERROR,
            "per-channel weight Q/DQ not on the output-channel axis",
            "trt-quant-guide",
        ),
        # ONNX Runtime's quantizer says TensorRT wants a dedicated pair per consumer; NVIDIA Model Optimizer's
        # ONNX PTQ (0.47.0), which targets TensorRT, shares them: a note, not a warning.
        Rule(
            "trt-qdq-shared",
            INFO,
            "one DequantizeLinear feeds several nodes (a dedicated pair each is the safe form)",
            "ort-qdq-options",
        ),
        Rule(
            "trt-qdq-partial",
            WARNING,
            "weighted op with only some inputs quantized: it runs in floating point",
            "trt-quant-guide",
        ),
        # --- TensorRT: shapes -----------------------------------------------------------------------
        Rule(
            "trt-dynamic-batch",
            INFO,
            "dynamic batch: the engine needs a min/opt/max optimization profile",
            "trt-builder",
        ),
        Rule(
            "trt-dynamic-dim",
            WARNING,
            "dynamic non-batch dimension: needs its own profile range",
            "trt-builder",
        ),
        # --- ONNX Runtime (CPU) ---------------------------------------------------------------------
        Rule(
            "ort-opset",
            ERROR,
            "default-domain opset outside what the installed ONNX Runtime runs",
            "ort-versioning",
        ),
        Rule("ort-kernel", ERROR, "no CPU kernel for this operator / domain / version", "ort-installed"),
        Rule(
            "ort-session",
            ERROR,
            "the installed ONNX Runtime refuses to create a CPU session",
            "ort-installed",
        ),
    )
}

ONNX_DOMAINS = ("", "ai.onnx")

# Parser opset range per TensorRT major: (lowest, highest every release parses, highest the newest parses).
TRT_OPSETS = {10: (9, 20, 24), 11: (9, 24, 25)}
TRT_LATE_OPSET_NOTE = {
    10: "the 10.0 table stops at opset 20; the 10.15 table reaches 24",
    11: "opset 25 arrived with TensorRT 11.5 (earlier 11.x: up to 24)",
}


def _names(text: str) -> list[str]:
    return text.split()


# The table's "Supported Types" column, abbreviated: F = FP32, FP16, BF16; I = INT32, INT64; B = BOOL.
_F, _FI, _FIB = "FP32 FP16 BF16", "FP32 FP16 BF16 INT32 INT64", "FP32 FP16 BF16 INT32 INT64 BOOL"
_H = "FP32 FP16"  # no BF16
_QUANT = "INT8 FP8 FP4 INT4"

# TensorRT 10.15 GA docs/operators.md, rows marked Y: operator -> types of its data input. Pow is FP32 /
# FP16 / BF16 as in the 10.0 table (release/10.1-GA): importerUtils.cpp elementwiseCheck refuses POW on
# any BOOL, INT32 or INT64 input.
TRT10_OPERATORS: dict[str, str] = {
    **dict.fromkeys(
        _names(
            "Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv "
            "ConvTranspose Cos Cosh CumSum Dropout Einsum Elu Erf Exp Floor Gemm GlobalAveragePool "
            "GlobalLpPool GlobalMaxPool GroupNormalization GRU HardSigmoid HardSwish Hardmax "
            "ImageScaler InstanceNormalization IsInf LayerNormalization LeakyRelu Log LogSoftmax LRN "
            "LSTM LpNormalization LpPool MatMul MaxPool MeanVarianceNormalization ParametricSoftplus "
            "Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike "
            "Reciprocal Resize RMSNormalization RNN RotaryEmbedding Round ScaledTanh Scan Selu Sigmoid "
            "Sin Sinh Softmax Softplus Softsign Sqrt Tan Tanh ThresholdedRelu Upsample"
        ),
        _F,
    ),
    **dict.fromkeys(
        _names(
            "Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less "
            "LessOrEqual Max Min Mod Mul Neg Pad Range ReduceL1 ReduceL2 ReduceLogSum "
            "ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu "
            "Scatter ScatterElements ScatterND Shrink Sign SpaceToDepth Sub Sum TopK"
        ),
        _FI,
    ),
    **dict.fromkeys(
        _names(
            "Concat Expand EyeLike Flatten Gather GatherElements GatherND Identity If Loop OneHot "
            "Reshape ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu Unsqueeze "
            "Where"
        ),
        _FIB,
    ),
    **dict.fromkeys(
        _names(
            "BlackmanWindow HammingWindow HannWindow DeformConv GridSample Mish NonMaxSuppression "
            "NonZero RoiAlign"
        ),
        _H,
    ),
    **dict.fromkeys(_names("And Not Or Xor"), "BOOL"),
    "Attention": f"{_F} INT8 FP8",
    "Cast": f"{_FI} UINT8 BOOL",
    "CastLike": f"{_FI} UINT8 BOOL",
    "Constant": f"{_FIB} FP8 FP4 INT4",
    "ConstantOfShape": f"{_FIB} FP8 FP4 INT4",
    "DequantizeLinear": _QUANT,
    "Gelu": f"{_F} INT8 INT32 INT64",
    "Mean": f"{_F} FP8 INT32 INT64",
    "STFT": "FP32",
    "TensorScatter": f"{_F} INT32",
}

# Operators the 10.x changelog says arrived after 10.0 GA: the release that added them.
TRT10_SINCE = {
    "DeformConv": "10.1",
    "BlackmanWindow": "10.4",
    "HammingWindow": "10.4",
    "HannWindow": "10.4",
    "STFT": "10.5",
    "Attention": "10.14",
    "RMSNormalization": "10.15",
    "RotaryEmbedding": "10.15",
    "TensorScatter": "10.15",
}

# TensorRT 11: the 10.15 table plus the 11.x release notes' parser additions.
TRT11_OPERATORS: dict[str, str] = {**TRT10_OPERATORS, "Swish": _F, "DFT": _H}
TRT11_SINCE = {"DFT": "11.2"}

# Inputs the table's restrictions column requires to be an initializer or otherwise a build-time constant:
# operator -> (input index, input name). Reduce* axes became input 1 at opset 18 (ReduceSum at 13).
TRT_CONSTANT_INPUTS: dict[str, tuple[int, str]] = {
    **dict.fromkeys(
        _names(
            "ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd "
            "ReduceSum ReduceSumSquare"
        ),
        (1, "axes"),
    ),
    "CumSum": (1, "axis"),
    "OneHot": (1, "depth"),
    "Dropout": (2, "training_mode"),
    "Squeeze": (1, "axes"),
    "Unsqueeze": (1, "axes"),
}

# Resize modes the table lists as supported.
TRT_RESIZE = {
    "coordinate_transformation_mode": {
        "half_pixel",
        "pytorch_half_pixel",
        "tf_half_pixel_for_nn",
        "asymmetric",
        "align_corners",
    },
    # cubic: the table lists nearest and linear, but the parser's checker accepts cubic and the importer maps
    # it to InterpolationMode::kCUBIC (onnxOpCheckers.cpp / onnxOpImporters.cpp Resize, release/10.1-GA).
    "mode": {"nearest", "linear", "cubic"},
    "nearest_mode": {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"},
    "keep_aspect_ratio_policy": {"stretch"},
}

# Element types the parser converts (importerUtils.cpp convertDtype, release/10.1-GA; FLOAT4E2M1 from 10.8),
# in the table's names (graph.type_name): a graph input or output of any other type, or of a sequence /
# optional / map type (no tensor_type, so elem_type 0), fails in ModelImporter.cpp importInput / importModel.
TRT_PARSER_TYPES = frozenset(
    {"DOUBLE", "FP32", "FP16", "BF16", "INT8", "UINT8", "BOOL", "INT32", "INT64", "FP8", "INT4", "FP4"}
)

# Initializer types the parser's weight import sizes (weightUtils.cpp getDtypeSizeBits, checked by
# WeightsContext.cpp validateOnnxInitializer, release/10.1-GA): any other initializer type stops the parse.
TRT_WEIGHT_TYPES = TRT_PARSER_TYPES | {"UINT16", "INT16", "UINT32", "UINT64", "COMPLEX64", "COMPLEX128"}

# Operators every input of which is a data input the table's "Supported Types" applies to (importerUtils.cpp
# elementwiseCheck tests all inputs of the element-wise operators, not only the first); Where's condition
# (input 0) is BOOL, its data inputs are 1 and 2.
TRT_ALL_DATA_INPUTS: dict[str, int] = {
    **dict.fromkeys(
        _names(
            "Add Sub Mul Div Pow Max Min Sum Mean Mod Equal Greater GreaterOrEqual Less LessOrEqual "
            "And Or Xor PRelu"
        ),
        0,
    ),
    "Where": 1,
}

# Slice / Pad `axes` (input 3) from a tensor: release/10.1-GA refuses it ("This version of TensorRT does
# not support dynamic axes." / "TensorRT does not support dynamic axes for pad!"); the changelog adds tensor
# axes to Slice in 10.3 and to Pad in 10.4, and the Pad importer at 0137504e (10.6 GA) feeds them to the
# slice layer.
TRT10_TENSOR_AXES_SINCE = {"Slice": "10.3", "Pad": "10.4"}

# Types TensorRT quantizes to (Q output / DQ input); FP4 arrived in 10.8 (changelog).
TRT_QUANTIZED_TYPES = {"INT8", "FP8", "INT4", "FP4"}

# Consumers of a per-channel weight and the axis that is their output channel (the axis TensorRT wants the
# scales on): Conv weights are KCRS (K, axis 0); ConvTranspose weights are C x K/group x ... (axis 1);
# Gemm B is N x K when transB=1 (axis 0) and K x N otherwise (axis 1); MatMul B is ... x K x N (last axis).
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def rule(rule_id: str) -> Rule:
    """The rule named `rule_id` (KeyError for a typo, which is a bug in the checker)."""
    return RULES[rule_id]
