"""`kdforge doctor` lists every backend; `kdforge deploy` refuses bad input in one line (exit 2)."""

from __future__ import annotations

import pytest

from kdforge.cli import main


def test_doctor_reports_each_backend_on_one_line(capsys) -> None:
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split()[1] for line in lines]
    assert names == ["torch", "triton", "onnxruntime", "tensorrt", "aotinductor", "cmake"]
    assert lines[0].startswith("ok ") and "onnxruntime" in lines[2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["deploy", "/no/such.safetensors"], "not found"),
        (["deploy", "/no/such.safetensors", "--backends", "tensorrt"], "unknown backend 'tensorrt'"),
        (["deploy", "/no/such.safetensors", "--precision", "int4"], "unknown precision 'int4'"),
        (["deploy", "/no/such.safetensors", "--batches", "1,x"], "--batches: expected integers"),
    ],
)
def test_deploy_mistakes_are_one_line(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err
