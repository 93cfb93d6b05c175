"""The native runner against Python: p50 of kdforge-runner, Python AOTInductor (the same .pt2 through
torch's loader) and torch eager on the digits KD student, batch 1 and 64, in one run.

Each measurement runs in a fresh process of its own (the runner, or this script in --measure mode), so no
backend's idle threads compete with another's. Each round times every variant back to back in rotating
order; the table shows every round's p50, their median, and the median of the per-round ratios to Python
AOTInductor (paired: this VM's speed drifts over minutes, and both sides of a ratio then drift alike).
Target (issue 7): native p50 at most 1.0x Python AOTInductor's.

The runner keeps freed memory in the process between runs (export/native/heap.h); a Python process runs
with glibc's defaults, which hand each run's freed activations back to the kernel. Two more rows take that
apart: the runner with --release-memory, and Python with the runner's heap settings through glibc's
environment variables, so the like-for-like ratios show what the native loop itself is worth.

    python benchmarks/native.py [--rounds 11] [--min-duration 0.5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, machine, write_results
from kdforge.compress.config import load_recipe
from kdforge.compress.jobs import Session
from kdforge.compress.train.checkpoint import load_model
from kdforge.export.bench import TimingPolicy, measure
from kdforge.export.bench.backends import AotInductor, TorchEager
from kdforge.export.native import build_native, run_native
from rich.console import Console

from kdforge.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[1]
BATCHES = (1, 64)
# What kdforge-runner's retain_freed_memory() sets, as glibc's tunables for a Python process.
RETAINED_HEAP_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "2147483647"}
NATIVE, NATIVE_RELEASED = "native", "native, system heap"
PYTHON, PYTHON_RETAINED = "python aoti", "python aoti, retained heap"
EAGER = "torch eager"
VARIANTS = (NATIVE, NATIVE_RELEASED, PYTHON, PYTHON_RETAINED, EAGER)
# (numerator, denominator, what the ratio says); the first is the target.
RATIOS = (
    (NATIVE, PYTHON, "native as shipped vs Python AOTInductor as a Python process runs it"),
    (NATIVE, PYTHON_RETAINED, "like for like, both heaps retained"),
    (NATIVE_RELEASED, PYTHON, "like for like, both with glibc's default heap"),
)


def measure_one(name: str, batch: int, target: Path, min_duration: float) -> None:
    """--measure mode: print the p50 and page faults per run of one Python backend on `target`."""
    policy = TimingPolicy(min_duration_s=min_duration)
    if name == "aoti":
        backend = AotInductor(target)
    else:
        model, checkpoint = load_model(target)
        backend = TorchEager(model.eval(), (1, *checkpoint.meta["data"]["input_shape"]), "cpu")
    stats = measure(backend.prepare(batch), batch, policy, backend.sync)
    print(stats.p50, stats.page_faults_per_run)


def paired_median(p50: dict[tuple[str, int], list[float]], top: str, bottom: str, batch: int) -> float:
    """Median over rounds of top/bottom measured in the same round at `batch`."""
    pairs = zip(p50[(top, batch)], p50[(bottom, batch)], strict=True)
    return statistics.median(a / b for a, b in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--min-duration", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-deploy")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--measure", nargs=3, metavar=("NAME", "BATCH", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        name, batch, path = args.measure
        return measure_one(name, int(batch), Path(path), args.min_duration)
    console = Console(width=140)
    started = time.perf_counter()
    config = load_recipe(REPO / "recipes" / "digits.yaml", ["deploy.device=cpu"])
    rows = run_pipeline(config, args.out, session=Session(resume=True, progress=False), console=console)
    student = rows[-1].checkpoint
    package = next((args.out / "deploy-student").glob("*-fp32.pt2"))
    runner = build_native(log=console.print)
    policy = TimingPolicy(min_duration_s=args.min_duration)

    def timed(name: str, batch: int) -> tuple[float, float]:
        if name in (NATIVE, NATIVE_RELEASED):
            extra = ("--release-memory",) if name == NATIVE_RELEASED else ()
            (row,) = run_native(package, (batch,), policy, extra=extra)
            return row["p50"], row["page_faults_per_run"]
        backend, target = ("eager", student) if name == EAGER else ("aoti", package)
        env = {**os.environ, **(RETAINED_HEAP_ENV if name == PYTHON_RETAINED else {})}
        command = [sys.executable, __file__, "--min-duration", str(args.min_duration), "--measure"]
        done = subprocess.run(
            [*command, backend, str(batch), str(target)], capture_output=True, text=True, check=True, env=env
        )
        p50, faults = done.stdout.strip().splitlines()[-1].split()
        return float(p50), float(faults)

    p50 = {(n, b): [] for n in VARIANTS for b in BATCHES}
    faults = {(n, b): [] for n in VARIANTS for b in BATCHES}
    for round_index in range(args.rounds):
        shift = round_index % len(VARIANTS)
        order = VARIANTS[shift:] + VARIANTS[:shift]
        for batch in BATCHES:
            for name in order:
                latency, page_faults = timed(name, batch)
                p50[(name, batch)].append(latency)
                faults[(name, batch)].append(page_faults)
                console.print(
                    f"round {round_index + 1}/{args.rounds} batch {batch} {name}: p50 {latency:.3f} ms, "
                    f"{page_faults:.0f} page faults per run"
                )
    median = {key: statistics.median(values) for key, values in p50.items()}
    paired = {(t, d, b): paired_median(p50, t, d, b) for t, d, _ in RATIOS for b in BATCHES}
    info = machine()
    minutes = (time.perf_counter() - started) / 60
    lines = [
        f"# Native runner vs Python: the digits {config.method.name.upper()} student ({config.student.arch}) "
        "as an AOTInductor package",
        "",
        f"{info['date']}, {info['device']} ({info['cores']} cores, {info['torch_threads']} torch threads), "
        f"torch {info['torch']}; `python benchmarks/native.py` ({minutes:.1f} min); "
        f"kdforge-runner backends: {', '.join(runner.backends)}. {args.rounds} rounds, each timing every "
        f"variant back to back in a fresh process ({args.min_duration:.1f} s of runs after a 200 ms "
        "warm-up); copies excluded. *Retained heap*: freed memory stays in the process between runs (the "
        "runner's default; for Python, glibc's `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`). "
        "*System heap*: glibc's defaults, which a Python process has.",
        "",
        "| batch | variant | p50 per round (ms) | median p50 (ms) | page faults per run (median) "
        "| vs Python AOTI, paired |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for batch in BATCHES:
        for name in VARIANTS:
            values = ", ".join(f"{v:.3f}" for v in p50[(name, batch)])
            ratio = paired_median(p50, name, PYTHON, batch)
            lines.append(
                f"| {batch} | {name} | {values} | {median[(name, batch)]:.3f} "
                f"| {statistics.median(faults[(name, batch)]):.0f} | {ratio:.2f}x |"
            )
    lines += [
        "",
        "*Paired*: the median over rounds of the two p50s measured in the same round, divided.",
        "",
        "## Ratios",
        "",
        "| ratio | batch | paired median | of the medians |",
        "|---|---:|---:|---:|",
    ]
    for top, bottom, meaning in RATIOS:
        for batch in BATCHES:
            lines.append(
                f"| {top} / {bottom} ({meaning}) | {batch} | {paired[(top, bottom, batch)]:.2f}x "
                f"| {median[(top, batch)] / median[(bottom, batch)]:.2f}x |"
            )
    passed = {b: max(paired[(NATIVE, PYTHON, b)], median[(NATIVE, b)] / median[(PYTHON, b)]) for b in BATCHES}
    lines += [
        "",
        "## Check",
        "",
        *[
            f"- native p50 at most 1.0x Python AOTInductor's at batch {b}, paired and of the medians "
            f"(worse of the two: {passed[b]:.2f}x): **{'PASS' if passed[b] <= 1.0 else 'FAIL'}**"
            for b in BATCHES
        ],
    ]
    console.print("\n".join(lines), markup=False, highlight=False)
    payload = {
        "benchmark": "native",
        "machine": info,
        "package": str(package.relative_to(REPO)) if package.is_relative_to(REPO) else str(package),
        "retained_heap_env": RETAINED_HEAP_ENV,
        "p50_ms_per_round": {f"{n} b{b}": v for (n, b), v in p50.items()},
        "page_faults_per_run_per_round": {f"{n} b{b}": v for (n, b), v in faults.items()},
        "median_p50_ms": {f"{n} b{b}": v for (n, b), v in median.items()},
        "paired_median_ratio": {f"{t} / {d} b{b}": v for (t, d, b), v in paired.items()},
        "check_native_over_python_aoti": {str(b): r for b, r in passed.items()},
    }
    write_results("native", payload, "\n".join(lines), args.results)


if __name__ == "__main__":
    main()
