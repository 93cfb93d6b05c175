"""`report.md` of `kdforge run`, built from records, never from Markdown read back: the training table from
the stage records (as results.md is), then one table of accuracy x latency x size for the teacher and the
student per backend and precision from the deploy records (deploy.json), the student's speed-up and size
ratio, the plots, and the commands that reproduce it all."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdforge.compress.atomic import atomic_write_text
from kdforge.compress.layout import RunLayout
from kdforge.export.readiness import tensorrt_ready_cell
from kdforge.export.report.markdown import code, code_block, text
from kdforge.export.report.plots import plot_teacher_vs_student
from kdforge.export.report.training import StageRow, training_table

SAME_FILE_AS = {  # backends that run a file (or weights) whose accuracy another backend measured
    "torch-compile": "torch",
    "onnxruntime-cuda": "onnxruntime",
    "onnxruntime-trt": "onnxruntime",
    "native-aoti": "aoti",
    "native-tensorrt": "tensorrt",
    "native-onnxruntime": "onnxruntime",
}


def accuracy_of(result: dict[str, Any], backend: str, precision: str) -> float | None:
    """Test top-1 of a variant: measured for it, or (marked by the caller) that of the file it runs."""
    accuracy = result["accuracy"]
    return accuracy.get(f"{backend} {precision}", accuracy.get(f"{SAME_FILE_AS.get(backend)} {precision}"))


def comparison_rows(teacher: dict[str, Any], student: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per (network, backend, precision): accuracy, p50 per batch, size, student ratios."""
    batches = sorted({r["batch"] for r in student["latency"]})
    index = {
        (role, r["backend"], r["precision"], r["batch"]): r
        for role, result in (("teacher", teacher), ("student", student))
        for r in result["latency"]
    }
    variants = list(dict.fromkeys((r["backend"], r["precision"]) for r in student["latency"]))
    records = []
    for backend, precision in variants:
        for role, result in (("teacher", teacher), ("student", student)):
            rows = {b: index.get((role, backend, precision, b)) for b in batches}
            first = next((r for r in rows.values() if r), None)
            record = {
                "network": f"{role} {result['arch']}",
                "backend": backend,
                "precision": precision,
                "top1": accuracy_of(result, backend, precision),
                "measured_top1": f"{backend} {precision}" in result["accuracy"],
                "ready": tensorrt_ready_cell(result, precision),
                "p50": {b: (r["p50"] if r else None) for b, r in rows.items()},
                "size_mb": first["size_mb"] if first else None,
            }
            if role == "student":
                teacher_rows = {b: index.get(("teacher", backend, precision, b)) for b in batches}
                record["speedup"] = {
                    b: teacher_rows[b]["p50"] / rows[b]["p50"] if rows[b] and teacher_rows[b] else None
                    for b in batches
                }
                teacher_first = next((r for r in teacher_rows.values() if r), None)
                record["size_ratio"] = (
                    teacher_first["size_mb"] / first["size_mb"] if teacher_first and first else None
                )
            records.append(record)
    return records


def write_report(
    out_dir: str | Path,
    title: str,
    training: Sequence[StageRow],
    teacher: dict[str, Any],
    student: dict[str, Any],
    commands: list[str],
    *,
    headline: str = "",
    sections: Sequence[str] = (),
) -> Path:
    """report.md (led by `headline`, the run's outcome in one sentence) and teacher_vs_student_b<batch>.png
    in `out_dir`; returns the report's path. The training table is built from the stage records
    `training` (results.json's rows), the deployed table from the deploy records (deploy.json); `title` is
    Markdown already (its user strings escaped by the caller); `headline` and `commands` are plain text,
    escaped here. `sections` are Markdown lines placed right after the headline (a budget search's
    candidates), their user strings escaped by their maker."""
    out = Path(out_dir)
    here = RunLayout(Path())  # the deploy folders, relative to the report
    teacher_dir, student_dir = here.deploy("teacher"), here.deploy("student")
    batches = sorted({r["batch"] for r in student["latency"]})
    plots = [
        plot_teacher_vs_student(
            teacher["latency"],
            student["latency"],
            batch,
            out / f"teacher_vs_student_b{batch}.png",
            f"p50 at batch {batch}: teacher {teacher['arch']} vs student {student['arch']}",
        )
        for batch in (batches[0], batches[-1])
        if batch in batches
    ]
    plots = list(dict.fromkeys(plots))
    header = "| network | backend | precision | TensorRT-ready | test top-1 % | "
    header += " | ".join(f"p50 ms b{b}" for b in batches) + " | size MB | student speed-up | size ratio |"
    lines = [
        f"# {title}",
        "",
        *([f"**{text(headline)}**", ""] if headline else []),
        *sections,
        *training_table(training),
        "",
        "## Deployed: accuracy x latency x size",
        "",
        header,
        "|---|---|---|---|---:|" + "---:|" * len(batches) + "---:|---:|---:|",
    ]
    for record in comparison_rows(teacher, student):
        top1 = (
            "-"
            if record["top1"] is None
            else f"{record['top1']:.2f}" + ("" if record["measured_top1"] else "*")
        )
        speed = ""
        ratio = ""
        if "speedup" in record:
            speed = " / ".join(f"{s:.1f}x" if s else "-" for s in record["speedup"].values())
            ratio = f"{record['size_ratio']:.1f}x" if record["size_ratio"] else "-"
        size = "-" if record["size_mb"] is None else f"{record['size_mb']:.2f}"
        p50 = " | ".join("-" if v is None else f"{v:.3f}" for v in record["p50"].values())
        lines.append(
            f"| {text(record['network'])} | {text(record['backend'])} | {text(record['precision'])} "
            f"| {text(record['ready'])} "
            f"| {top1} | {p50} "
            f"| {size} | {speed} | {ratio} |"
        )
    env = student["environment"]
    lines += [
        "",
        "TensorRT-ready: the ONNX file of that precision passes `kdforge check --target tensorrt` for "
        "TensorRT 10 and 11 (operator table, opsets, explicit-quantization rules); int8-u8 is the ONNX "
        "Runtime CPU form and is checked against ONNX Runtime instead.",
        "",
        f"Test top-1 on the test split, run in that runtime; * = the same file measured on another runtime "
        "(torch-compile runs the torch weights; ONNX Runtime GPU providers run the CPU-tested ONNX file; "
        "native-* rows run the same .pt2 / engine / ONNX in kdforge-runner, timed after the Python rounds). "
        f"Speed-up = teacher p50 / student p50 at batch {' / '.join(map(str, batches))}; size ratio = "
        "teacher file / student file. Each network's variants were timed together in rotating rounds; "
        f"teacher and student were timed one after the other on the same machine "
        f"(torch {env.get('torch', '?')}, {env.get('threads', '?')} threads). Per-network tables with "
        f"p90/p99, CoV and throughput: {teacher_dir.deploy_md.as_posix()} and "
        f"{student_dir.deploy_md.as_posix()}.",
        "",
        *[f"![{p.stem}]({p.name})" for p in plots],
        "",
        f"![teacher latency per image against batch]({teacher_dir.latency_png.as_posix()})",
        f"![student latency per image against batch]({student_dir.latency_png.as_posix()})",
        "",
        *provenance_lines(teacher, student),
        "## Reproduce",
        "",
        *code_block(commands),
    ]
    report = RunLayout(out).report_md
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report


def provenance_lines(teacher: dict[str, Any], student: dict[str, Any]) -> list[str]:
    """The "Starting weights" section: where each deployed network's weights came from (the `init` and
    `teacher` records of its checkpoint: path or name, format, SHA-256); nothing for networks trained from
    scratch."""
    import json

    from safetensors import safe_open

    lines = []
    for role, result in (("teacher", teacher), ("student", student)):
        try:
            with safe_open(str(result["checkpoint"]), framework="pt") as handle:
                meta = json.loads((handle.metadata() or {}).get("kdforge", "{}"))
        except Exception:  # a record without a readable checkpoint: nothing to say
            continue
        given = meta.get("method") == "given"  # a teacher used as is: its weights, not a start
        for key, what in (
            ("init", "weights from" if given else "started from"),
            ("teacher", "distilled from"),
        ):
            record = meta.get(key)
            if isinstance(record, dict) and (key == "init" or record.get("format") != "kdforge"):
                head = record.get("reinitialised") or []
                note = f"; head re-initialised ({text(', '.join(map(str, head)))})" if head else ""
                lines.append(
                    f"- {role} {text(result['arch'])} {what} {code(record.get('source'))} "
                    f"({text(record.get('format'))}, sha256 {code(record.get('sha256'))}){note}"
                )
    return ["## Starting weights", "", *lines, ""] if lines else []
