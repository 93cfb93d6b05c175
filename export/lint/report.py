"""How lint results read: one line per problem, a one-line verdict, and a JSON document."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kdforge.export.lint.problem import Problem
from kdforge.export.lint.rules import ERROR, INFO, WARNING


def counts(problems: Sequence[Problem]) -> dict[str, int]:
    """How many problems of each severity: {'error': n, 'warning': n, 'info': n}."""
    return {level: sum(p.severity == level for p in problems) for level in (ERROR, WARNING, INFO)}


def is_ready(problems: Sequence[Problem]) -> bool:
    """Ready for the target when no problem is an error (warnings and notes do not block)."""
    return counts(problems)[ERROR] == 0


def target_label(target: str, trt_version: int | None = None) -> str:
    return f"TensorRT {trt_version}" if target == "tensorrt" else "ONNX Runtime (CPU)"


def verdict(problems: Sequence[Problem], target: str = "tensorrt", trt_version: int | None = 10) -> str:
    """'TensorRT 10-ready: yes (0 errors, 1 warning, 1 note)' - the line deploy and check print."""
    n = counts(problems)
    answer = "yes" if n[ERROR] == 0 else "no"
    parts = [_plural(n[ERROR], "error"), _plural(n[WARNING], "warning"), _plural(n[INFO], "note")]
    return f"{target_label(target, trt_version)}-ready: {answer} ({', '.join(parts)})"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def format_lines(problems: Sequence[Problem]) -> list[str]:
    """One line per problem, errors first, then warnings, then notes (graph order within each)."""
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    return [p.line() for p in sorted(problems, key=lambda p: order[p.severity])]


def to_json(
    path: str, problems: Sequence[Problem], target: str = "tensorrt", trt_version: int | None = 10
) -> dict[str, Any]:
    """The JSON form `kdforge check --json` prints and deploy can store."""
    return {
        "model": str(path),
        "target": target,
        "trt_version": trt_version if target == "tensorrt" else None,
        "ready": is_ready(problems),
        "counts": counts(problems),
        "verdict": verdict(problems, target, trt_version),
        "problems": [p.to_dict() for p in problems],
    }
