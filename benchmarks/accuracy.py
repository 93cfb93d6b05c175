"""Accuracy on the embedded digits data: teacher, CE student and KD student over several seeds.

Runs the same pipeline as `make demo` (recipes/digits.yaml) once per seed, resuming finished stages
from runs/bench-accuracy/, and reports test top-1 (checkpoint chosen on val) as mean +- std.
Targets (issue 2): teacher >= 98% and KD student >= CE student, both on the mean over seeds.

    python benchmarks/accuracy.py [--seeds 0 1 2] [--recipe recipes/digits.yaml] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from common import machine, write_results
from rich.console import Console
from rich.table import Table

from compress.config import load_recipe
from kdforge.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[1]
TEACHER_TARGET = 98.0


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "digits.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-accuracy"))
    parser.add_argument("--name", default="accuracy_digits", help="results file stem")
    args = parser.parse_args()

    per_seed: dict[str, list[float]] = {"teacher": [], "ce": [], "kd": []}
    last_epoch: dict[str, list[float]] = {"teacher": [], "ce": [], "kd": []}
    seconds: dict[str, list[float]] = {"teacher": [], "ce": [], "kd": []}
    archs: dict[str, str] = {}
    for seed in args.seeds:
        config = load_recipe(args.recipe, [*args.overrides, f"seed={seed}"])
        rows = run_pipeline(config, Path(args.out) / f"seed{seed}", resume=True, progress=False)
        for row in rows:
            key = "teacher" if row.stage.startswith("teacher") else row.method
            per_seed[key].append(row.test_top1)
            last_epoch[key].append(row.last_test_top1)
            seconds[key].append(row.train_seconds)
            archs[key] = row.arch

    summary = {k: _stats(v) for k, v in per_seed.items()}
    checks = {
        f"teacher >= {TEACHER_TARGET:.0f}%": summary["teacher"][0] >= TEACHER_TARGET,
        "KD student >= CE student": summary["kd"][0] >= summary["ce"][0],
    }
    table = Table(title=f"digits test top-1 %, seeds {args.seeds} (checkpoint chosen on val)")
    for column in ("network", "arch", "mean", "std", "per seed", "last-epoch mean", "train s (mean)"):
        table.add_column(column, justify="left" if column in ("network", "arch", "per seed") else "right")
    labels = {"teacher": "teacher (CE)", "ce": "student CE", "kd": "student KD"}
    for key, label in labels.items():
        mean, std = summary[key]
        table.add_row(
            label,
            archs[key],
            f"{mean:.2f}",
            f"{std:.2f}",
            " ".join(f"{v:.2f}" for v in per_seed[key]),
            f"{statistics.mean(last_epoch[key]):.2f}",
            f"{statistics.mean(seconds[key]):.0f}",
        )
    console = Console()
    console.print(table)
    for name, ok in checks.items():
        console.print(f"{name}: {'PASS' if ok else 'FAIL'}")

    info = machine()
    payload = {
        "benchmark": "accuracy_digits",
        "machine": info,
        "recipe": str(Path(args.recipe).name),
        "overrides": args.overrides,
        "seeds": args.seeds,
        "archs": archs,
        "test_top1": per_seed,
        "last_epoch_test_top1": last_epoch,
        "train_seconds": seconds,
        "mean_std": {k: list(v) for k, v in summary.items()},
        "checks": checks,
    }
    lines = [
        f"# Digits accuracy over seeds {args.seeds}",
        "",
        f"{info['date']}, {info['device']} ({info['cores']} cores), torch {info['torch']}; recipe "
        f"`{Path(args.recipe).name}` {' '.join(args.overrides)}. Test split (359 images), checkpoint with "
        "the best validation top-1; last-epoch numbers for reference.",
        "",
        "| network | arch | mean | std | per seed | last-epoch mean | train s (mean) |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for key, label in labels.items():
        mean, std = summary[key]
        lines.append(
            f"| {label} | {archs[key]} | {mean:.2f} | {std:.2f} | "
            f"{' '.join(f'{v:.2f}' for v in per_seed[key])} | {statistics.mean(last_epoch[key]):.2f} | "
            f"{statistics.mean(seconds[key]):.0f} |"
        )
    lines += [""] + [f"- {name}: **{'PASS' if ok else 'FAIL'}**" for name, ok in checks.items()]
    write_results(args.name, payload, "\n".join(lines))


if __name__ == "__main__":
    main()
