"""The one sentence a run leads with: what distillation bought (accuracy against the same student trained
alone and against the teacher) and what deployment bought (size and latency against the teacher on the
fastest backend measured here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdforge.export.report.summary import accuracy_of

BACKEND_NAMES = {
    "torch": "torch eager",
    "torch-compile": "torch.compile",
    "aoti": "AOTInductor",
    "onnxruntime": "ONNX Runtime",
    "onnxruntime-cuda": "ONNX Runtime CUDA",
    "onnxruntime-trt": "ONNX Runtime TensorRT",
    "tensorrt": "TensorRT",
    "native-aoti": "kdforge-runner AOTInductor",
    "native-tensorrt": "kdforge-runner TensorRT",
    "native-onnxruntime": "kdforge-runner ONNX Runtime",
}


@dataclass(frozen=True)
class Outcome:
    """Test top-1 (%) of the three networks a run compares, and what the student learnt with."""

    teacher_arch: str
    teacher_top1: float
    student_arch: str
    student_top1: float  # the distilled student
    method: str
    baseline_top1: float | None  # the same student trained with cross-entropy alone; None when not run
    size_ratio: float | None = None  # teacher parameters / student parameters


@dataclass(frozen=True)
class FastestVariant:
    """The student's fastest deployed variant and the teacher's same variant at the same batch size."""

    backend: str
    precision: str
    batch: int
    speedup: float  # teacher p50 / student p50
    size_ratio: float | None  # teacher file / student file (compiled packages carry code: not a model size)
    teacher_top1: float | None
    student_top1: float | None


def fastest_variant(teacher: dict[str, Any], student: dict[str, Any]) -> FastestVariant | None:
    """The (backend, precision) where the student's p50 at its smallest batch is lowest, among those the
    teacher was timed on too; None when no variant was timed for both."""
    if not student.get("latency"):
        return None
    batch = min(row["batch"] for row in student["latency"])
    teacher_rows = {(r["backend"], r["precision"]): r for r in teacher["latency"] if r["batch"] == batch}
    shared = [
        r
        for r in student["latency"]
        if r["batch"] == batch and (r["backend"], r["precision"]) in teacher_rows
    ]
    if not shared:
        return None
    best = min(shared, key=lambda r: r["p50"])
    other = teacher_rows[(best["backend"], best["precision"])]
    size_ratio = other["size_mb"] / best["size_mb"] if best.get("size_mb") and other.get("size_mb") else None
    return FastestVariant(
        best["backend"],
        best["precision"],
        batch,
        other["p50"] / best["p50"],
        size_ratio,
        accuracy_of(teacher, best["backend"], best["precision"]),
        accuracy_of(student, best["backend"], best["precision"]),
    )


def _against_baseline(points: float) -> str:
    """The student's gain over the baseline, read the way it went: over, below, or level with it."""
    if round(points, 1) > 0:
        return f"+{points:.1f} points over"
    if round(points, 1) < 0:
        return f"{-points:.1f} points below"
    return "level with"


def headline(outcome: Outcome, fastest: FastestVariant | None = None) -> str:
    """One plain sentence: the student's gain over itself trained alone and its cost against the teacher."""
    student = f"The distilled student ({outcome.student_arch}, {outcome.method})"
    parts = [f"{student} scores {outcome.student_top1:.1f}% on the test split"]
    if outcome.baseline_top1 is not None:
        gain = _against_baseline(outcome.student_top1 - outcome.baseline_top1)
        parts.append(f"{gain} the same student trained alone ({outcome.baseline_top1:.1f}%)")
    gap = outcome.teacher_top1 - outcome.student_top1
    teacher = f"the teacher ({outcome.teacher_arch}, {outcome.teacher_top1:.1f}%)"
    if fastest is None:
        parts.append(f"{abs(gap):.1f} points {'below' if gap > 0 else 'above'} {teacher}")
        return "; ".join(parts) + "."
    where = (
        f"{BACKEND_NAMES.get(fastest.backend, fastest.backend)} {fastest.precision} at batch {fastest.batch}"
    )
    size = f"{outcome.size_ratio:.0f}x smaller and " if outcome.size_ratio else ""
    cost = f"{size}{fastest.speedup:.1f}x faster than {teacher} on {where}"
    if fastest.teacher_top1 is not None and fastest.student_top1 is not None:
        there = fastest.teacher_top1 - fastest.student_top1
        closeness = f"within {there:.1f} points of" if there <= 1.0 else f"{there:.1f} points below"
        cost += f", {closeness} its accuracy there" if there >= 0 else f", {-there:.1f} points above it there"
    parts.append(cost)
    return "; ".join(parts) + "."
