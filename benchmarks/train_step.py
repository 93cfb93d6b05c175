"""Per-step cost of every method, through the real `Trainer.train_step` (forward, loss, backward,
optimizer, schedule), on one teacher/student pair and batch, in one run.

Part 1, framework overhead of KD against its parts:
  ce       student forward + backward + step with cross-entropy alone,
  teacher  teacher forward (no grad, eval mode) alone,
  kd       the KD step (student fwd+bwd+step + teacher forward + KD loss).
Target: kd <= 1.10 x (ce + teacher).
Part 2, each method's step relative to the KD step (SATE target: <= 1.6 x KD when the intermediate
teacher is no larger than the teacher), and the Generous Teacher's step relative to a standard
(CE) teacher step of the same architecture (target <= 1.25 x).
Repetitions interleave all rows so drift hits all alike; medians.

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
from kdforge.compress.config import MethodConfig, load_recipe
from kdforge.compress.data import build_data
from kdforge.compress.methods import TEACHER_STRATEGIES, MethodContext, NetworkSpec, build_method
from kdforge.compress.models import build
from kdforge.compress.train.trainer import Trainer
from rich.console import Console
from rich.table import Table

TARGET = 1.10
SATE_TARGET = 1.6
GENEROUS_TARGET = 1.25


def trainer_for(
    method_name: str,
    student: torch.nn.Module,
    teacher: torch.nn.Module | None,
    out: str,
    device: torch.device,
    options: dict | None = None,
    context: MethodContext | None = None,
    registry: dict | None = None,
) -> Trainer:
    """A set-up Trainer (in training mode) for one method, so `train_step` can be timed on fixed batches."""
    config = load_recipe(None, ["data.image_size=8", "data.train_fraction=0.1", f"device={device.type}"])
    method = build_method(MethodConfig(method_name, options or {}), student, teacher, context, registry)
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
    trainer.method.train()
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


def _rows(args: argparse.Namespace) -> list[tuple[str, str, dict, str]]:
    """(label, method, options, teacher role) of part 2; role 'standard' = a teacher-strategy row."""
    small = {"intermediate_arch": args.student}
    return [
        ("kd", "kd", {}, "teacher"),
        ("kd+ls", "kd", {"standardize": True}, "teacher"),
        ("dkd", "dkd", {}, "teacher"),
        ("dist", "dist", {}, "teacher"),
        ("dist_plus", "dist_plus", {}, "teacher"),
        ("dist_plus (no acclimation)", "dist_plus", {"acclimation": False}, "teacher"),
        (f"sate+kd (intermediate {args.teacher})", "sate", {"student_loss": "kd"}, "teacher"),
        (f"sate+kd (intermediate {args.student})", "sate", {"student_loss": "kd", **small}, "teacher"),
        (
            f"sate+dist ema (intermediate {args.student})",
            "sate",
            {"student_loss": "dist", "ema": True, **small},
            "teacher",
        ),
        ("teacher: standard (ce)", "ce", {}, "none"),
        ("teacher: generous", "generous", {}, "standard"),
    ]


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
    initial = build(args.student, args.classes).state_dict()
    images = torch.randn(args.batch, 3, 32, 32, device=device)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    context = MethodContext(args.classes, NetworkSpec(args.student), NetworkSpec(args.teacher))

    def student() -> torch.nn.Module:
        network = build(args.student, args.classes)
        network.load_state_dict(initial)  # every row starts from the same weights
        return network

    with tempfile.TemporaryDirectory() as out:
        ce = trainer_for("ce", student(), None, out, device)

        @torch.no_grad()
        def teacher_forward() -> torch.Tensor:
            return teacher(images)

        steps: dict[str, Callable[[], object]] = {
            "ce": lambda: ce.train_step(images, labels),
            "teacher": teacher_forward,
        }
        for label, name, options, role in _rows(args):
            if role == "teacher":
                trainer = trainer_for(name, student(), teacher, out, device, options, context)
            elif role == "none":  # a standard teacher's CE step: the teacher architecture trains
                trainer = trainer_for(name, build(args.teacher, args.classes), None, out, device)
            else:
                trainer = trainer_for(
                    name,
                    build(args.teacher, args.classes),
                    teacher,
                    out,
                    device,
                    options,
                    context,
                    TEACHER_STRATEGIES,
                )
            steps[label] = lambda trainer=trainer: trainer.train_step(images, labels)
        for fn in steps.values():  # warm-up: allocator, kernels' first-call costs
            _time(fn, 2, device)
        samples: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.reps):
            for name, fn in steps.items():
                samples[name].append(_time(fn, args.steps, device))

    median = {name: statistics.median(values) for name, values in samples.items()}
    ratio = median["kd"] / (median["ce"] + median["teacher"])
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    relative: dict[str, float] = {}
    targets: dict[str, float] = {}
    for label, name, _, role in _rows(args):
        base = "teacher: standard (ce)" if role != "teacher" else "kd"
        relative[label] = median[label] / median[base]
        if name == "sate":
            targets[label] = SATE_TARGET
        elif name == "generous":
            targets[label] = GENEROUS_TARGET
    checks = {label: relative[label] <= target for label, target in targets.items()}

    table = Table(title=f"train step on {args.device}: {args.teacher} -> {args.student}, batch {args.batch}")
    for column in ("step", "median ms", "min ms", "max ms", "x KD / x standard", "target"):
        table.add_column(column, justify="right" if column != "step" else "left")
    md_rows = []
    for name, values in samples.items():
        rel = f"{relative[name]:.2f}" if name in relative else ""
        target = f"<= {targets[name]:.2f} {'PASS' if checks[name] else 'FAIL'}" if name in targets else ""
        cells = [
            name,
            f"{median[name] * 1e3:.1f}",
            f"{min(values) * 1e3:.1f}",
            f"{max(values) * 1e3:.1f}",
            rel,
            target,
        ]
        table.add_row(*cells)
        md_rows.append("| " + " | ".join(cells) + " |")
    table.add_row("ce + teacher", f"{(median['ce'] + median['teacher']) * 1e3:.1f}", "", "", "", "")
    console = Console(width=150)
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
        "relative": relative,
        "relative_targets": targets,
        "relative_pass": checks,
    }
    info = payload["machine"]
    lines = [
        f"# Train-step cost per method: {args.teacher} -> {args.student}, batch {args.batch}",
        "",
        f"{info['date']}, {info['device']} ({info['cores']} cores, {info['torch_threads']} torch threads), "
        f"torch {info['torch']}; `python benchmarks/train_step.py --device {args.device}`. Medians of "
        f"{args.reps} interleaved repetitions of {args.steps} full training steps (forward, loss, "
        "backward, optimizer, schedule) through `Trainer.train_step`, 32x32 inputs. 'x KD' is the "
        "method's step over the KD step; the Generous Teacher's is over a standard (CE) teacher step of "
        "the same architecture.",
        "",
        "| step | median ms | min ms | max ms | x KD / x standard | target |",
        "|---|---:|---:|---:|---:|---|",
        *md_rows,
        f"| ce + teacher | {(median['ce'] + median['teacher']) * 1e3:.1f} | | | | |",
        "",
        f"**kd / (ce + teacher) = {ratio:.3f}** (target <= {TARGET:.2f}): {verdict}",
    ]
    name = "train_step" if device.type == "cpu" else f"train_step-{slug(payload['machine']['device'])}"
    write_results(name, payload, "\n".join(lines), args.out)


if __name__ == "__main__":
    main()
