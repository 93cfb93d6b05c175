"""Hostile ONNX files for `kdforge check` (issue 22 item 13): tensors that declare 1e12 elements and store
none, negative dimensions, external data outside the model's folder, garbage and truncated files, a long
Identity chain and a 100k-node graph, and the Constant node ONNX Runtime runs. Every file is built here with
onnx.helper; `PROBES` lists them for the shared harness.

A file whose tensors do not hold the data their shapes declare is unreadable, not a model with problems:
no runtime can load it, so `kdforge check` refuses it like a truncated file (one line, exit 2) for every
target, and never reports it ready."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from tests.hostile import Attack, Outcome, Probe, mentions

HUGE = 10**12
IDENTITY_CHAIN = 5_000  # ten times Python's recursion limit
BIG_GRAPH = 100_000


# ------------------------------------------------------------------------------------------- builders
def model(
    nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto] | None = None, opset: int = 18
) -> onnx.ModelProto:
    """x (1x3x8x8 float) -> nodes -> y, with `inits` as initializers."""
    graph = helper.make_graph(
        nodes,
        "hostile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits or [],
    )
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    built.ir_version = 9
    return built


def declared_only(name: str, data_type: int, dims: list[int]) -> onnx.TensorProto:
    """A tensor that declares `dims` and stores no data at all."""
    tensor = TensorProto(name=name, data_type=data_type)
    tensor.dims.extend(dims)
    return tensor


def huge_axes_model() -> onnx.ModelProto:
    """ReduceSum whose axes input declares 1e12 INT64 elements and stores none."""
    axes = declared_only("axes", TensorProto.INT64, [HUGE])
    return model([helper.make_node("ReduceSum", ["x", "axes"], ["y"])], [axes])


def huge_operand_model() -> onnx.ModelProto:
    """Add whose second operand declares 1e12 FLOAT elements and stores none."""
    bias = declared_only("b", TensorProto.FLOAT, [HUGE])
    return model([helper.make_node("Add", ["x", "b"], ["y"])], [bias])


def constant_model() -> onnx.ModelProto:
    """y = x + Constant(1.0): ONNX Runtime folds the Constant into an initializer and runs it."""
    value = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    return model(
        [helper.make_node("Constant", [], ["c"], value=value), helper.make_node("Add", ["x", "c"], ["y"])]
    )


def identity_chain_model(length: int = IDENTITY_CHAIN) -> onnx.ModelProto:
    """Unsqueeze whose axes pass through `length` Identity nodes from an initializer."""
    nodes = [helper.make_node("Identity", ["a" if i == 0 else f"a{i - 1}"], [f"a{i}"]) for i in range(length)]
    nodes.append(helper.make_node("Unsqueeze", ["x", f"a{length - 1}"], ["y"]))
    return model(nodes, [helper.make_tensor("a", TensorProto.INT64, [1], [0])])


def relu_chain_model(length: int = BIG_GRAPH) -> onnx.ModelProto:
    """`length` Relu nodes in a chain."""
    built = model([])
    for index in range(length):
        node = built.graph.node.add()
        node.op_type = "Relu"
        node.input.append("x" if index == 0 else f"t{index - 1}")
        node.output.append("y" if index == length - 1 else f"t{index}")
    return built


def _save(root: Path, built: onnx.ModelProto, name: str = "model.onnx") -> Path:
    path = root / "files" / name
    path.write_bytes(built.SerializeToString())
    return path


# ------------------------------------------------------------------------------------------- checks
def _ready(outcome: Outcome) -> str | None:
    if "-ready: yes" not in outcome.stdout or "error " in outcome.stdout:
        return f"not reported ready: {outcome.stdout[-300:]!r}"
    return None


# ------------------------------------------------------------------------------------------- probes
def _huge_axes(root: Path) -> Attack:
    path = _save(root, huge_axes_model())
    return Attack(["check", str(path)], check=mentions("'axes'", "declares 1000000000000"))


def _huge_operand(root: Path) -> Attack:
    path = _save(root, huge_operand_model())
    return Attack(["check", str(path)], check=mentions("'b'", "declares 1000000000000"))


def _huge_operand_ort(root: Path) -> Attack:
    path = _save(root, huge_operand_model())
    return Attack(["check", str(path), "--target", "onnxruntime"], check=mentions("'b'"))


def _negative_dim(root: Path) -> Attack:
    weights = declared_only("w", TensorProto.FLOAT, [-4, 3])
    path = _save(root, model([helper.make_node("Add", ["x", "w"], ["y"])], [weights]))
    return Attack(["check", str(path)], check=mentions("negative dimension"))


def _external_outside(root: Path) -> Attack:
    (root / "outside" / "w.bin").write_bytes(b"\0" * 16)
    weights = declared_only("w", TensorProto.FLOAT, [4])
    weights.data_location = TensorProto.EXTERNAL
    for key, value in {"location": "../../outside/w.bin", "offset": "0", "length": "16"}.items():
        weights.external_data.add(key=key, value=value)
    path = _save(root, model([helper.make_node("Add", ["x", "w"], ["y"])], [weights]))
    return Attack(["check", str(path)], check=mentions("not a readable ONNX model"))


def _constant_ort(root: Path) -> Attack:
    path = _save(root, constant_model())
    return Attack(["check", str(path), "--target", "onnxruntime"], expect_exit=0, check=_ready)


def _garbage(root: Path) -> Attack:
    path = root / "files" / "model.onnx"
    path.write_bytes(b"\x00\xff not protobuf \x12\x34" * 64)
    return Attack(["check", str(path)], check=mentions("not a readable ONNX model"))


def _truncated(root: Path) -> Attack:
    data = identity_chain_model(50).SerializeToString()
    path = root / "files" / "model.onnx"
    path.write_bytes(data[: len(data) // 2])
    return Attack(["check", str(path)], check=mentions("not a readable ONNX model"))


def _identity_chain(root: Path) -> Attack:
    path = _save(root, identity_chain_model())
    return Attack(["check", str(path)], expect_exit=0, check=_ready)


def _big_graph(root: Path) -> Attack:
    path = _save(root, relu_chain_model())
    return Attack(["check", str(path)], expect_exit=0, check=_ready)


PROBES = [
    Probe("lint-huge-axes", 13, "ReduceSum axes declare 1e12 INT64 elements and store none", _huge_axes),
    Probe(
        "lint-huge-operand", 13, "an Add operand declares 1e12 FLOAT elements and stores none", _huge_operand
    ),
    Probe("lint-huge-operand-ort", 13, "the same, checked for ONNX Runtime", _huge_operand_ort),
    Probe("lint-negative-dim", 13, "an initializer with a negative dimension", _negative_dim),
    Probe("lint-external-outside", 13, "external data at ../../outside/w.bin", _external_outside),
    Probe("lint-constant-ort", 13, "a Constant node checked for ONNX Runtime (which runs it)", _constant_ort),
    Probe("lint-garbage", 13, "a .onnx file of garbage bytes", _garbage),
    Probe("lint-truncated", 13, "a valid .onnx file cut in half", _truncated),
    Probe("lint-identity-chain", 13, f"axes through {IDENTITY_CHAIN} Identity nodes", _identity_chain),
    Probe("lint-100k-nodes", 13, f"a chain of {BIG_GRAPH} Relu nodes", _big_graph),
]
