"""The sentence a run leads with: numbers taken from the right rows (the student's fastest variant at its
smallest batch, shared with the teacher), ratios computed teacher / student, signs and wording right."""

from __future__ import annotations

import re

from kdforge.export.report.headline import Outcome, fastest_variant, headline


def _row(backend: str, precision: str, batch: int, p50: float, size_mb: float) -> dict[str, object]:
    return {"backend": backend, "precision": precision, "batch": batch, "p50": p50, "size_mb": size_mb}


TEACHER = {
    "arch": "cnn_6_32",
    "accuracy": {"torch fp32": 99.2, "onnxruntime int8-u8": 99.0, "onnxruntime fp32": 99.2},
    "latency": [
        _row("torch", "fp32", 1, 2.0, 1.16),
        _row("onnxruntime", "fp32", 1, 0.90, 1.15),
        _row("onnxruntime", "int8-u8", 1, 0.61, 0.32),
        _row("onnxruntime", "int8-u8", 64, 9.0, 0.32),
    ],
}
STUDENT = {
    "arch": "cnn_2_8",
    "accuracy": {"torch fp32": 86.4, "onnxruntime int8-u8": 86.1, "onnxruntime fp32": 86.4},
    "latency": [
        _row("torch", "fp32", 1, 0.30, 0.0100),
        _row("onnxruntime", "fp32", 1, 0.11, 0.0090),
        _row("onnxruntime", "int8-u8", 1, 0.10, 0.0040),
        _row("onnxruntime", "int8-u8", 64, 0.5, 0.0040),
        _row("aoti", "fp32", 1, 0.05, 2.5),  # fastest for the student, but the teacher has no such row
    ],
}


def test_the_fastest_shared_variant_at_the_smallest_batch_is_compared() -> None:
    fastest = fastest_variant(TEACHER, STUDENT)
    assert fastest is not None
    assert (fastest.backend, fastest.precision, fastest.batch) == ("onnxruntime", "int8-u8", 1)
    assert abs(fastest.speedup - 0.61 / 0.10) < 1e-12
    assert abs(fastest.size_ratio - 0.32 / 0.004) < 1e-9
    assert (fastest.teacher_top1, fastest.student_top1) == (99.0, 86.1)


def test_the_sentence_gives_gain_over_ce_size_speed_and_the_gap_to_the_teacher() -> None:
    outcome = Outcome("cnn_6_32", 99.16, "cnn_2_8", 86.35, "kd", 70.21, 288746 / 3610)
    sentence = headline(outcome, fastest_variant(TEACHER, STUDENT))
    assert sentence.startswith("The distilled student (cnn_2_8, kd) scores 86.3% on the test split")
    assert "+16.1 points over the same student trained alone (70.2%)" in sentence
    assert (
        "80x smaller and 6.1x faster than the teacher (cnn_6_32, 99.2%) on ONNX Runtime int8-u8 at batch 1"
        in (sentence)
    )
    assert sentence.endswith("12.9 points below its accuracy there.")
    assert sentence.count(".") - len(re.findall(r"\d\.\d", sentence)) == 1  # one sentence


def test_a_loss_is_reported_as_one_and_close_accuracy_as_within() -> None:
    teacher = {**TEACHER, "accuracy": {**TEACHER["accuracy"], "onnxruntime int8-u8": 86.5}}
    sentence = headline(Outcome("t", 90.0, "s", 85.0, "dist", 86.0), fastest_variant(teacher, STUDENT))
    assert "1.0 points below the same student trained alone (86.0%)" in sentence
    assert "-1.0" not in sentence and "points over" not in sentence
    assert sentence.endswith("within 0.4 points of its accuracy there.")
    level = headline(Outcome("t", 90.0, "s", 86.02, "dist", 86.0), fastest_variant(teacher, STUDENT))
    assert "level with the same student trained alone (86.0%)" in level


def test_without_deployment_or_baseline_the_sentence_still_stands() -> None:
    sentence = headline(Outcome("t", 99.0, "s", 97.5, "kd", None))
    assert (
        sentence == "The distilled student (s, kd) scores 97.5% on the test split; "
        "1.5 points below the teacher (t, 99.0%)."
    )
