"""`kdforge eval` takes what users have: a state dict of the recipe's network scores exactly like the same
network in a kdforge checkpoint, an ONNX file kdforge exported scores like its network in PyTorch (with
the preprocessing stored in the file), and any other file is one line saying what eval takes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from kdforge.compress.config import RunConfig, load_recipe
from kdforge.compress.data import DataBundle, build_data
from kdforge.compress.evaluation import evaluate_model
from kdforge.compress.models import build
from kdforge.compress.train.checkpoint import save_checkpoint
from kdforge.compress.train.meta import network_meta
from kdforge.compress.train.metrics import evaluate
from kdforge.export.onnx import to_onnx
from torch import nn

from kdforge.cli import main
from kdforge.pipeline import evaluate_any
from tests.export.conftest import randomise_batchnorm

REPO = Path(__file__).resolve().parents[2]
DIGITS = str(REPO / "recipes" / "digits.yaml")
CPU = ["--set", "device=cpu"]


@pytest.fixture(scope="module")
def digits() -> tuple[RunConfig, DataBundle]:
    config = load_recipe(DIGITS, ["device=cpu"])
    return config, build_data(config.data)


def _network(arch: str, data: DataBundle, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomise_batchnorm(build(arch, data.num_classes), seed=seed).eval()


def _printed(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.split(": ", 1)[1]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_a_state_dict_evaluates_like_the_same_network_in_a_checkpoint(tmp_path: Path, capsys, digits) -> None:
    config, data = digits
    student = _network(config.student.arch, data)
    torch.save(student.state_dict(), tmp_path / "student.pth")
    meta = network_meta(config.student, data, "student", "ce", config)
    checkpoint = save_checkpoint(tmp_path / "run", "best", student, meta)
    assert main(["eval", str(checkpoint), *CPU]) == 0
    from_checkpoint = _printed(capsys)
    assert main(["eval", str(tmp_path / "student.pth"), "--recipe", DIGITS, *CPU]) == 0
    assert _printed(capsys) == from_checkpoint
    reference = evaluate(student, data.loader("test", seed=config.seed), torch.device("cpu"))
    assert f"top-1 {reference['top1']:.2f}%" in from_checkpoint
    assert f"loss {reference['loss']:.4f}" in from_checkpoint


def test_role_teacher_reads_the_recipes_teacher_architecture(tmp_path: Path, capsys, digits) -> None:
    config, data = digits
    teacher = _network(config.teacher.arch, data, seed=1)
    path = tmp_path / "teacher.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in teacher.state_dict().items()}}, path)
    assert main(["eval", str(path), "--recipe", DIGITS, "--role", "teacher", *CPU]) == 0
    reference = evaluate(teacher, data.loader("test", seed=config.seed), torch.device("cpu"))
    assert f"loss {reference['loss']:.4f}" in _printed(capsys)
    assert main(["eval", str(path), "--recipe", DIGITS, *CPU]) == 2  # the student's arch by default
    assert f"does not fit {config.student.arch}" in _error_line(capsys)


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_state_dict_is_never_unpickled_beyond_tensors(tmp_path: Path, capsys) -> None:
    path, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    torch.save({"weight": _Payload(marker)}, path)
    assert main(["eval", str(path), "--recipe", DIGITS, *CPU]) == 2
    assert "refused without running anything" in _error_line(capsys)
    assert not marker.exists()


def _describe(data: DataBundle, **changes: object) -> dict[str, object]:
    found = {
        "classes": list(data.classes),
        "mean": list(data.mean),
        "std": list(data.std),
        "input_shape": list(data.input_shape),
    }
    return {**found, **changes}


def test_an_onnx_file_evaluates_like_its_network_in_pytorch(tmp_path: Path, digits) -> None:
    config, data = digits
    student = _network(config.student.arch, data)
    path = to_onnx(student, tmp_path / "s.onnx", (1, *data.input_shape), metadata=_describe(data))
    got, want = evaluate_any(path, config), evaluate_model(student, config, "test", data)
    assert got["count"] == want["count"]
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-4)
    assert got["top1"] == pytest.approx(want["top1"], abs=100 / want["count"] + 1e-9)  # a tie may flip


def test_an_onnx_file_is_fed_the_input_size_and_normalisation_stored_in_it(tmp_path: Path, digits) -> None:
    config, data = digits
    student = _network(config.student.arch, data, seed=2)
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]
    meta = _describe(data, mean=mean, std=std, input_shape=[3, 12, 12])
    path = to_onnx(student, tmp_path / "s.onnx", (1, 3, 12, 12), metadata=meta)
    got = evaluate_any(path, config, "val")
    small = build_data(dataclasses.replace(config.data, image_size=12))  # the reference, built by hand
    data_mean, data_std = (torch.tensor(v).view(1, 3, 1, 1) for v in (small.mean, small.std))
    file_mean, file_std = (torch.tensor(v).view(1, 3, 1, 1) for v in (mean, std))

    def reference(images: torch.Tensor) -> torch.Tensor:
        return student(((images * data_std + data_mean) - file_mean) / file_std)

    want = evaluate(reference, small.loader("val", seed=config.seed), torch.device("cpu"))
    assert got["count"] == want["count"]
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-4)


def test_a_torch_export_program_evaluates_like_its_network(tmp_path: Path, capsys, digits) -> None:
    config, data = digits
    student = _network(config.student.arch, data, seed=3)
    example = (torch.zeros(2, *data.input_shape),)
    program = torch.export.export(student, example, dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path / "student.pt2"
    torch.export.save(program, str(path))
    assert main(["eval", str(path)]) == 2
    assert "pass --recipe for the data" in _error_line(capsys)
    assert main(["eval", str(path), "--recipe", DIGITS, *CPU]) == 0
    reference = evaluate(student, data.loader("test", seed=config.seed), torch.device("cpu"))
    assert f"loss {reference['loss']:.4f}" in _printed(capsys)


def test_an_onnx_file_without_a_recipe_asks_for_the_data(tmp_path: Path, capsys, digits) -> None:
    config, data = digits
    path = to_onnx(_network(config.student.arch, data), tmp_path / "s.onnx", (1, *data.input_shape))
    assert main(["eval", str(path)]) == 2
    assert "pass --recipe for the data" in _error_line(capsys)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.txt", b"not a network at all, just words", "kdforge eval takes a kdforge checkpoint"),
        ("weights.pth", None, "a state dict names no architecture or data set: pass --recipe"),
    ],
)
def test_a_file_eval_cannot_use_says_what_eval_takes(
    tmp_path: Path, capsys, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is None:
        torch.save(build("resnet8", 10).state_dict(), path)
    else:
        path.write_bytes(content)
    assert main(["eval", str(path)]) == 2
    line = _error_line(capsys)
    assert message in line and "header too large" not in line
