"""ONNX export (parity in ONNX Runtime, metadata, dynamic batch), fp16 / int8 Q/DQ variants, the latency
profiler's statistics, and the deploy report on a small trained digits network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from kdforge.compress.config import DeployConfig
from kdforge.compress.errors import UserError
from kdforge.compress.jobs import Session, train_teacher
from kdforge.compress.models import build
from kdforge.compress.reparam import expand
from kdforge.export.bench import OnnxRuntime, TimingPolicy, measure, percentile, summarize
from kdforge.export.deploy import deploy, recorded_options
from kdforge.export.onnx import check_parity, onnx_metadata, ort_session, to_onnx

from tests.compress.conftest import tiny_config
from tests.export.conftest import randomise_batchnorm


# wrn_16_2: pre-activation blocks (BNs after an addition stay BNs); vgg8: conv biases folded with their BN
@pytest.mark.parametrize("name", ["resnet8", "mobilenetv2", "wrn_16_2", "vgg8"])
def test_onnx_matches_pytorch_at_batch_1_and_8_and_keeps_a_dynamic_batch(name: str, tmp_path: Path) -> None:
    model = randomise_batchnorm(build(name, 10)).eval()
    path = to_onnx(
        model, tmp_path / "m.onnx", (1, 3, 16, 16), metadata={"classes": ["a", "b"], "mean": [0.5]}
    )
    results = check_parity(model, path, torch.randn(8, 3, 16, 16))
    assert [r.batch for r in results] == [1, 8] and all(r.top1_agreement == 1.0 for r in results)
    session = ort_session(path)
    assert session.run(None, {"input": np.zeros((5, 3, 16, 16), np.float32)})[0].shape == (5, 10)
    assert onnx_metadata(path) == {"classes": ["a", "b"], "mean": [0.5]}
    assert not list(tmp_path.glob("*.data")), "weights live in the one file"


def test_export_merges_a_multi_branch_network_first(tmp_path: Path) -> None:
    multi = randomise_batchnorm(expand(build("resnet8", 10))).eval()
    path = to_onnx(multi, tmp_path / "m.onnx", (1, 3, 16, 16))
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "BatchNormalization" not in ops
    check_parity(multi, path, torch.randn(8, 3, 16, 16))


def test_a_failed_onnx_write_keeps_the_previous_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    path = to_onnx(build("resnet8", num_classes=10).eval(), tmp_path / "m.onnx", (1, 3, 16, 16))
    before = path.read_bytes()

    real_save = onnx.save

    def disk_fills_midway(graph: onnx.ModelProto, target: str, *args, **kwargs) -> None:
        if not str(target).endswith(".tmp"):  # the exporter's own scratch file is written normally
            return real_save(graph, target, *args, **kwargs)
        Path(target).write_bytes(graph.SerializeToString()[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save", disk_fills_midway)
    with pytest.raises(OSError, match="No space left"):
        to_onnx(build("resnet14", num_classes=10).eval(), path, (1, 3, 16, 16))
    assert path.read_bytes() == before, "the old file is untouched"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"], "no partial or temporary file is left"


def test_parity_failure_names_the_worst_output(tmp_path: Path) -> None:
    torch.manual_seed(0)
    exported, other = build("resnet8", 10).eval(), randomise_batchnorm(build("resnet8", 10)).eval()
    path = to_onnx(exported, tmp_path / "m.onnx", (1, 3, 16, 16))
    with pytest.raises(UserError, match=r"ONNX parity failed at batch 1: output \(0, \d\) is"):
        check_parity(other, path, torch.randn(8, 3, 16, 16))
    with pytest.raises(UserError, match="opset 12 is not supported"):
        to_onnx(exported, tmp_path / "x.onnx", opset=12)


def test_fixed_batch_onnx_refuses_another_batch_in_one_line(tmp_path: Path) -> None:
    path = to_onnx(build("resnet8", 10), tmp_path / "m.onnx", (2, 3, 16, 16), dynamic_batch=False)
    with pytest.raises(UserError, match="has a fixed batch of 2"):
        OnnxRuntime(path).prepare(4)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(UserError, match="ONNX Runtime cannot load"):
        OnnxRuntime(broken)


def test_latency_statistics_against_numpy() -> None:
    rng = np.random.default_rng(0)
    samples = list(rng.gamma(4.0, 0.5, size=257))
    stats = summarize(samples, batch=8, page_faults=514)
    for q, value in ((50, stats.p50), (90, stats.p90), (95, stats.p95), (99, stats.p99)):
        assert value == pytest.approx(float(np.percentile(samples, q)))
    assert stats.mean == pytest.approx(float(np.mean(samples)))
    assert stats.cov == pytest.approx(float(np.std(samples) / np.mean(samples)))
    assert stats.throughput == pytest.approx(8000.0 / stats.p50)
    assert stats.page_faults_per_run == 2.0  # 514 faults over 257 calls
    assert percentile([3.0], 99) == 3.0


def test_measure_runs_at_least_the_minimum_iterations() -> None:
    calls = []
    stats = measure(
        lambda: calls.append(1), 1, TimingPolicy(warmup_s=0.0, min_iterations=7, min_duration_s=0.0)
    )
    assert stats.iterations == 7 and len(calls) >= 7


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("deploy-teacher")
    config = tiny_config("teacher.arch=resnet8", "teacher_train.epochs=3")
    return train_teacher(config, out, Session(progress=False)).best_path


def test_deploy_builds_every_precision_and_reports_accuracy_and_latency(trained: str, tmp_path: Path) -> None:
    config = DeployConfig(backends=["torch", "onnxruntime"], batches=[1, 4])
    policy = TimingPolicy(warmup_s=0.01, min_iterations=5, min_duration_s=0.0)
    result = deploy(trained, tmp_path, config, policy=policy)
    accuracy = result["accuracy"]
    assert accuracy["onnxruntime fp32"] == pytest.approx(accuracy["torch fp32"])
    assert abs(accuracy["onnxruntime fp16"] - accuracy["torch fp32"]) <= 1.0
    assert abs(accuracy["onnxruntime int8"] - accuracy["torch fp32"]) <= 3.0
    assert abs(accuracy["onnxruntime int8-u8"] - accuracy["torch fp32"]) <= 3.0
    half = onnx.load(result["files"]["fp16"])
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)
    int8 = onnx.load(result["files"]["int8"])
    ops = {node.op_type for node in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    zero_points = {t.data_type for t in int8.graph.initializer if t.name.endswith("zero_point")}
    assert onnx.TensorProto.INT8 in zero_points and onnx.TensorProto.UINT8 not in zero_points, (
        "TensorRT's form"
    )
    u8 = onnx.load(result["files"]["int8-u8"])
    from onnx import numpy_helper

    u8_weights = [
        numpy_helper.to_array(t) for t in u8.graph.initializer if t.data_type == onnx.TensorProto.INT8
    ]
    assert u8_weights and max(int(abs(w.astype(int)).max()) for w in u8_weights) <= 64, (
        "7-bit weights: u8 x s8 on CPUs without VNNI saturates with full 8-bit weights"
    )
    assert onnx.TensorProto.UINT8 in {
        t.data_type for t in u8.graph.initializer if t.name.endswith("zero_point")
    }
    assert onnx_metadata(result["files"]["int8"])["classes"] == [str(i) for i in range(10)]
    rows = {(r["backend"], r["precision"], r["batch"]) for r in result["latency"]}
    assert rows == {("torch", "fp32", 1), ("torch", "fp32", 4)} | {
        ("onnxruntime", p, b) for p in ("fp32", "fp16", "int8", "int8-u8") for b in (1, 4)
    }
    assert all(r["p50"] <= r["p90"] <= r["p99"] for r in result["latency"])
    assert "| onnxruntime int8 |" in (tmp_path / "deploy.md").read_text()
    assert (tmp_path / "deploy.csv").read_text().count("\n") == 1 + len(rows)
    # the files keep their fields: deploy.json's keys, deploy.csv's columns, deploy.md's reproduce line
    record = json.loads((tmp_path / "deploy.json").read_text())
    assert record == json.loads(json.dumps(result))
    assert set(record) == {
        "checkpoint", "checkpoint_sha256", "arch", "input_shape", "files", "artifacts", "parity", "readiness",
        "accuracy", "latency", "options", "calibration_images_used", "environment", "seconds",
    }  # fmt: skip
    # every file meant for TensorRT passes its lint for 10 and 11; the u8 form is checked for ONNX Runtime
    ready = record["readiness"]
    assert {p: (e["target"], e["ready"]) for p, e in ready.items()} == {
        "fp32": ("tensorrt", True), "fp16": ("tensorrt", True), "int8": ("tensorrt", True),
        "int8-u8": ("onnxruntime", True),
    }  # fmt: skip
    assert ready["int8"]["checked"] == ["tensorrt 10", "tensorrt 11"]
    assert (
        f"| {Path(result['files']['int8']).name} | tensorrt 10 and tensorrt 11 | yes | - |"
        in (tmp_path / "deploy.md").read_text()
    )
    assert record["options"] == recorded_options(config, policy)
    options = record["options"]
    assert options["backends"] == ["torch", "onnxruntime"] and options["batches"] == [1, 4]
    assert options["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # auto, as it resolved
    assert record["artifacts"] == {f"onnx {p}": f for p, f in record["files"].items()}
    header = (tmp_path / "deploy.csv").read_text().splitlines()[0].split(",")
    assert header == [
        "backend", "precision", "batch", "p50", "p90", "p95", "p99", "mean", "std", "cov", "throughput",
        "page_faults_per_run", "size_mb", "copies_included",
    ]  # fmt: skip
    assert (
        f"Reproduce: `kdforge deploy {trained} --precision fp32,fp16,int8,int8-u8 "
        f"--backends torch,onnxruntime --batches 1,4 --device {options['device']}`"
        in (tmp_path / "deploy.md").read_text()
    )


def test_interleaved_measurement_rotates_and_times_every_call_alike() -> None:
    from kdforge.export.bench import measure_interleaved

    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    policy = TimingPolicy(warmup_s=0.0, min_iterations=4, min_duration_s=0.0)
    stats = measure_interleaved(calls, 2, policy)
    assert {name: s.iterations for name, s in stats.items()} == {"a": 4, "b": 4, "c": 4}
    timed = order[-12:]
    assert [timed[i * 3] for i in range(4)] == ["a", "b", "c", "a"], "each round starts one later"
