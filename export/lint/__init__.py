"""`lint_onnx`: will this ONNX file build on TensorRT 10 / 11, or load in ONNX Runtime's CPU provider?
Checked without TensorRT, against the parser's published operator table and the explicit-quantization rules
(`rules.py`, each rule citing its document in `sources.py`).

    problems = lint_onnx("model-int8.onnx", target="tensorrt", trt_version=10)
    print(verdict(problems, "tensorrt", 10))      # TensorRT 10-ready: yes (0 errors, 0 warnings, 1 note)
    for line in format_lines(problems): print(line)

Imports onnx and numpy only (onnxruntime for target='onnxruntime'), never torch.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from kdforge.compress.errors import UserError, first_line
from kdforge.export.lint.integrity import check_integrity
from kdforge.export.lint.problem import Problem
from kdforge.export.lint.report import counts, format_lines, is_ready, to_json, verdict
from kdforge.export.lint.rules import RULES, SEVERITIES, Rule
from kdforge.export.lint.sources import SOURCES, RuleSource
from kdforge.export.trt_versions import TRT_VERSIONS

TARGETS = ("tensorrt", "onnxruntime")

__all__ = [
    "RULES",
    "SEVERITIES",
    "SOURCES",
    "TARGETS",
    "TRT_VERSIONS",
    "Problem",
    "Rule",
    "RuleSource",
    "counts",
    "format_lines",
    "is_ready",
    "lint_model",
    "lint_onnx",
    "read_onnx",
    "to_json",
    "verdict",
]


def _check_target(target: str, trt_version: int) -> None:
    if target not in TARGETS:
        raise UserError(f"unknown lint target {target!r}; choose one of {', '.join(TARGETS)}")
    if target == "tensorrt" and trt_version not in TRT_VERSIONS:
        raise UserError(
            f"TensorRT version must be one of {', '.join(map(str, TRT_VERSIONS))}, got {trt_version!r}"
        )


def read_onnx(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file (external data included); anything unreadable is one UserError line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, missing external data, ...: the file, not kdforge
        raise UserError(f"{path}: not a readable ONNX model ({first_line(exc, 160)})") from exc
    if not model.HasField("graph") or not model.opset_import:  # an empty file parses as an empty model
        raise UserError(f"{path}: not a readable ONNX model (no graph or no opset import)")
    return model


def lint_model(
    model: onnx.ModelProto, target: str = "tensorrt", trt_version: int = 10, *, path: str | Path | None = None
) -> list[Problem]:
    """The problems of an in-memory `model` for `target` ('tensorrt' with `trt_version` 10 or 11, or
    'onnxruntime'); `path`, when given, lets ONNX Runtime load external data next to the file. A malformed
    model (data not matching its declared shape, too many nodes) raises one UserError line."""
    _check_target(target, trt_version)
    check_integrity(model, str(path) if path is not None else "the model")
    if target == "tensorrt":
        from kdforge.export.lint.tensorrt import check_tensorrt

        return check_tensorrt(model, trt_version)
    from kdforge.export.lint.onnxruntime import check_onnxruntime

    return check_onnxruntime(model, None if path is None else str(path))


def lint_onnx(path: str | Path, target: str = "tensorrt", trt_version: int = 10) -> list[Problem]:
    """The problems of the ONNX file at `path` for `target`; an unreadable file raises UserError."""
    _check_target(target, trt_version)
    return lint_model(read_onnx(path), target, trt_version, path=path)
