"""The method study on the embedded digits data: every seed method against CE and KD, over seeds.

One teacher (and one Generous Teacher trained from it) is shared by every row and seed; each row trains
the same student with the same data, epochs and schedule, changing only the method. Reports the
last-epoch test top-1 (no checkpoint selection) as mean and std, the paired difference (same seed =
same initial weights and batch order) against CE and against KD with a 95% t-interval, and the train
wall-time per epoch.

Hyper-parameters start from the papers' CIFAR defaults. Each distillation row then picks one knob
between two values (the paper's first) on the *validation* split, with two separate tuning seeds
(mean validation top-1 of the last 5 epochs; ties keep the paper's value); the test split is only read
for the final table. Finished runs are reused (run folders are keyed by method and options).

    python benchmarks/accuracy.py [--seeds 0 1 2 3 4] [--jobs 2] [--rows CE KD ...] [--no-tune]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import machine, write_results
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]

# The study runs in the demo's regime (recipes/digits.yaml): 16x16 digits, a teacher cnn_6_32 trained on
# the whole training split, a student cnn_2_8 (180x smaller) with labels for 30% of it, 40 epochs.
STUDY = ["device=cpu"]
WARMUP = 4  # DKD's and SATE's 20 of 240 epochs, scaled to the 40-epoch schedule
SATE = {"student_warmup_epochs": WARMUP}  # the intermediate teacher: the teacher's arch, from scratch
TUNE_SEEDS = (100, 101)  # separate from the reported seeds


@dataclass(frozen=True)
class Row:
    """One line of the study: a student method, which teacher it distills from, and its tuning grid."""

    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    teacher: str = "standard"  # or 'generous'
    knob: str | None = None  # dotted path into `options`, chosen on val among `values`
    values: tuple[Any, ...] = ()  # the first is the paper's

    def with_value(self, value: Any) -> Row:
        """This row with `knob` set to `value`."""
        options = copy.deepcopy(self.options)
        *parents, leaf = self.knob.split(".")
        node = options
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        return Row(self.label, self.method, options, self.teacher, self.knob, self.values)

    def key(self) -> str:
        """Run folder name: the label and a hash of what is trained."""
        text = json.dumps([self.method, self.options, self.teacher], sort_keys=True)
        return f"{slugify(self.label)}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


DIST_WEIGHT = ("kd_weight", (2.0, 0.5))
SATE_DIST_WEIGHT = ("student_loss_options.kd_weight", (2.0, 0.5))
LS = {"standardize": True, "temperature": 2.0, "ce_weight": 0.1, "kd_weight": 9.0}  # the official code
ROWS = [
    Row("CE", "ce"),
    Row("KD", "kd", {}, "standard", "temperature", (4.0, 2.0)),
    Row("KD+LS", "kd", LS, "standard", "kd_weight", (9.0, 0.9)),
    Row("DKD", "dkd", {"ramp_epochs": WARMUP}, "standard", "beta", (8.0, 2.0)),
    Row("DIST", "dist", {}, "standard", *DIST_WEIGHT),
    Row("DIST+ (acclimation)", "dist_plus", {"acclimation": True}, "standard", *DIST_WEIGHT),
    Row("DIST+ (no acclimation)", "dist_plus", {"acclimation": False}, "standard", *DIST_WEIGHT),
    Row(
        "DIST+ (torchdistill reading)",
        "dist_plus",
        {"acclimation": True, "feature_reading": "torchdistill"},
        "standard",
        *DIST_WEIGHT,
    ),
    Row("Generous -> KD", "kd", {}, "generous", "temperature", (4.0, 2.0)),
    Row("Generous -> DIST", "dist", {}, "generous", *DIST_WEIGHT),
    Row("SATE+KD", "sate", {"student_loss": "kd", **SATE}, "standard", "aware_weight", (1.0, 0.1)),
    Row("SATE+DIST", "sate", {"student_loss": "dist", **SATE}, "standard", *SATE_DIST_WEIGHT),
    Row(
        "SATE+DIST (EMA)",
        "sate",
        {"student_loss": "dist", "ema": True, **SATE},
        "standard",
        *SATE_DIST_WEIGHT,
    ),
    # RSD: the student distills itself (paper defaults, not tuned); the CE row is the plain baseline
    Row("RSD", "rsd"),
    Row("RSD + teacher", "rsd", {"use_teacher": True}),
]


def slugify(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-").replace("--", "-")


def _config(overrides: list[str], seed: int) -> Any:
    from kdforge.compress.config import load_recipe

    return load_recipe(REPO / "recipes" / "digits.yaml", [*STUDY, *overrides, f"seed={seed}"])


def train_row(row: Row, seed: int, teacher: str, out: str, overrides: list[str]) -> dict[str, Any]:
    """One student run (in a worker process); reuses a finished run's result.json."""
    import torch

    torch.set_num_threads(1)
    from kdforge.compress.config import MethodConfig
    from kdforge.compress.jobs import Session, distill_student

    run = Path(out)
    result_file = run / "result.json"
    if not result_file.is_file():
        config = _config(overrides, seed)
        method = MethodConfig(row.method, copy.deepcopy(row.options))
        resume = (run / "checkpoints" / "last.safetensors").is_file()
        distill_student(
            config, run, teacher_path=teacher, method=method, session=Session(resume=resume, progress=False)
        )
    result = json.loads(result_file.read_text())
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    return {
        "last": result["last_test_top1"],
        "best": result["test_top1"],
        "val_tail": statistics.mean(line["val_top1"] for line in lines[-5:]),
        "epoch_seconds": statistics.mean(line["epoch_seconds"] for line in lines),
        "train_seconds": result["train_seconds"],
    }


def _epoch_seconds(run: Path) -> dict[str, float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    return {"epoch_seconds": statistics.mean(line["epoch_seconds"] for line in lines)}


def teachers(out: Path, overrides: list[str]) -> dict[str, Any]:
    """Train (or reuse) the shared standard teacher and the Generous Teacher trained from it."""
    from kdforge.compress.jobs import Session, train_teacher

    config = _config(overrides, 0)
    found: dict[str, Any] = {}
    for name in ("standard", "generous"):
        run = out / f"teacher-{name}"
        if not (run / "result.json").is_file():
            config.teacher_strategy.name = name
            resume = (run / "checkpoints" / "last.safetensors").is_file()
            standard = found.get("standard", {}).get("path")
            train_teacher(
                config, run, session=Session(resume=resume, progress=False), standard_checkpoint=standard
            )
        result = json.loads((run / "result.json").read_text())
        found[name] = {
            "path": result["best_path"],
            "last": result["last_test_top1"],
            "best": result["test_top1"],
            "train_seconds": result["train_seconds"],
            **_epoch_seconds(run),
        }
    return found


def setting(overrides: list[str]) -> str:
    """The study's data and networks in words, read from the recipe it runs (never restated by hand)."""
    from kdforge.compress.config import teacher_data
    from kdforge.compress.data import build_data
    from kdforge.compress.models import build

    config = _config(overrides, 0)
    student_data, teacher_data_ = build_data(config.data), build_data(teacher_data(config.data))
    classes = student_data.num_classes

    def params(arch: str) -> str:
        return f"{sum(p.numel() for p in build(arch, classes).parameters()) / 1e6:.4f} M"

    size, train = config.data.image_size, config.student_train
    return (
        f"{size}x{size} images; the teacher {config.teacher.arch} ({params(config.teacher.arch)}, "
        f"{config.teacher_train.epochs} epochs) learnt from {len(teacher_data_.train)} training images, the "
        f"student {config.student.arch} ({params(config.student.arch)}, {config.student_train.epochs} "
        f"epochs) gets {len(student_data.train)} of them ({config.data.train_fraction:.0%}); SGD lr "
        f"{train.lr} {train.schedule} with {train.warmup_epochs} warm-up epoch(s), "
        f"batch {config.data.batch_size}, the same for every row."
    )


def t_quantile(dof: int) -> float:
    """Two-sided 95% Student-t quantile."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of a - b and the half-width of its 95% t-interval (same seeds on both sides)."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    if len(diffs) < 2:
        return statistics.mean(diffs), math.nan
    half = t_quantile(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return statistics.mean(diffs), half


def verdict(mean: float, half: float) -> str:
    if math.isnan(half) or abs(mean) <= half:
        return "no clear difference"
    return "better" if mean > 0 else "worse"


class Runner:
    """Runs (row, seed) student trainings in a pool of single-threaded worker processes."""

    def __init__(self, args: argparse.Namespace, teacher: dict[str, Any], console: Console) -> None:
        self.args, self.teacher, self.console = args, teacher, console
        self.started = time.perf_counter()
        self.train_seconds = 0.0  # summed over every run this study needed, reused or not

    def run(self, jobs: list[tuple[Row, int]], stage: str) -> dict[tuple[str, int], dict[str, Any]]:
        results: dict[tuple[str, int], dict[str, Any]] = {}
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.args.jobs, mp_context=context) as pool:
            futures = {
                pool.submit(
                    train_row,
                    row,
                    seed,
                    self.teacher[row.teacher]["path"],
                    str(self.args.out / row.key() / f"seed{seed}"),
                    self.args.overrides,
                ): (row, seed)
                for row, seed in jobs
            }
            for done, future in enumerate(futures, 1):
                row, seed = futures[future]
                results[(row.key(), seed)] = result = future.result()
                self.train_seconds += result["train_seconds"]
                self.console.print(
                    f"{stage} [{done}/{len(jobs)}] {row.label} {row.knob or ''}"
                    f"{'=' if row.knob else ''}{_knob_value(row)} seed {seed}: val {result['val_tail']:.2f}% "
                    f"({time.perf_counter() - self.started:.0f}s elapsed)"
                )
        return results


def _knob_value(row: Row) -> Any:
    if row.knob is None:
        return ""
    node: Any = row.options
    for part in row.knob.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def tune(rows: list[Row], runner: Runner) -> tuple[list[Row], dict[str, Any]]:
    """Pick each row's knob value on the validation split (mean over TUNE_SEEDS; ties: the first)."""
    candidates = [(row, row.with_value(v)) for row in rows if row.knob for v in row.values]
    results = runner.run([(c, s) for _, c in candidates for s in TUNE_SEEDS], "tune")
    chosen, record = [], {}
    for row in rows:
        if not row.knob:
            chosen.append(row)
            continue
        scores = []
        for value in row.values:
            variant = row.with_value(value)
            scores.append(statistics.mean(results[(variant.key(), s)]["val_tail"] for s in TUNE_SEEDS))
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        chosen.append(row.with_value(row.values[best]))
        record[row.label] = {
            "knob": row.knob,
            "values": list(row.values),
            "val_top1": scores,
            "chosen": row.values[best],
        }
    return chosen, record


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rows", nargs="+", help="labels or slugs of the rows to run (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="student runs in parallel (1 thread each)")
    parser.add_argument("--no-tune", action="store_true", help="use the papers' values as they are")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-study")
    parser.add_argument("--name", default="accuracy_study_digits", help="results file stem")
    args = parser.parse_args()
    rows = [r for r in ROWS if not args.rows or r.label in args.rows or slugify(r.label) in args.rows]
    console = Console(width=150)

    import torch

    torch.set_num_threads(max(1, args.jobs))
    started = time.perf_counter()
    teacher = teachers(args.out, args.overrides)
    console.print(
        f"teacher {teacher['standard']['last']:.2f}%  generous teacher {teacher['generous']['last']:.2f}% "
        f"(last epoch, test)"
    )
    runner = Runner(args, teacher, console)
    tuning: dict[str, Any] = {}
    if args.no_tune:
        rows = [row.with_value(row.values[0]) if row.knob else row for row in rows]
    else:
        rows, tuning = tune(rows, runner)
    results = runner.run([(row, seed) for row in rows for seed in args.seeds], "study")
    per_row = {
        row.label: {
            key: [results[(row.key(), s)][key] for s in args.seeds]
            for key in ("last", "best", "epoch_seconds")
        }
        for row in rows
    }
    train_minutes = (runner.train_seconds + sum(t["train_seconds"] for t in teacher.values())) / 60
    report(args, rows, per_row, teacher, tuning, time.perf_counter() - started, train_minutes, console)


def report(
    args: argparse.Namespace,
    rows: list[Row],
    per_row: dict[str, dict[str, list[float]]],
    teacher: dict[str, Any],
    tuning: dict[str, Any],
    seconds: float,
    train_minutes: float,
    console: Console,
) -> None:
    """Print the table and write benchmarks/results/<name>.json|md."""
    header = [
        "method",
        "mean",
        "std",
        "vs CE (95% CI)",
        "vs KD (95% CI)",
        "best-val ckpt mean",
        "s/epoch",
    ]
    lines_out: list[list[str]] = []
    summary: dict[str, Any] = {}
    for row in rows:
        values = per_row[row.label]["last"]
        entry: dict[str, Any] = {
            "method": row.method,
            "options": row.options,
            "teacher": row.teacher,
            "last_epoch_test_top1": values,
            "best_val_checkpoint_test_top1": per_row[row.label]["best"],
            "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "epoch_seconds": statistics.mean(per_row[row.label]["epoch_seconds"]),
        }
        cells = []
        for base in ("CE", "KD"):
            if base in per_row and base != row.label:
                mean, half = paired(values, per_row[base]["last"])
                entry[f"vs_{base.lower()}"] = {"mean": mean, "ci95": half, "verdict": verdict(mean, half)}
                cells.append(f"{mean:+.2f} ± {half:.2f}")
            else:
                cells.append("-")
        summary[row.label] = entry
        lines_out.append(
            [
                row.label,
                f"{entry['mean']:.2f}",
                f"{entry['std']:.2f}",
                *cells,
                f"{statistics.mean(per_row[row.label]['best']):.2f}",
                f"{entry['epoch_seconds']:.2f}",
            ]
        )
    table = Table(title=f"digits method study, test top-1 % (last epoch), seeds {args.seeds}")
    for column in header:
        table.add_column(column, justify="left" if column == "method" else "right")
    for line in lines_out:
        table.add_row(*line)
    console.print(table)
    beats = [k for k, v in summary.items() if v.get("vs_kd", {}).get("verdict") == "better"]
    loses = [k for k, v in summary.items() if v.get("vs_kd", {}).get("verdict") == "worse"]
    ties = [k for k, v in summary.items() if v.get("vs_kd", {}).get("verdict") == "no clear difference"]
    plain = [
        f"- Clearly better than KD here (95% interval above 0): {', '.join(beats) or 'none'}.",
        f"- Clearly worse than KD: {', '.join(loses) or 'none'}.",
        f"- No clear difference from KD: {', '.join(ties) or 'none'}.",
    ]
    for label in ("RSD", "RSD + teacher"):
        if label in summary and "vs_ce" in summary[label]:
            versus = summary[label]["vs_ce"]
            helped = {"better": "helped", "worse": "hurt"}.get(versus["verdict"], "made no clear difference")
            plain.append(
                f"- {label} vs plain training of the same student (the CE row): {versus['mean']:+.2f} ± "
                f"{versus['ci95']:.2f} points, so it {helped} here."
            )
    console.print("\n".join(plain))
    info = machine()
    payload = {
        "benchmark": "accuracy_study_digits",
        "machine": info,
        "recipe": "recipes/digits.yaml",
        "study_overrides": STUDY,
        "overrides": args.overrides,
        "seeds": args.seeds,
        "jobs": args.jobs,
        "teacher": teacher,
        "tuning": {"seeds": list(TUNE_SEEDS), "metric": "mean val top-1 of the last 5 epochs", **tuning},
        "rows": summary,
        "wall_seconds_this_invocation": seconds,
        "train_minutes_all_runs": train_minutes,
    }
    md = [
        f"# Method study on digits, seeds {args.seeds}",
        "",
        f"{info['date']}, {info['device']} ({info['cores']} cores), torch {info['torch']}; "
        f"`python benchmarks/accuracy.py --seeds {' '.join(map(str, args.seeds))}` "
        f"({args.jobs} runs in parallel at 1 thread each; {train_minutes:.1f} min of training in all runs "
        f"together, teachers and tuning included, i.e. about {train_minutes / args.jobs:.0f} min of wall "
        f"time from scratch; this invocation: {seconds / 60:.1f} min, finished runs reused).",
        "",
        f"Setting: recipes/digits.yaml with `{' '.join(STUDY + args.overrides)}`: {setting(args.overrides)} "
        f"Teacher (seed 0, shared by every row): {teacher['standard']['last']:.2f}% test top-1; "
        f"Generous Teacher trained from it: {teacher['generous']['last']:.2f}%; its epoch took "
        f"{teacher['generous']['epoch_seconds'] / teacher['standard']['epoch_seconds']:.2f}x a standard "
        "teacher epoch (mean over its epochs, train + validation).",
        "",
        "Test split: 359 images; top-1 % of the last epoch (no selection). 'vs CE' / 'vs KD': mean paired "
        "difference over seeds (same seed = same initial weights and batch order) with the half-width "
        "of its 95% t-interval. s/epoch: train + validation wall-time per epoch (parallel runs share "
        "the 2 cores alike).",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
        *["| " + " | ".join(line) + " |" for line in lines_out],
        "",
        *plain,
        "",
        "Hyper-parameters: the papers' CIFAR defaults (KD T=4, CE 0.1, KD 0.9; KD+LS base T=2, CE 0.1, KD "
        f"weight 9; DKD alpha 1, beta 8, T 4, warm-up {WARMUP} epochs = 20/240 of the schedule; "
        "DIST tau 4, beta = gamma = 1, KD weight 2; DIST+ adds feature DIST on the last stage (our reading, "
        "or torchdistill's where named) and, where named, acclimation with the head at 0.1x lr; "
        "Generous Teacher k 2, NCKD weight 1; SATE with an "
        f"intermediate teacher of the teacher's architecture from scratch, CE/KD/aware weights 1, student "
        f"warm-up {WARMUP} epochs, EMA decay 0.99), then one knob per row chosen on the validation split "
        f"(seeds {TUNE_SEEDS[0]} and {TUNE_SEEDS[1]}, not the reported ones; mean validation top-1 of the "
        "last 5 epochs; ties keep the paper's value). The test split is read only for the table above.",
        "",
        "| row | knob | values | val top-1 per value | chosen |",
        "|---|---|---|---|---|",
        *[
            f"| {label} | `{t['knob']}` | {', '.join(map(str, t['values']))} | "
            f"{', '.join(f'{v:.2f}' for v in t['val_top1'])} | {t['chosen']} |"
            for label, t in tuning.items()
        ],
    ]
    write_results(args.name, payload, "\n".join(md))


if __name__ == "__main__":
    main()
