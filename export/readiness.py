"""Is each exported file ready for the runtime it is meant for? The files for TensorRT (fp32, fp16, int8) are
linted against TensorRT 10's and 11's ONNX parser rules, the int8-u8 form against ONNX Runtime's; deploy
records the verdicts and says so before handing a file with problems to the TensorRT builder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdforge.export.lint import TRT_VERSIONS, counts, format_lines, is_ready, lint_onnx

ONNXRUNTIME_ONLY = ("int8-u8",)  # forms made for ONNX Runtime's CPU kernels, never for TensorRT


def readiness(path: str | Path, precision: str) -> dict[str, Any]:
    """The lint verdict of one exported file for the runtime its precision is meant for."""
    if precision in ONNXRUNTIME_ONLY:
        checks = {"onnxruntime": lint_onnx(path, target="onnxruntime")}
    else:
        checks = {f"tensorrt {v}": lint_onnx(path, target="tensorrt", trt_version=v) for v in TRT_VERSIONS}
    problems = [p for found in checks.values() for p in found if p.severity == "error"]
    return {
        "target": "onnxruntime" if precision in ONNXRUNTIME_ONLY else "tensorrt",
        "checked": list(checks),
        "ready": all(is_ready(found) for found in checks.values()),
        "errors": len(problems),
        "counts": {name: counts(found) for name, found in checks.items()},
        "problems": format_lines(problems),
    }


def readiness_label(entry: dict[str, Any] | None) -> str:
    """'yes', 'no (N problems)' or '-' (not checked) for a table cell."""
    if entry is None:
        return "-"
    if entry["ready"]:
        return "yes"
    return f"no ({entry['errors']} problem{'s' if entry['errors'] != 1 else ''})"


def tensorrt_ready_cell(result: dict[str, Any], precision: str) -> str:
    """The TensorRT-ready cell of a deployed network's precision: the file's verdict, or why it has none."""
    entry = result.get("readiness", {}).get(precision)
    if entry is not None and entry["target"] != "tensorrt":
        return "n/a (ONNX Runtime form)"
    return readiness_label(entry)
