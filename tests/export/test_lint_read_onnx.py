"""The lint reads ONNX files with `read_onnx`: one name per kind of file (`load_model` is the checkpoint
loader's alone), and an unreadable file is one line."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from kdforge.compress.errors import UserError
from kdforge.export import lint
from onnx import TensorProto, helper


def test_read_onnx_reads_a_model_and_refuses_anything_else_in_one_line(tmp_path: Path) -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(helper.make_graph([node], "g", [x], [y])), str(path))
    assert [n.op_type for n in lint.read_onnx(path).graph.node] == ["Relu"]
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\x00 not protobuf")
    with pytest.raises(UserError, match="not a readable ONNX model") as info:
        lint.read_onnx(garbage)
    assert "\n" not in str(info.value)
    assert not hasattr(lint, "load_model")
