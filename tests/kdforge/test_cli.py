"""The `kdforge` command: bad input is one line and exit 2; the pipeline runs, resumes and evaluates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compress.models import build
from compress.train.checkpoint import save_checkpoint
from kdforge.cli import main
from tests.compress.conftest import TINY

REPO = Path(__file__).resolve().parents[2]
DIGITS = str(REPO / "recipes" / "digits.yaml")


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert "Traceback" not in err
    assert err.startswith("kdforge: error: ")
    return err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["teacher", DIGITS, "--set", "teacher_train.epohcs=3"], "did you mean 'epochs'"),
        (["teacher", DIGITS, "--set", "data.name=cifar100", "--set", "data.root=/no/such/dir"], "CIFAR-100"),
        (["teacher", "/no/such/recipe.yaml"], "not found"),
        (["teacher", DIGITS, "--set", "teacher.arch=resnet9000"], "resnet"),
        (["compress", DIGITS, "--method", "dkdd", "--out", "/tmp/x"], "unknown method"),
        (["frobnicate"], "invalid choice"),
        (["eval", "/no/such/checkpoint.safetensors"], "not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str, capsys, tmp_path: Path) -> None:
    if "--out" not in argv and argv[0] != "eval":
        argv = [*argv, "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert message in _error_line(capsys)


def test_teacher_checkpoint_with_other_classes_is_refused(tmp_path: Path, capsys) -> None:
    five = save_checkpoint(
        tmp_path / "ckpt",
        "best",
        build("resnet8", 5),
        {"role": "teacher", "model": {"arch": "resnet8", "options": {}, "num_classes": 5}},
    )
    code = main(["compress", DIGITS, "--teacher", str(five), "--out", str(tmp_path / "s"), *_sets(*TINY)])
    assert code == 2
    assert "predicts 5 classes but the data set has 10" in _error_line(capsys)
    assert not (tmp_path / "s" / "checkpoints").exists()


def test_the_installed_command_prints_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kdforge", "run", DIGITS, "--set", "data.batch_size=-3"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "kdforge: error: data.batch_size: must be > 0, got -3"


def test_models_lists_the_zoo(capsys) -> None:
    assert main(["models"]) == 0
    names = capsys.readouterr().out.split()
    assert {"resnet8x4", "resnet32x4", "wrn_40_2", "vgg13", "mobilenetv2", "shufflenetv2"} <= set(names)


def test_run_end_to_end_then_refuse_then_resume_then_eval(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    sets = _sets(*TINY, "teacher_train.epochs=2", "student_train.epochs=1")
    assert main(["run", DIGITS, "--out", str(out), "--no-progress", *sets]) == 0
    printed = capsys.readouterr().out
    for needle in ("teacher", "student", "resnet14", "resnet8", " kd ", " ce "):
        assert needle in printed
    results = json.loads((out / "results.json").read_text())
    assert [(r["stage"], r["method"]) for r in results["rows"]] == [
        ("teacher", "ce"),
        ("student", "ce"),
        ("student", "kd"),
    ]
    assert (out / "results.md").read_text().count("| student |") == 2

    assert main(["run", DIGITS, "--out", str(out), *sets]) == 2
    assert "already holds a run" in _error_line(capsys)

    assert main(["run", DIGITS, "--out", str(out), "--resume", "--no-progress", *sets]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["rows"] == results["rows"], "a finished run is reused, not retrained"
    capsys.readouterr()

    kd = out / "student-kd"
    assert main(["eval", str(kd / "checkpoints" / "best.safetensors")]) == 0
    line = capsys.readouterr().out
    expected = json.loads((kd / "result.json").read_text())["test_top1"]
    assert f"top-1 {expected:.2f}%" in line
