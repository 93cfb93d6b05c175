"""`kdforge doctor` lists every backend; `kdforge deploy` refuses bad input in one line (exit 2); its flags
are DeployConfig's fields (defaults, help, validation and messages)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util

import pytest
import torch
from kdforge.compress.config import DeployConfig, load_recipe
from kdforge.compress.errors import UserError
from kdforge.export.deploy import deploy_flags, recorded_options

from kdforge.cli import BENCH_OPTIONS, DEPLOY_OPTIONS, _from_flags, build_parser, main


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
        (["deploy", "/no/such.safetensors", "--min-duration", "0"], "--min-duration: must be > 0, got 0.0"),
        (["deploy", "/no/such.safetensors", "--precision", "int4"], "--precision[0]: 'int4' is not one of"),
        (
            ["deploy", "/no/such.safetensors", "--batches", "1,x"],
            "--batches[1]: expected an integer, got 'x'",
        ),
        (["deploy", "/no/such.safetensors", "--batches", ","], "--batches: give at least 1 value(s), got []"),
        (["deploy", "/no/such.safetensors", "--native", "off"], "--native: 'off' is not one of"),
        (["bench", "/no/such.onnx", "--min-duration", "-1"], "--min-duration: must be > 0, got -1.0"),
        (["bench", "/no/such.onnx", "--batches", "0"], "--batches[0]: must be > 0, got 0"),
    ],
)
def test_deploy_mistakes_are_one_line(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


DEPLOY = DeployConfig()


def _deploy_args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["deploy", "model.safetensors", *flags])


def test_deploy_flag_defaults_are_deploy_config_defaults() -> None:
    """The flags are built from DeployConfig's fields, so their defaults (and bench's) cannot drift."""
    args = _deploy_args()
    declared = {
        f.name: getattr(DEPLOY, f.name) for f in dataclasses.fields(DeployConfig) if f.name != "enabled"
    }
    assert {name: getattr(args, name) for name in declared} == declared
    assert _from_flags(args, DeployConfig, DEPLOY_OPTIONS) == DEPLOY
    bench = build_parser().parse_args(["bench", "model.onnx"])
    assert {name: getattr(bench, name) for name in BENCH_OPTIONS} == {n: declared[n] for n in BENCH_OPTIONS}


def test_deploy_help_comes_from_the_fields_and_keeps_the_flag_names(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["deploy", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--precision", "--backends", "--batches", "--device", "--cuda-graph", "--native",
                 "--min-duration", "--calibration", "--calibration-method"):  # fmt: skip
        assert f" {flag} " in text
    for f in dataclasses.fields(DeployConfig):
        if "flag" in f.metadata:
            assert " ".join(f.metadata["help"].split()) in text
    assert "--batches BATCHES comma list of batch sizes (default: 1,64)" in text
    assert "--native {auto,always,never}" in text and "(default: minmax)" in text


def test_flags_set_every_deploy_option() -> None:
    args = _deploy_args(
        "--precision", "fp32,int8", "--backends", "torch", "--batches", "2,8", "--device", "cpu",
        "--cuda-graph", "--native", "never", "--min-duration", "0.25", "--calibration", "32",
        "--calibration-method", "entropy",
    )  # fmt: skip
    assert _from_flags(args, DeployConfig, DEPLOY_OPTIONS) == DeployConfig(
        precisions=["fp32", "int8"],
        backends=["torch"],
        batches=[2, 8],
        device="cpu",
        cuda_graph=True,
        native="never",
        min_duration_s=0.25,
        calibration_images=32,
        calibration_method="entropy",
    )


@pytest.mark.parametrize(
    ("flags", "override"),
    [
        (["--min-duration", "0"], "deploy.min_duration_s=0"),
        (["--min-duration", "nan"], "deploy.min_duration_s=nan"),
        (["--batches", "1,x"], "deploy.batches=[1,x]"),
        (["--batches", "0,4"], "deploy.batches=[0,4]"),
        (["--precision", "int4"], "deploy.precisions=[int4]"),
        (["--precision", ""], "deploy.precisions=[]"),
        (["--calibration", "0"], "deploy.calibration_images=0"),
        (["--calibration", "2.5"], "deploy.calibration_images=2.5"),
        (["--calibration-method", "kl"], "deploy.calibration_method=kl"),
        (["--device", "gpu"], "deploy.device=gpu"),
        (["--native", "sometimes"], "deploy.native=sometimes"),
    ],
)
def test_a_bad_flag_reads_like_the_same_bad_recipe_value(flags: list[str], override: str, capsys) -> None:
    """Flags go through the recipe's validation: the same one-line message, naming the flag instead."""
    with pytest.raises(UserError) as recipe:
        load_recipe(None, [override])
    key = override.split("=")[0]
    assert main(["deploy", "/no/such.safetensors", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err == f"kdforge: error: {flags[0]}" + str(recipe.value).removeprefix(key)


def test_the_reproduce_flags_parse_back_to_the_same_options() -> None:
    config = DeployConfig(
        precisions=["fp16"], backends=["torch"], batches=[4], device="cpu", cuda_graph=True, native="never",
        min_duration_s=0.5, calibration_images=16, calibration_method="percentile",
    )  # fmt: skip
    flags = deploy_flags(recorded_options(config))
    assert _from_flags(_deploy_args(*flags.split()), DeployConfig, DEPLOY_OPTIONS) == config
    here = "cuda" if torch.cuda.is_available() else "cpu"  # device auto is recorded as what it picked
    assert recorded_options(DeployConfig(backends=["torch"]))["device"] == here
    assert deploy_flags(recorded_options(DeployConfig(backends=["torch"]))) == (
        f"--precision fp32,fp16,int8,int8-u8 --backends torch --batches 1,64 --device {here}"
    )


def test_docs_list_every_deploy_option_with_its_flag() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    for f in dataclasses.fields(DeployConfig):
        flag = f"`{f.metadata['flag']}`" if "flag" in f.metadata else "-"
        assert f"| `{f.name}` | {flag} |" in docs, f.name
