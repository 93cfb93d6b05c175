"""The native runner against Python: p50 of kdforge-runner, Python AOTInductor (the same .pt2 through
torch's loader) and torch eager on the digits KD student, batch 1 and 64, in one run.

Each measurement runs in a fresh process of its own (the runner, or this script in --measure mode), so no
backend's idle threads compete with another's; each round times the three back to back, three rounds
rotate the order, and the table shows every round's p50 and their median, so the machine's drift shows
rather than hides. Target (issue 7): native p50 at most 1.0x Python AOTInductor's.

On this 2-vCPU VM a process's speed at batch 1 is bimodal (most processes run the student in ~0.3 ms, an
occasional one in ~0.8 ms for its whole life, whichever runtime it is), so many short rounds and their
median say more than a few long ones.

    python benchmarks/native.py [--rounds 11] [--min-duration 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, machine, write_results
from rich.console import Console

from compress.config import load_recipe
from export.bench import TimingPolicy, measure
from export.bench.backends import AotInductor, TorchEager
from export.deploy import load_network
from export.native import build_native, run_native
from kdforge.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[1]
BATCHES = (1, 64)


def measure_one(name: str, batch: int, target: Path, min_duration: float) -> None:
    """--measure mode: print the p50 of one Python backend on `target` (a .pt2 or a checkpoint)."""
    policy = TimingPolicy(min_duration_s=min_duration)
    if name == "python aoti":
        backend = AotInductor(target)
    else:
        model, meta = load_network(target)
        backend = TorchEager(model, (1, *meta["data"]["input_shape"]), "cpu")
    print(measure(backend.prepare(batch), batch, policy, backend.sync).p50)


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
        return measure_one(name.replace("-", " "), int(batch), Path(path), args.min_duration)
    console = Console(width=140)
    started = time.perf_counter()
    config = load_recipe(REPO / "recipes" / "digits.yaml", ["deploy.device=cpu"])
    rows = run_pipeline(config, args.out, resume=True, progress=False, console=console)
    student = rows[-1].checkpoint
    package = next((args.out / "deploy-student").glob("*-fp32.pt2"))
    runner = build_native(log=console.print)
    policy = TimingPolicy(min_duration_s=args.min_duration)

    def timed(name: str, batch: int) -> float:
        if name == "native":
            return run_native(package, (batch,), policy)[0]["p50"]
        target = package if name == "python aoti" else student
        command = [sys.executable, __file__, "--min-duration", str(args.min_duration), "--measure"]
        done = subprocess.run(
            [*command, name.replace(" ", "-"), str(batch), str(target)],
            capture_output=True,
            text=True,
            check=True,
        )
        return float(done.stdout.strip().splitlines()[-1])

    names = ["native", "python aoti", "torch eager"]
    p50: dict[tuple[str, int], list[float]] = {(n, b): [] for n in names for b in BATCHES}
    for round_index in range(args.rounds):
        order = names[round_index % 3 :] + names[: round_index % 3]
        for batch in BATCHES:
            for name in order:
                p50[(name, batch)].append(timed(name, batch))
                console.print(
                    f"round {round_index + 1} batch {batch} {name}: p50 {p50[(name, batch)][-1]:.3f} ms"
                )
    median = {key: statistics.median(values) for key, values in p50.items()}
    ratios = {b: median[("native", b)] / median[("python aoti", b)] for b in BATCHES}
    info = machine()
    minutes = (time.perf_counter() - started) / 60
    lines = [
        "# Native runner vs Python: the digits KD student (resnet8) as an AOTInductor package",
        "",
        f"{info['date']}, {info['device']} ({info['cores']} cores, {info['torch_threads']} torch threads), "
        f"torch {info['torch']}; `python benchmarks/native.py` ({minutes:.1f} min); "
        f"kdforge-runner backends: {', '.join(runner.backends)}. {args.rounds} rounds, each timing the three "
        f"back to back, each in a fresh process ({args.min_duration:.1f} s of runs after a 200 ms warm-up); "
        "copies excluded. A process's speed on this VM is bimodal (see the per-round values): the median "
        "over rounds is the figure to compare.",
        "",
        "| batch | backend | p50 per round (ms) | median p50 (ms) | vs Python AOTI |",
        "|---:|---|---|---:|---:|",
    ]
    for batch in BATCHES:
        for name in names:
            values = ", ".join(f"{v:.3f}" for v in p50[(name, batch)])
            ratio = median[(name, batch)] / median[("python aoti", batch)]
            lines.append(f"| {batch} | {name} | {values} | {median[(name, batch)]:.3f} | {ratio:.2f}x |")
    lines += [
        "",
        "## Check",
        "",
        *[
            f"- native p50 at most 1.0x Python AOTInductor's at batch {b} ({ratios[b]:.2f}x): "
            f"**{'PASS' if ratios[b] <= 1.0 else 'FAIL'}**"
            for b in BATCHES
        ],
    ]
    console.print("\n".join(lines), markup=False, highlight=False)
    payload = {
        "benchmark": "native",
        "machine": info,
        "package": str(package.relative_to(REPO)) if package.is_relative_to(REPO) else str(package),
        "p50_ms_per_round": {f"{n} b{b}": v for (n, b), v in p50.items()},
        "median_p50_ms": {f"{n} b{b}": v for (n, b), v in median.items()},
        "native_over_python_aoti": {str(b): r for b, r in ratios.items()},
    }
    write_results("native", payload, "\n".join(lines), args.results)


if __name__ == "__main__":
    main()
