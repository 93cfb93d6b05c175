"""`kdforge bench` and `kdforge predict` on a checkpoint, its ONNX file and its AOTInductor package; bad
input (wrong shape, corrupt files, unknown backend, TensorRT absent): one line, exit 2."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from kdforge.compress.config import DeployConfig
from kdforge.compress.data.digits import load_images, load_raw
from kdforge.compress.errors import UserError
from kdforge.compress.jobs import Session, train_teacher
from kdforge.export.artifact import open_artifact, preprocess
from kdforge.export.bench import TimingPolicy
from kdforge.export.deploy import deploy
from PIL import Image

from kdforge.cli import main
from tests.compress.conftest import tiny_config

TENSORRT_PRESENT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, list[Path], str]:
    out = tmp_path_factory.mktemp("bench-predict")
    checkpoint = train_teacher(
        tiny_config("teacher.arch=resnet8", "teacher_train.epochs=3"),
        out / "run",
        session=Session(progress=False),
    )
    config = DeployConfig(
        precisions=["fp32"], backends=["onnxruntime", "aoti"], batches=[1], device="cpu", native="never"
    )
    result = deploy(checkpoint.best_path, out / "deploy", config, policy=TimingPolicy(0.0, 2, 0.0))
    onnx_path, package = result["files"]["fp32"], result["artifacts"]["aoti fp32"]
    images, _ = load_raw()
    paths = []
    for i in range(4):  # digits as 8x8 grey PNGs, the way a user would save them
        path = out / f"digit{i}.png"
        Image.fromarray(np.round(images[i] / 16 * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return checkpoint.best_path, onnx_path, paths, package


def test_preprocessing_from_metadata_matches_the_training_pipeline(deployed) -> None:
    checkpoint, _, paths, _ = deployed
    artifact = open_artifact(checkpoint)
    got = preprocess(paths, artifact)
    images, _ = load_images(artifact.input_shape[-1])
    mean = torch.tensor(artifact.mean).view(1, -1, 1, 1)
    std = torch.tensor(artifact.std).view(1, -1, 1, 1)
    expected = (images[:4] - mean) / std
    torch.testing.assert_close(got, expected, rtol=0, atol=1.0 / 255 / min(artifact.std) + 1e-6)


def test_predict_gives_the_same_answer_from_the_checkpoint_onnx_and_pt2(deployed, capsys) -> None:
    checkpoint, onnx_path, paths, package = deployed
    argv = [str(p) for p in paths]
    assert main(["predict", checkpoint, *argv, "--top", "2"]) == 0
    from_checkpoint = capsys.readouterr().out.strip().splitlines()
    assert main(["predict", onnx_path, *argv, "--top", "2"]) == 0
    from_onnx = capsys.readouterr().out.strip().splitlines()
    assert len(from_checkpoint) == 4
    top1 = [line.split(": ")[1].split()[0] for line in from_checkpoint]
    assert top1 == [line.split(": ")[1].split()[0] for line in from_onnx]
    assert main(["predict", package, *argv, "--top", "2"]) == 0
    from_package = capsys.readouterr().out.strip().splitlines()
    assert top1 == [line.split(": ")[1].split()[0] for line in from_package]
    artifact = open_artifact(checkpoint)
    logits = artifact.run(preprocess(paths, artifact))
    assert top1 == [artifact.classes[i] for i in logits.argmax(1)]
    compiled = open_artifact(package)
    assert compiled.kind == "aoti" and compiled.input_shape == artifact.input_shape
    np.testing.assert_allclose(compiled.run(preprocess(paths, compiled)), logits, rtol=1e-4, atol=1e-4)


def test_bench_times_a_checkpoint_on_both_backends(deployed, capsys) -> None:
    checkpoint, _, _, _ = deployed
    argv = [
        "bench",
        checkpoint,
        "--backends",
        "torch,onnxruntime",
        "--batches",
        "1,2",
        "--min-duration",
        "0.02",
    ]
    assert main(argv) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert sorted((r.split()[0], r.split()[1]) for r in rows) == [
        ("onnxruntime", "1"),
        ("onnxruntime", "2"),
        ("torch", "1"),
        ("torch", "2"),
    ]


def test_bench_runs_the_aoti_package_alone_by_default(deployed, capsys) -> None:
    _, _, _, package = deployed
    argv = ["bench", package, "--batches", "1,3", "--min-duration", "0.02", "--native", "never"]
    assert main(argv) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert [(r.split()[0], r.split()[1]) for r in rows] == [("aoti", "1"), ("aoti", "3")]


def test_bad_bench_and_predict_input_is_one_line(deployed, tmp_path: Path, capsys) -> None:
    from kdforge.export.sidecar import write_sidecar

    checkpoint, onnx_path, paths, package = deployed
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00garbage")
    bare_engine = tmp_path / "bare.engine"
    bare_engine.write_bytes(b"\x00")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine bytes")
    meta = {
        "kind": "tensorrt-engine",
        "classes": ["0"],
        "mean": [0.0],
        "std": [1.0],
        "input_shape": [3, 16, 16],
    }
    write_sidecar(engine, meta)
    truncated_engine = tmp_path / "truncated.engine"
    truncated_engine.write_bytes(b"engine bytes")
    write_sidecar(truncated_engine, meta)
    truncated_engine.write_bytes(b"engine by")
    from kdforge.export.onnx import to_onnx

    not_an_image = to_onnx(torch.nn.Linear(12, 3), tmp_path / "linear.onnx", (1, 12))
    truncated_package = tmp_path / "truncated.pt2"
    truncated_package.write_bytes(Path(package).read_bytes())
    Path(str(truncated_package) + ".json").write_text(Path(package + ".json").read_text())
    with open(truncated_package, "r+b") as handle:
        handle.truncate(1000)
    cases = [
        (
            ["bench", onnx_path, "--input-shape", "3,64,64"],
            "takes input (C, H, W) = (3, 16, 16), not (3, 64, 64)",
        ),
        (["bench", onnx_path, "--backends", "tensorrtt"], "unknown backend 'tensorrtt'"),
        (["bench", onnx_path, "--backends", "tensorrt"], "TensorRT is not installed: pip install"),
        (["bench", onnx_path, "--backends", "torch"], "backend torch cannot run"),
        (["bench", str(corrupt)], "is not a readable ONNX file"),
        (
            ["bench", str(not_an_image)],
            "expected an (N, C, H, W) image input with fixed C, H, W, got ['batch', 12]",
        ),
        (["bench", str(bare_engine)], "has no sidecar bare.engine.json"),
        (["bench", str(truncated_engine)], "truncated.engine is corrupt"),
        (["predict", str(truncated_engine), str(paths[0])], "truncated.engine is corrupt"),
        (["bench", str(engine)], "TensorRT is not installed: pip install"),
        (["bench", str(truncated_package)], "truncated.pt2 is corrupt"),
        (["bench", package, "--batches", "2000"], "compiled for batches 1-1024, not 2000"),
        (["predict", checkpoint, str(corrupt)], "is not a readable image file"),
        (["predict", checkpoint, str(paths[0]), "--top", "0"], "--top must be >= 1"),
    ]
    if TENSORRT_PRESENT:  # those cases check the message of a machine without TensorRT
        cases = [(argv, message) for argv, message in cases if "TensorRT is not installed" not in message]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err, (argv, err)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([], "auto"), (["--native"], "always"), (["--native", "never"], "never"), (["--native=auto"], "auto")],
)
def test_bench_native_takes_deploys_auto_always_never_and_alone_means_always(flags, expected) -> None:
    from kdforge.cli import BENCH_OPTIONS, _from_flags, build_parser

    args = build_parser().parse_args(["bench", "m.onnx", *flags, "--backends", "onnxruntime"])
    options = _from_flags(args, DeployConfig, BENCH_OPTIONS)
    assert options.native == expected and options.backends == ["onnxruntime"]


def test_bench_flags_are_deploys_declarations(capsys) -> None:
    for argv, message in [
        (["bench", "m.onnx", "--native", "off"], "--native: 'off' is not one of"),
        (["bench", "m.onnx", "--backends", ","], "--backends: "),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err, (argv, err)


def test_bench_native_auto_runs_only_a_built_runner_with_the_artifacts_backend(monkeypatch) -> None:
    import kdforge.export.native as native
    from kdforge.export.bench import run
    from kdforge.export.native import NativeBuild

    def built(*backends: str):
        return lambda *args, **kwargs: NativeBuild(Path("kdforge-runner"), backends)

    def absent(*args, **kwargs):
        raise UserError("kdforge-runner does not exist: build it with `kdforge build-native`")

    onnx, pt2 = types.SimpleNamespace(kind="onnx"), types.SimpleNamespace(kind="aoti")
    checkpoint = types.SimpleNamespace(kind="checkpoint")
    monkeypatch.setattr(native, "find_runner", absent)
    assert not run._wants_native("auto", pt2, {}) and run._wants_native("always", pt2, {})
    monkeypatch.setattr(native, "find_runner", built("aoti"))
    assert run._wants_native("auto", pt2, {}) and not run._wants_native("auto", onnx, {})
    assert not run._wants_native("auto", checkpoint, {})  # no .pt2 compiled by the aoti backend
    assert not run._wants_native("never", pt2, {})
