"""Deploy figures measured here: ONNX parity across the zoo, the digits teacher and student per backend and
precision (accuracy and latency), student vs teacher, and the profiler's run-to-run stability.

Runs (or reuses) the `make demo` pipeline (recipes/digits.yaml: its teacher -> KD student, then its
deploy stages on every backend usable here) under --out. Checks (issue 6):
  - ONNX parity (rtol 1e-3, atol 1e-5) for every CIFAR zoo model and tv:resnet18 / tv:mobilenet_v3_small
    at batch 1 and 8;
  - student int8 (Q/DQ) accuracy within 1.0 point of fp32, and int8 ONNX Runtime p50 at batch 64 at most
    0.8x fp32's (the uint8-activation form ONNX Runtime's CPU kernels run fast; the symmetric int8 form
    built for TensorRT is reported next to it);
  - ONNX Runtime CPU no slower than torch eager at batch 1 (student);
  - two profiler runs of the same configuration (`kdforge bench STUDENT.onnx --backends onnxruntime
    --batches 64`) agree on p50 within 10%.

    python benchmarks/deploy.py [--batches 1 64] [--skip-zoo] [--device cuda --results DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, machine, slug, write_results
from kdforge.compress.config import load_recipe
from kdforge.compress.errors import first_line
from kdforge.compress.jobs import Session
from kdforge.compress.models import available, build
from kdforge.export.bench import TimingPolicy
from kdforge.export.bench.run import bench_artifact
from kdforge.export.onnx import check_parity, to_onnx
from kdforge.export.report import comparison_rows
from rich.console import Console

from kdforge.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[1]
EXTRA_MODELS = ("tv:resnet18", "tv:mobilenet_v3_small")


def zoo_parity(console: Console) -> list[dict[str, Any]]:
    """Export every zoo model (random weights, eval) and check it against PyTorch at batch 1 and 8."""
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in [*available(), *EXTRA_MODELS]:
            torch.manual_seed(0)
            model = build(name, 100).eval()
            tick = time.perf_counter()
            try:
                path = to_onnx(model, Path(work) / "m.onnx", (1, 3, 32, 32))
                samples = torch.randn(8, 3, 32, 32)
                results = check_parity(model, path, samples)
                row = {
                    "model": name,
                    "ok": True,
                    "max_abs": max(r.max_abs for r in results),
                    "max_logit": float(model(samples).abs().max()),
                }
            except Exception as exc:  # record and go on: the table shows which model failed and why
                row = {"model": name, "ok": False, "error": first_line(exc)}
            row["seconds"] = round(time.perf_counter() - tick, 1)
            console.print(f"parity {name}: {'ok' if row['ok'] else 'FAILED ' + row['error']}")
            rows.append(row)
    return rows


def stability(path: str, batch: int, policy: TimingPolicy) -> tuple[float, float]:
    """p50 of two separate profiler runs (fresh sessions) of the same ONNX file, as `kdforge bench` runs."""
    first, second = (bench_artifact(path, ("onnxruntime",), (batch,), policy)[0]["p50"] for _ in range(2))
    return first, second


def _shown(path: Path) -> str:
    """`path` relative to the repository when inside it (results are committed)."""
    return str(path.resolve().relative_to(REPO)) if path.resolve().is_relative_to(REPO) else str(path)


def _p50(result: dict[str, Any], backend: str, precision: str, batch: int) -> float:
    for row in result["latency"]:
        if (row["backend"], row["precision"], row["batch"]) == (backend, precision, batch):
            return row["p50"]
    raise KeyError((backend, precision, batch))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--skip-zoo", action="store_true", help="skip the zoo-wide parity check")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-deploy")
    parser.add_argument("--device", default="auto", help="where torch, torch-compile and aoti run")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for deploy.json|md")
    args = parser.parse_args()
    console = Console(width=140)
    started = time.perf_counter()

    sets = [f"deploy.batches=[{','.join(map(str, args.batches))}]", f"deploy.device={args.device}"]
    config = load_recipe(REPO / "recipes" / "digits.yaml", sets)
    run_pipeline(config, args.out, session=Session(resume=True, progress=False), console=console)
    deployed = {
        role: json.loads((args.out / f"deploy-{role}" / "deploy.json").read_text())
        for role in ("teacher", "student")
    }
    student, teacher = deployed["student"], deployed["teacher"]
    big = max(args.batches)
    acc = student["accuracy"]
    int8_drop = acc["onnxruntime fp32"] - min(acc["onnxruntime int8"], acc["onnxruntime int8-u8"])
    fp32_p50 = _p50(student, "onnxruntime", "fp32", big)
    int8_speed = _p50(student, "onnxruntime", "int8-u8", big) / fp32_p50
    trt_form_speed = _p50(student, "onnxruntime", "int8", big) / fp32_p50
    ort_vs_torch = _p50(student, "onnxruntime", "fp32", 1) / _p50(student, "torch", "fp32", 1)
    first, second = stability(student["files"]["fp32"], big, TimingPolicy())
    drift = abs(first - second) / min(first, second)
    checks = {
        f"student int8 accuracy (both forms) within 1.0 point of fp32 (worst drop {int8_drop:+.2f})": (
            int8_drop <= 1.0
        ),
        f"student int8 ORT p50 at batch {big} <= 0.8x fp32 (u8 activations, ORT's CPU form: "
        f"{int8_speed:.2f}x; the symmetric int8 TensorRT form runs {trt_form_speed:.2f}x on ORT CPU)": (
            int8_speed <= 0.8
        ),
        f"student ORT fp32 no slower than torch eager at batch 1 ({ort_vs_torch:.2f}x)": ort_vs_torch <= 1.0,
        f"profiler: two runs agree on p50 within 10% ({first:.3f} vs {second:.3f} ms)": drift <= 0.10,
    }
    payoff = [
        [
            r["backend"],
            r["precision"],
            batch,
            r["p50"][batch] * r["speedup"][batch],
            r["p50"][batch],
            r["speedup"][batch],
            r["size_ratio"],
        ]
        for r in comparison_rows(teacher, student)
        if "speedup" in r
        for batch in args.batches
        if r["speedup"].get(batch)
    ]
    zoo = [] if args.skip_zoo else zoo_parity(console)
    if zoo:
        checks[f"ONNX parity at batch 1 and 8 for {len(zoo)} models"] = all(r["ok"] for r in zoo)

    info = machine()
    name = "deploy" if info["device"] == "cpu" else f"deploy-{slug(info['device'])}"
    minutes = (time.perf_counter() - started) / 60
    lines = [
        "# Deploy figures: digits teacher and student, ONNX parity across the zoo",
        "",
        f"{info['date']}, {info['device']} ({info['cores']} cores, {info['torch_threads']} torch threads), "
        f"torch {info['torch']}; `python benchmarks/deploy.py` ({minutes:.1f} min). "
        f"Teacher {config.teacher.arch} -> {config.method.name.upper()} student {config.student.arch} "
        "from recipes/digits.yaml, deployed by `kdforge run` on "
        f"{', '.join(student['options']['backends'])}; latency excludes host-device copies except where "
        "a row says otherwise (ONNX Runtime GPU providers).",
        "",
        "## Accuracy per precision (test split, top-1 %)",
        "",
        "| network | " + " | ".join(student["accuracy"]) + " |",
        "|---|" + "---:|" * len(student["accuracy"]),
        *[
            f"| {role} | " + " | ".join(f"{v:.2f}" for v in deployed[role]["accuracy"].values()) + " |"
            for role in ("teacher", "student")
        ],
        "",
        "## Student vs teacher (p50 ms, ratio = teacher / student)",
        "",
        "| backend | precision | batch | teacher p50 | student p50 | latency ratio | size ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
        *[f"| {b} | {p} | {n} | {t:.3f} | {s:.3f} | {r:.1f}x | {z:.1f}x |" for b, p, n, t, s, r, z in payoff],
        "",
        f"Plots: {name}-teacher_vs_student_b*.png, {name}-student_latency.png (next to this file).",
        "",
        "## Checks",
        "",
        *[f"- {name}: **{'PASS' if ok else 'FAIL'}**" for name, ok in checks.items()],
        "",
        f"Full per-backend tables: {_shown(args.out)}/deploy-{{teacher,student}}/deploy.md and the run's "
        "report.md (also in the JSON). The stability runs time ONNX Runtime alone, as `kdforge bench` "
        "does for one backend, so its idle threads spin between operators; inside the deploy rounds they "
        "do not.",
    ]
    if zoo:
        lines += [
            "",
            "## ONNX parity (random weights, batch 1 and 8)",
            "",
            "| model | ok | max abs error | max abs logit | s |",
            "|---|---|---:|---:|---:|",
        ]
        lines += [
            f"| {r['model']} | {'yes' if r['ok'] else 'NO: ' + r['error']} "
            f"| {r.get('max_abs', float('nan')):.1e} | {r.get('max_logit', float('nan')):.1e} "
            f"| {r['seconds']} |"
            for r in zoo
        ]
    console.print("\n".join(lines), markup=False, highlight=False)
    payload = {
        "benchmark": "deploy",
        "machine": info,
        "teacher": teacher,
        "student": student,
        "payoff": payoff,
        "stability_p50_ms": [first, second],
        "zoo_parity": zoo,
        "checks": checks,
    }
    write_results(name, payload, "\n".join(lines), args.results)
    plots = sorted(args.out.glob("teacher_vs_student_b*.png"))
    for plot in [*plots, args.out / "deploy-student" / "latency.png"]:
        stem = plot.stem if plot.parent == args.out else "student_latency"
        shutil.copyfile(plot, args.results / f"{name}-{stem}.png")


if __name__ == "__main__":
    main()
