"""`kdforge doctor` lists every backend; `kdforge deploy` refuses bad input in one line (exit 2)."""

from __future__ import annotations

import importlib.util

import pytest

from kdforge.cli import main


def test_doctor_reports_each_backend_on_one_line(capsys) -> None:
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split()[1] for line in lines]
    assert names == ["torch", "triton", "onnxruntime", "tensorrt", "aotinductor", "cmake", "backends"]
    assert lines[0].startswith("ok ") and "onnxruntime" in lines[2]
    from kdforge.export.bench.available import available_backends

    assert "deploy/bench run here on " + ", ".join(available_backends()) in lines[-1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["deploy", "/no/such.safetensors"], "not found"),
        (["deploy", "/no/such.safetensors", "--backends", "tensorrtt"], "unknown backend 'tensorrtt'"),
        pytest.param(
            ["deploy", "/no/such.safetensors", "--backends", "tensorrt"],
            "TensorRT is not installed",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("tensorrt") is not None, reason="checks a machine without TensorRT"
            ),
        ),
        (["deploy", "/no/such.safetensors", "--min-duration", "0"], "--min-duration must be > 0"),
        (["deploy", "/no/such.safetensors", "--precision", "int4"], "unknown precision 'int4'"),
        (["deploy", "/no/such.safetensors", "--batches", "1,x"], "--batches: expected integers"),
    ],
)
def test_deploy_mistakes_are_one_line(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err
