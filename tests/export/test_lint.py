"""`kdforge.export.lint` and `kdforge check`: planted ONNX files each rejected with its rule named, the
ONNX Runtime target asked of the installed ONNX Runtime, exit codes 0/1/2 and --json, every zoo model's
fp32 / fp16 / int8 export TensorRT-ready, and the TensorRT int8 form's accuracy on a trained network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from kdforge.compress.errors import UserError
from kdforge.compress.models import available
from kdforge.export.lint import RULES, SOURCES, is_ready, lint_onnx, to_json, verdict
from kdforge.export.lint.onnxruntime import ort_max_opset
from onnx import TensorProto, helper, numpy_helper

from kdforge.cli import main

FLOAT, INT8, UINT8, INT32 = TensorProto.FLOAT, TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32


def _init(name: str, values: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(values, name)


def _save(
    path: Path,
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    *,
    opset: int = 18,
    x_shape: list[int | str] | None = None,
    y_shape: list[int | str] | None = None,
    extra_opsets: dict[str, int] | None = None,
    y_type: int = FLOAT,
) -> Path:
    graph = helper.make_graph(
        nodes,
        "planted",
        [helper.make_tensor_value_info("x", FLOAT, x_shape or ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", y_type, y_shape)],
        initializer=inits,
    )
    imports = [helper.make_opsetid("", opset)] + [
        helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()
    ]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _weights(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((4, 3, 3, 3)).astype(np.float32)


def _qdq_conv(
    path: Path,
    *,
    act_type: int = INT8,
    act_zero: int = 0,
    bias: str = "float",
    weight_axis: int = 0,
    act_scale: np.ndarray | None = None,
) -> Path:
    """x -> Q -> DQ -> Conv(DQ(int8 per-channel weights), bias) -> y: TensorRT's form unless told not."""
    w = np.clip(np.round(_weights() * 40), -127, 127).astype(np.int8)
    channels = w.shape[weight_axis]
    np_act = np.int8 if act_type == INT8 else np.uint8
    inits = [
        _init("x_scale", act_scale if act_scale is not None else np.array(0.05, np.float32)),
        _init(
            "x_zero", np.array(act_zero, np_act) if act_scale is None else np.zeros(act_scale.shape, np_act)
        ),
        _init("w_q", w),
        _init("w_scale", np.full(channels, 0.02, np.float32)),
        _init("w_zero", np.zeros(channels, np.int8)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="x_q", axis=1),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], name="x_dq", axis=1),
        helper.make_node(
            "DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["wd"], name="w_dq", axis=weight_axis
        ),
    ]
    conv_inputs = ["xd", "wd"]
    if bias == "float":
        inits.append(_init("b", np.zeros(4, np.float32)))
        conv_inputs.append("b")
    elif bias == "int32":
        inits += [
            _init("b_q", np.arange(4, dtype=np.int32)),
            _init("b_scale", np.full(4, 0.001, np.float32)),
            _init("b_zero", np.zeros(4, np.int32)),
        ]
        nodes.append(
            helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zero"], ["bd"], name="bias_dq", axis=0)
        )
        conv_inputs.append("bd")
    nodes.append(helper.make_node("Conv", conv_inputs, ["y"], name="conv", pads=[1, 1, 1, 1]))
    return _save(path, nodes, inits)


def _rules(path: Path, target: str = "tensorrt", version: int = 10, severity: str | None = None) -> set[str]:
    return {p.rule for p in lint_onnx(path, target, version) if severity is None or p.severity == severity}


def _errors(path: Path, target: str = "tensorrt", version: int = 10) -> set[str]:
    return _rules(path, target, version, "error")


def test_every_rule_names_a_documented_source() -> None:
    for rule in RULES.values():
        assert rule.source in SOURCES, rule.id
        assert rule.severity in ("error", "warning", "info")
        source = SOURCES[rule.source]
        assert source.version and source.date and source.url.startswith("https://")


def test_tensorrt_form_of_a_quantized_conv_is_clean(tmp_path: Path) -> None:
    path = _qdq_conv(tmp_path / "good.onnx")
    problems = lint_onnx(path, "tensorrt", 10)
    assert is_ready(problems) and not [p for p in problems if p.severity != "info"], problems
    assert {p.rule for p in problems} == {"trt-dynamic-batch"}  # a note: kdforge's builder sets the profile
    assert is_ready(lint_onnx(path, "tensorrt", 11))
    assert is_ready(lint_onnx(path, "onnxruntime"))


def test_int32_bias_dequantize_is_rejected_naming_issue_850(tmp_path: Path) -> None:
    problems = lint_onnx(_qdq_conv(tmp_path / "bias.onnx", bias="int32"), "tensorrt", 10)
    [bias] = [p for p in problems if p.rule == "trt-dq-input"]
    assert bias.node == "bias_dq" and bias.op_type == "DequantizeLinear" and bias.severity == "error"
    assert "INT32" in bias.message and "onnx-tensorrt#850" in bias.source
    assert "only activation types" in bias.source
    assert is_ready(lint_onnx(tmp_path / "bias.onnx", "onnxruntime"))  # ONNX Runtime runs int32 biases


def test_uint8_asymmetric_activations_are_rejected(tmp_path: Path) -> None:
    path = _qdq_conv(tmp_path / "u8.onnx", act_type=UINT8, act_zero=128)
    problems = [p for p in lint_onnx(path) if p.severity == "error"]
    assert {(p.rule, p.node) for p in problems} >= {
        ("trt-qdq-uint8", "x_q"),
        ("trt-qdq-uint8", "x_dq"),
        ("trt-qdq-zero-point", "x_q"),
    }
    assert all("onnxOpImporters.cpp" in p.source for p in problems)
    assert is_ready(lint_onnx(path, "onnxruntime"))


def test_non_zero_int8_zero_point_is_rejected(tmp_path: Path) -> None:
    problems = lint_onnx(_qdq_conv(tmp_path / "zp.onnx", act_zero=3))
    zero = [p for p in problems if p.rule == "trt-qdq-zero-point"]
    assert {p.node for p in zero} == {"x_q", "x_dq"} and "e.g. 3" in zero[0].message
    assert "trt-qdq-uint8" not in {p.rule for p in problems}


def test_per_channel_activation_and_wrong_weight_axis_are_rejected(tmp_path: Path) -> None:
    per_channel = _qdq_conv(tmp_path / "pc.onnx", act_scale=np.full(3, 0.05, np.float32))
    assert "trt-qdq-per-channel-activation" in _errors(per_channel)
    axis = _qdq_conv(tmp_path / "axis.onnx", weight_axis=1)
    [problem] = [p for p in lint_onnx(axis) if p.rule == "trt-qdq-weight-axis"]
    assert problem.node == "w_dq" and "output-channel axis is 0" in problem.message


def test_com_microsoft_op_is_rejected_for_tensorrt_but_runs_in_onnxruntime(tmp_path: Path) -> None:
    nodes = [helper.make_node("Gelu", ["x"], ["y"], name="gelu", domain="com.microsoft")]
    path = _save(tmp_path / "ms.onnx", nodes, [], extra_opsets={"com.microsoft": 1})
    [problem] = [p for p in lint_onnx(path) if p.severity == "error"]
    assert (problem.rule, problem.node, problem.op_type) == ("trt-custom-domain", "gelu", "Gelu")
    assert "com.microsoft" in problem.message
    assert is_ready(lint_onnx(path, "onnxruntime"))  # ONNX Runtime's contrib ops are allowed there


def test_operator_the_parser_does_not_import_is_rejected(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], name="flatten", axis=0),
        helper.make_node("Unique", ["flat"], ["y"], name="unique", sorted=1),
    ]
    path = _save(tmp_path / "unique.onnx", nodes, [], y_shape=None)
    [problem] = [p for p in lint_onnx(path) if p.severity == "error"]
    assert (problem.rule, problem.node) == ("trt-unsupported-op", "unique")
    assert "operators.md" in problem.source and "10.15" in problem.source
    assert is_ready(lint_onnx(path, "onnxruntime"))


def test_opset_above_the_parser_range_is_rejected_per_major_version(tmp_path: Path) -> None:
    relu = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    assert "trt-opset" in _errors(_save(tmp_path / "o25.onnx", relu, [], opset=25), version=10)
    assert _rules(tmp_path / "o25.onnx", version=11, severity="warning") == {
        "trt-opset-late"
    }  # 11.5 parses 25
    assert "trt-opset" in _errors(_save(tmp_path / "o26.onnx", relu, [], opset=26), version=11)
    late = _save(tmp_path / "o22.onnx", relu, [], opset=22)
    assert _errors(late) == set() and "trt-opset-late" in _rules(late, severity="warning")
    # Below the table's opset 9 the parser still imports (ModelImporter::importModel warns below 7 only).
    old = _save(tmp_path / "o8.onnx", relu, [], opset=8)
    assert _errors(old) == set() and _rules(old, severity="warning") == {"trt-opset-old"}
    [ancient] = [p for p in lint_onnx(_save(tmp_path / "o6.onnx", relu, [], opset=6)) if p.severity != "info"]
    assert ancient.rule == "trt-opset-old" and "not guaranteed to work" in ancient.message
    assert "release/10.1-GA" in ancient.source and "ModelImporter.cpp" in ancient.source
    beyond = _save(tmp_path / "ort.onnx", relu, [], opset=ort_max_opset() + 1)
    assert _errors(beyond, "onnxruntime") == {"ort-opset"}


def test_onnxruntime_target_names_a_node_without_a_cpu_kernel(tmp_path: Path) -> None:
    nodes = [helper.make_node("Foo", ["x"], ["y"], name="foo", domain="my.domain")]
    path = _save(tmp_path / "foo.onnx", nodes, [], extra_opsets={"my.domain": 1})
    [problem] = lint_onnx(path, "onnxruntime")
    assert (problem.rule, problem.node, problem.severity) == ("ort-kernel", "foo", "error")
    assert "onnxruntime" in problem.message


def test_restrictions_types_and_shapes(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[2, 2], dilations=[2, 2]),
        helper.make_node("Cast", ["p"], ["d"], name="to_double", to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["d"], ["y"], name="to_float", to=FLOAT),
    ]
    path = _save(tmp_path / "misc.onnx", nodes, [], x_shape=["batch", 3, "h", 8])
    rules = {p.rule: p for p in lint_onnx(path)}
    assert rules["trt-op-restriction"].node == "pool" and "dilations" in rules["trt-op-restriction"].message
    assert rules["trt-double"].severity == "warning"
    assert (
        rules["trt-dynamic-dim"].severity == "warning" and "dimension 2" in rules["trt-dynamic-dim"].message
    )
    assert rules["trt-dynamic-batch"].severity == "info"


def test_parser_refuses_declared_outputs_even_unused_and_tensor_axes_warn(tmp_path: Path) -> None:
    """onnxOpCheckers.cpp (release/10.1-GA) refuses a declared LayerNormalization Mean / MaxPool Indices
    output that nothing reads; constant Slice axes and Resize axes with constant scales stay clean."""
    ln_inits = [_init("gamma", np.ones(8, np.float32)), _init("beta", np.zeros(8, np.float32))]
    ln = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y", "mean"], name="ln", axis=-1)]
    [problem] = [p for p in lint_onnx(_save(tmp_path / "ln.onnx", ln, ln_inits)) if p.severity == "error"]
    assert (problem.rule, problem.node) == ("trt-parser-restriction", "ln") and "mean" in problem.message
    assert "onnxOpCheckers.cpp" in problem.source and "96e7811" in problem.source
    pool = [helper.make_node("MaxPool", ["x"], ["y", "idx"], name="pool", kernel_shape=[2, 2])]
    assert _errors(_save(tmp_path / "pool.onnx", pool, [])) == {"trt-parser-restriction"}
    starts, ends = _init("starts", np.array([0], np.int64)), _init("ends", np.array([4], np.int64))
    axes = _init("axes", np.array([2], np.int64))
    sliced = [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="slice")]
    constant = _save(tmp_path / "slice.onnx", sliced, [starts, ends, axes])
    assert _rules(constant, severity="warning") == set() and _errors(constant) == set()
    moved = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "starts", "ends"], ["axes"]),
        helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="slice"),
    ]
    tensor = _save(tmp_path / "tensor_axes.onnx", moved, [starts, ends])
    assert _rules(tensor, severity="warning") == {"trt-tensor-axes"} and _errors(tensor) == set()
    assert "trt-tensor-axes" not in _rules(tensor, version=11)
    resize = [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", axes=[2, 3])]
    scales = _init("scales", np.array([2.0, 2.0], np.float32))
    assert _errors(_save(tmp_path / "resize.onnx", resize, [scales])) == set()


def test_cli_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _qdq_conv(tmp_path / "good.onnx")
    bad = _qdq_conv(tmp_path / "bad.onnx", bias="int32")
    assert main(["check", str(good)]) == 0
    assert "TensorRT 10-ready: yes" in capsys.readouterr().out
    assert main(["check", str(bad), "--trt-version", "11"]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "trt-dq-input" in line)
    assert "node bias_dq (DequantizeLinear)" in line and "onnx-tensorrt#850" in line
    assert "TensorRT 11-ready: no (1 error" in out
    assert main(["check", str(bad), "--target", "onnxruntime"]) == 0
    capsys.readouterr()
    assert main(["check", str(bad), "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ready"] is False and document["counts"]["error"] == 1 and document["trt_version"] == 10
    assert {"rule", "severity", "node", "op_type", "message", "source", "url"} <= set(document["problems"][0])
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all \xff\xfe")
    (tmp_path / "empty.onnx").write_bytes(b"")
    for unreadable in ("junk.onnx", "empty.onnx", "missing.onnx"):
        assert main(["check", str(tmp_path / unreadable)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("kdforge: error:") and "Traceback" not in err
    assert main(["check", str(good), "--trt-version", "9"]) == 2


def test_lint_and_check_do_not_import_torch(tmp_path: Path) -> None:
    path = _qdq_conv(tmp_path / "good.onnx")
    code = (
        "import sys; from kdforge.cli import main; "
        f"rc = main(['check', {str(path)!r}]); "
        f"rc2 = main(['check', {str(path)!r}, '--target', 'onnxruntime']); "
        "print('torch' in sys.modules, rc, rc2)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False 0 0")


def test_api_for_deploy(tmp_path: Path) -> None:
    problems = lint_onnx(_qdq_conv(tmp_path / "bad.onnx", bias="int32"))
    assert verdict(problems, "tensorrt", 10) == "TensorRT 10-ready: no (1 error, 0 warnings, 1 note)"
    assert to_json("bad.onnx", problems)["verdict"].startswith("TensorRT 10-ready: no")
    with pytest.raises(UserError, match="unknown lint target"):
        lint_onnx(tmp_path / "bad.onnx", "openvino")


# --- kdforge's own exports -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", available())  # one test per model, so xdist spreads them over the workers
def test_every_zoo_model_exports_tensorrt_ready_fp32_fp16_and_int8(tmp_path: Path, name: str) -> None:
    import torch
    from kdforge.compress.models import build
    from kdforge.export.onnx import to_onnx
    from kdforge.export.quantize import to_fp16, to_int8

    from tests.export.conftest import randomise_batchnorm

    calibration = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    model = randomise_batchnorm(build(name, 10)).eval()
    fp32 = to_onnx(model, tmp_path / f"{name}.onnx", (1, 3, 16, 16))
    files = {
        "fp32": fp32,
        "fp16": to_fp16(fp32, tmp_path / f"{name}-fp16.onnx"),
        "int8": to_int8(fp32, tmp_path / f"{name}-int8.onnx", calibration),
    }
    failures = []
    for precision, path in files.items():
        for version in (10, 11):
            bad = [p.line() for p in lint_onnx(path, "tensorrt", version) if p.severity != "info"]
            if bad:
                failures.append(f"{name} {precision} TensorRT {version}: {bad[:3]}")
    assert not failures, "\n".join(failures)


def test_tensorrt_int8_form_keeps_fp32_accuracy_and_passes_the_linter(tmp_path: Path) -> None:
    from kdforge.compress.jobs import Session, train_teacher
    from kdforge.export.deploy import load_source
    from kdforge.export.onnx import to_onnx
    from kdforge.export.quantize import onnx_top1, to_int8

    from tests.compress.conftest import tiny_config

    config = tiny_config("teacher.arch=resnet8", "teacher_train.epochs=3")
    checkpoint = train_teacher(config, tmp_path / "run", Session(progress=False)).best_path
    source = load_source(checkpoint, 64)
    fp32 = to_onnx(source.model, tmp_path / "fp32.onnx", source.shape)
    int8 = to_int8(fp32, tmp_path / "int8.onnx", source.calibration)
    reference, quantized = onnx_top1(fp32, source.test), onnx_top1(int8, source.test)
    assert reference > 50 and abs(quantized - reference) <= 1.0, (reference, quantized)
    for version in (10, 11):
        assert [p.rule for p in lint_onnx(int8, "tensorrt", version) if p.severity != "info"] == []
    graph = onnx.load(str(int8)).graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            assert inits[node.input[0]].data_type == INT8  # weights only: no int32 bias
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            assert not numpy_helper.to_array(inits[node.input[2]]).any()  # symmetric
        if node.op_type == "Conv" and len(node.input) > 2:
            assert inits[node.input[2]].data_type == FLOAT  # float bias
        if node.op_type == "Add":  # the residual input quantized, the convolution's left to fuse
            kinds = sorted(producers[i].op_type for i in node.input)
            assert kinds == ["Conv", "DequantizeLinear"], kinds
    assert {o.domain for o in onnx.load(str(int8)).opset_import} == {""}


def test_tensorrt_versions_are_declared_once_and_every_table_covers_them() -> None:
    from kdforge.export import readiness
    from kdforge.export.lint import TRT_VERSIONS
    from kdforge.export.lint.rules import TRT_LATE_OPSET_NOTE, TRT_OPSETS
    from kdforge.export.trt_versions import TRT_VERSIONS as declared

    from kdforge.cli import build_parser

    assert TRT_VERSIONS is declared and readiness.TRT_VERSIONS is declared
    assert set(TRT_OPSETS) == set(TRT_LATE_OPSET_NOTE) == set(declared)
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    check = commands.choices["check"]
    (flag,) = [a for a in check._actions if a.dest == "trt_version"]
    assert tuple(flag.choices) == declared
