"""Per-step cost of KD against its parts: is the framework overhead of a distillation step <= 10%?

Times three things through the real `Trainer.train_step` (forward, loss, backward, optimizer, schedule):
  ce       student forward + backward + step with cross-entropy alone,
  teacher  teacher forward (no grad, eval mode) alone,
  kd       the KD step (student fwd+bwd+step + teacher forward + KD loss).
Target: kd <= 1.10 x (ce + teacher). Repetitions interleave the three so drift hits all alike; medians.

    python benchmarks/train_step.py [--teacher resnet32x4 --student resnet8x4 --batch 64 --reps 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import RESULTS, machine, slug, write_results
from rich.console import Console
from rich.table import Table

from compress.config import MethodConfig, load_recipe
from compress.data import build_data
from compress.methods import build_method
from compress.models import build
from compress.train.trainer import Trainer

TARGET = 1.10


def _trainer(
    method_name: str,
    student: torch.nn.Module,
    teacher: torch.nn.Module | None,
    out: str,
    device: torch.device,
) -> Trainer:
    config = load_recipe(None, ["data.image_size=8", "data.train_fraction=0.1", f"device={device.type}"])
    method = build_method(MethodConfig(method_name), student, teacher)
    trainer = Trainer(
        method,
        build_data(config.data),
        config.student_train,
        out,
        seed=0,
        device=device,
        meta={},
        progress=False,
    )
    trainer.setup()
    return trainer


def _time(fn: Callable[[], object], steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed repetition")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    device = torch.device(args.device)

    torch.manual_seed(0)
    teacher = build(args.teacher, args.classes).to(device).eval()
    ce_student, kd_student = build(args.student, args.classes), build(args.student, args.classes)
    kd_student.load_state_dict(ce_student.state_dict())
    images = torch.randn(args.batch, 3, 32, 32, device=device)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)

    with tempfile.TemporaryDirectory() as out:
        ce = _trainer("ce", ce_student, None, out, device)
        kd = _trainer("kd", kd_student, teacher, out, device)
        ce.method.train()
        kd.method.train()

        @torch.no_grad()
        def teacher_forward() -> torch.Tensor:
            return teacher(images)

        parts = {
            "ce": lambda: ce.train_step(images, labels),
            "teacher": teacher_forward,
            "kd": lambda: kd.train_step(images, labels),
        }
        for fn in parts.values():  # warm-up: allocator, kernels' first-call costs
            _time(fn, 2, device)
        samples: dict[str, list[float]] = {name: [] for name in parts}
        for _ in range(args.reps):
            for name, fn in parts.items():
                samples[name].append(_time(fn, args.steps, device))

    median = {name: statistics.median(values) for name, values in samples.items()}
    ratio = median["kd"] / (median["ce"] + median["teacher"])
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    table = Table(title=f"train step on {args.device}: {args.teacher} -> {args.student}, batch {args.batch}")
    for column in ("step", "median ms", "min ms", "max ms"):
        table.add_column(column, justify="right" if column != "step" else "left")
    for name, values in samples.items():
        table.add_row(
            name, f"{median[name] * 1e3:.1f}", f"{min(values) * 1e3:.1f}", f"{max(values) * 1e3:.1f}"
        )
    table.add_row("ce + teacher", f"{(median['ce'] + median['teacher']) * 1e3:.1f}", "", "")
    console = Console(width=130)
    console.print(table)
    console.print(f"kd / (ce + teacher) = {ratio:.3f} (target <= {TARGET:.2f}): {verdict}")

    payload = {
        "benchmark": "train_step",
        "machine": machine(),
        "teacher": args.teacher,
        "student": args.student,
        "classes": args.classes,
        "batch": args.batch,
        "reps": args.reps,
        "steps_per_rep": args.steps,
        "seconds": samples,
        "median_seconds": median,
        "ratio_kd_over_parts": ratio,
        "target": TARGET,
        "pass": ratio <= TARGET,
    }
    info = payload["machine"]
    lines = [
        f"# Train-step overhead: {args.teacher} -> {args.student}, batch {args.batch}",
        "",
        f"{info['date']}, {info['device']} ({info['cores']} cores, {info['torch_threads']} torch threads), "
        f"torch {info['torch']}. Medians of {args.reps} interleaved repetitions of {args.steps} steps.",
        "",
        "| step | median ms | min ms | max ms |",
        "|---|---:|---:|---:|",
        *[
            f"| {n} | {median[n] * 1e3:.1f} | {min(v) * 1e3:.1f} | {max(v) * 1e3:.1f} |"
            for n, v in samples.items()
        ],
        f"| ce + teacher | {(median['ce'] + median['teacher']) * 1e3:.1f} | | |",
        "",
        f"**kd / (ce + teacher) = {ratio:.3f}** (target <= {TARGET:.2f}): {verdict}",
    ]
    name = "train_step" if device.type == "cpu" else f"train_step-{slug(payload['machine']['device'])}"
    write_results(name, payload, "\n".join(lines), args.out)


if __name__ == "__main__":
    main()
