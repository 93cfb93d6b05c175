"""`kdforge bench` and `kdforge predict` on a checkpoint and on its ONNX file; bad input: one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compress.data.digits import load_images, load_raw
from compress.jobs import train_teacher
from export.artifact import open_artifact, preprocess
from export.bench import TimingPolicy
from export.deploy import DeployOptions, deploy
from kdforge.cli import main
from tests.compress.conftest import tiny_config


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, list[Path]]:
    out = tmp_path_factory.mktemp("bench-predict")
    checkpoint = train_teacher(
        tiny_config("teacher.arch=resnet8", "teacher_train.epochs=3"), out / "run", progress=False
    )
    options = DeployOptions(
        precisions=("fp32",), backends=("onnxruntime",), batches=(1,), policy=TimingPolicy(0.0, 2, 0.0)
    )
    onnx_path = deploy(checkpoint.best_path, out / "deploy", options)["files"]["fp32"]
    images, _ = load_raw()
    paths = []
    for i in range(4):  # digits as 8x8 grey PNGs, the way a user would save them
        path = out / f"digit{i}.png"
        Image.fromarray(np.round(images[i] / 16 * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return checkpoint.best_path, onnx_path, paths


def test_preprocessing_from_metadata_matches_the_training_pipeline(deployed) -> None:
    checkpoint, _, paths = deployed
    artifact = open_artifact(checkpoint)
    got = preprocess(paths, artifact)
    images, _ = load_images(artifact.input_shape[-1])
    mean = torch.tensor(artifact.mean).view(1, -1, 1, 1)
    std = torch.tensor(artifact.std).view(1, -1, 1, 1)
    expected = (images[:4] - mean) / std
    torch.testing.assert_close(got, expected, rtol=0, atol=1.0 / 255 / min(artifact.std) + 1e-6)


def test_predict_gives_the_same_answer_from_the_checkpoint_and_from_onnx(deployed, capsys) -> None:
    checkpoint, onnx_path, paths = deployed
    argv = [str(p) for p in paths]
    assert main(["predict", checkpoint, *argv, "--top", "2"]) == 0
    from_checkpoint = capsys.readouterr().out.strip().splitlines()
    assert main(["predict", onnx_path, *argv, "--top", "2"]) == 0
    from_onnx = capsys.readouterr().out.strip().splitlines()
    assert len(from_checkpoint) == 4
    top1 = [line.split(": ")[1].split()[0] for line in from_checkpoint]
    assert top1 == [line.split(": ")[1].split()[0] for line in from_onnx]
    artifact = open_artifact(checkpoint)
    logits = artifact.run(preprocess(paths, artifact))
    assert top1 == [artifact.classes[i] for i in logits.argmax(1)]


def test_bench_times_a_checkpoint_on_both_backends(deployed, capsys) -> None:
    checkpoint, _, _ = deployed
    assert main(["bench", checkpoint, "--batches", "1,2", "--min-duration", "0.02"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert sorted((r.split()[0], r.split()[1]) for r in rows) == [
        ("onnxruntime", "1"),
        ("onnxruntime", "2"),
        ("torch", "1"),
        ("torch", "2"),
    ]


def test_bad_bench_and_predict_input_is_one_line(deployed, tmp_path: Path, capsys) -> None:
    checkpoint, onnx_path, paths = deployed
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00garbage")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00")
    cases = [
        (
            ["bench", onnx_path, "--input-shape", "3,64,64"],
            "takes input (C, H, W) = (3, 16, 16), not (3, 64, 64)",
        ),
        (["bench", onnx_path, "--backends", "tensorrt"], "unknown backend 'tensorrt'"),
        (["bench", onnx_path, "--backends", "torch"], "backend torch needs a kdforge checkpoint"),
        (["bench", str(corrupt)], "is not a readable ONNX file"),
        (["bench", str(engine)], "TensorRT engines arrive with the TensorRT layer"),
        (["predict", checkpoint, str(corrupt)], "is not a readable image file"),
        (["predict", checkpoint, str(paths[0]), "--top", "0"], "--top must be >= 1"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err, (argv, err)
