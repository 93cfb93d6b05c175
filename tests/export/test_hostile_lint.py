"""Issue 22 item 13, `kdforge check`: hostile ONNX files are refused in one line (a tensor declaring 1e12
elements is never materialised, never reported ready), long graphs lint in seconds, and the ONNX Runtime
target's verdict agrees with what the installed ONNX Runtime actually loads and runs."""

from __future__ import annotations

import time
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from kdforge.compress.errors import UserError
from kdforge.export.lint import integrity, is_ready, lint_model
from kdforge.export.lint.graph import GraphView, walk
from kdforge.export.lint.integrity import VALUE_CAP, small_array, tensor_defect
from onnx import TensorProto, helper, numpy_helper

from tests.hostile import run_in_process
from tests.hostile.lint import PROBES, constant_model, declared_only, huge_axes_model, model, relu_chain_model

X = np.zeros((1, 3, 8, 8), np.float32)


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe_is_handled_safely(probe, tmp_path: Path) -> None:
    began = time.perf_counter()
    _, _, problems = run_in_process(probe, tmp_path)
    assert problems == [], problems
    assert time.perf_counter() - began < 60


# ------------------------------------------------------------------------------- ONNX Runtime agreement
def _if_with_constants() -> onnx.ModelProto:
    """If(cond) whose branches are Constant nodes: ONNX Runtime folds Constants in subgraphs too."""
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    branches = [
        helper.make_graph(
            [
                helper.make_node(
                    "Constant", [], ["y"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [v])
                )
            ],
            name,
            [],
            [y],
        )
        for name, v in (("then", 1.0), ("else", 2.0))
    ]
    built = model(
        [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["cond"]),
            helper.make_node("If", ["cond"], ["c"], then_branch=branches[0], else_branch=branches[1]),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])],
    )
    return built


def _constant_lists() -> onnx.ModelProto:
    """Constants given as value_float and value_ints (a Reshape target)."""
    return model(
        [
            helper.make_node("Constant", [], ["c"], value_float=0.5),
            helper.make_node("Constant", [], ["shape"], value_ints=[1, 192]),
            helper.make_node("Mul", ["x", "c"], ["m"]),
            helper.make_node("Reshape", ["m", "shape"], ["y"]),
        ]
    )


def _constant_of_shape() -> onnx.ModelProto:
    return model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node(
                "ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [3.0])
            ),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ]
    )


def _image_decoder() -> onnx.ModelProto:
    """ImageDecoder (opset 20): no function body and no CPU kernel in ONNX Runtime."""
    graph = helper.make_graph(
        [helper.make_node("ImageDecoder", ["x"], ["y"])],
        "decode",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [16])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
    )
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    built.ir_version = 9
    return built


AGREEMENT = {
    "constant": (constant_model, True),
    "constant-lists": (_constant_lists, True),
    "constant-in-if": (_if_with_constants, True),
    "constant-of-shape": (_constant_of_shape, True),
    "image-decoder": (_image_decoder, False),
}


def _ort_runs(built: onnx.ModelProto) -> bool:
    """Whether ONNX Runtime's CPU provider creates a session for `built` and runs it once."""
    try:
        session = ort.InferenceSession(built.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {
            i.name: X if i.type == "tensor(float)" else np.zeros([d or 1 for d in i.shape], np.uint8)
            for i in session.get_inputs()
        }
        session.run(None, feeds)
    except Exception:  # ONNX Runtime raises its own Fail / NotImplemented / InvalidGraph types
        return False
    return True


@pytest.mark.parametrize("case", list(AGREEMENT))
def test_onnxruntime_verdict_agrees_with_onnxruntime(case: str) -> None:
    build, expected = AGREEMENT[case]
    built = build()
    problems = lint_model(built, "onnxruntime")
    assert (is_ready(problems), _ort_runs(built)) == (expected, expected), [p.line() for p in problems]
    if not expected:
        assert [p.rule for p in problems] == ["ort-kernel"]


# ------------------------------------------------------------------------------- tensors and sizes
WELL_FORMED = {
    "float32 raw": numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "t"),
    "float16 raw": numpy_helper.from_array(np.arange(5, dtype=np.float16), "t"),
    "bool raw": numpy_helper.from_array(np.array([True, False, True]), "t"),
    "complex64 raw": numpy_helper.from_array(np.arange(3, dtype=np.complex64), "t"),
    "int4 raw": numpy_helper.from_array(np.arange(5).astype(ml_dtypes.int4), "t"),
    "scalar raw": numpy_helper.from_array(np.array(7, np.int64), "t"),
    "empty raw": numpy_helper.from_array(np.zeros((0, 4), np.float32), "t"),
    "float typed": helper.make_tensor("t", TensorProto.FLOAT, [2, 2], [1, 2, 3, 4]),
    "float16 typed": helper.make_tensor("t", TensorProto.FLOAT16, [3], [1, 2, 3]),
    "int4 typed": helper.make_tensor("t", TensorProto.INT4, [5], [1, 2, 3, 4, 5]),
    "uint2 typed": helper.make_tensor("t", TensorProto.UINT2, [5], [1, 2, 3, 0, 1]),
    "complex64 typed": helper.make_tensor("t", TensorProto.COMPLEX64, [2], [1 + 2j, 3 + 4j]),
    "uint64 typed": helper.make_tensor("t", TensorProto.UINT64, [2], [1, 2]),
    "string typed": helper.make_tensor("t", TensorProto.STRING, [2], [b"a", b"b"]),
    "float8 typed": helper.make_tensor("t", TensorProto.FLOAT8E4M3FN, [2], [1.0, 2.0]),
}


@pytest.mark.parametrize("case", list(WELL_FORMED))
def test_well_formed_tensors_pass_and_read_as_onnx_reads_them(case: str) -> None:
    tensor = WELL_FORMED[case]
    assert tensor_defect(tensor) is None
    np.testing.assert_array_equal(small_array(tensor), numpy_helper.to_array(tensor))


def _short_raw() -> onnx.TensorProto:
    tensor = numpy_helper.from_array(np.zeros(4, np.float32), "t")
    tensor.raw_data = tensor.raw_data[:15]
    return tensor


def _redeclared(tensor: onnx.TensorProto, dims: list[int]) -> onnx.TensorProto:
    """`tensor` with its dims replaced by `dims` (its data left as it is)."""
    del tensor.dims[:]
    tensor.dims.extend(dims)
    return tensor


def _string_raw() -> onnx.TensorProto:
    tensor = declared_only("t", TensorProto.STRING, [1])
    tensor.raw_data = b"abcd"
    return tensor


MALFORMED = {
    "declared only": (declared_only("t", TensorProto.INT64, [10**12]), "declares 1000000000000 INT64"),
    "short raw": (_short_raw(), "stores 15 bytes (needs 16)"),
    "typed too many": (
        _redeclared(helper.make_tensor("t", TensorProto.FLOAT, [3], [1, 2, 3]), [2]),
        "stores 3 values",
    ),
    "int4 packed short": (
        _redeclared(helper.make_tensor("t", TensorProto.INT4, [4], [1, 2, 3, 4]), [6]),
        "needs 3",
    ),
    "negative dim": (declared_only("t", TensorProto.FLOAT, [2, -3]), "negative dimension"),
    "undefined type": (declared_only("t", TensorProto.UNDEFINED, [1]), "no valid element type"),
    "string raw": (_string_raw(), "STRING data as raw bytes"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_tensors_are_named_and_never_converted(case: str) -> None:
    tensor, words = MALFORMED[case]
    defect = tensor_defect(tensor)
    assert defect is not None and words in defect
    assert small_array(tensor) is None


def test_values_beyond_the_cap_are_not_read() -> None:
    assert small_array(numpy_helper.from_array(np.zeros(VALUE_CAP + 1, np.int8), "t")) is None
    long_name = declared_only("n" * 10_000, TensorProto.FLOAT, [10**12])
    assert len(tensor_defect(long_name) or "") < 200


def test_graph_view_never_materialises_a_declared_only_tensor() -> None:
    view = GraphView(huge_axes_model())
    assert view.constant("axes") is None
    assert view.is_constant("axes") and view.from_weight("axes")
    with pytest.raises(UserError, match=r"^the model: not a readable ONNX model \(tensor 'axes' declares"):
        lint_model(huge_axes_model(), "tensorrt")


def test_malformed_constant_attribute_is_refused_for_every_target() -> None:
    value = declared_only("v", TensorProto.FLOAT, [10**12])
    built = model(
        [helper.make_node("Constant", [], ["c"], value=value), helper.make_node("Add", ["x", "c"], ["y"])]
    )
    for target in ("tensorrt", "onnxruntime"):
        with pytest.raises(UserError, match="declares 1000000000000 FLOAT"):
            lint_model(built, target)


def _nested_ifs(depth: int) -> onnx.ModelProto:
    """`depth` If nodes, each the then-branch of the one before; the innermost branch is Identity(x)."""
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "leaf", [], [y])
    body = leaf
    for level in range(depth):
        node = helper.make_node("If", ["cond"], ["y"], then_branch=body, else_branch=leaf)
        body = helper.make_graph([node], f"level{level}", [], [y])
    condition = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
    ]
    return model([*condition, *body.node], [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])


def test_node_count_and_nesting_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(integrity, "MAX_NODES", 100)
    with pytest.raises(UserError, match="more than 100 nodes"):
        lint_model(relu_chain_model(101))
    assert is_ready(lint_model(relu_chain_model(100)))
    monkeypatch.setattr(integrity, "MAX_DEPTH", 3)
    lint_model(_nested_ifs(3))
    with pytest.raises(UserError, match="nested more than 3 deep"):
        lint_model(_nested_ifs(4))


def _walk_recursively(graph: onnx.GraphProto) -> list[str]:
    """The order `walk` promises: each node, then its subgraphs' nodes in attribute order."""
    order = []
    for node in graph.node:
        order.append(node.op_type)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                order += _walk_recursively(attribute.g)
    return order


def test_walk_is_depth_first_and_iterative() -> None:
    built = _nested_ifs(25)
    ops = [node.op_type for node in walk(built.graph)]
    assert ops == _walk_recursively(built.graph)
    assert ops.count("If") == 25 and ops.count("Identity") == 26
