"""The default demo over seeds: `kdforge run recipes/digits.yaml --set seed=N` end to end (three networks
trained, teacher and student deployed, report written), timed as a user would time it.

For each seed: test top-1 of the teacher, the CE student and the distilled student as the run's table
shows them (the checkpoint selected on the validation split), the distilled-minus-CE difference, the
sentence the run ends with, and the wall time of the whole command. Checks (issue 15): distilled > CE on
every seed and by >= 2 points on average, teacher >= 97% on every seed, each run <= 300 s.

    python benchmarks/accuracy_demo.py [--seeds 0 1 2] [--recipe recipes/digits.yaml] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import check_lines, machine, markdown_table, print_table, write_results
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
TEACHER_TARGET = 97.0
GAIN_TARGET = 2.0
WALL_TARGET_S = 300.0


def run_seed(recipe: str, seed: int, out: Path, overrides: list[str]) -> dict[str, object]:
    """One fresh `kdforge run` for `seed`; its rows, last line and wall time."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "kdforge", "run", recipe, "--out", str(out), "--no-progress"]
    command += [arg for item in [*overrides, f"seed={seed}"] for arg in ("--set", item)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: kdforge run failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    rows = json.loads((out / "results.json").read_text())["rows"]
    top1 = {("teacher" if r["stage"].startswith("teacher") else r["method"]): r["test_top1"] for r in rows}
    archs = {("teacher" if r["stage"].startswith("teacher") else r["method"]): r["arch"] for r in rows}
    return {"top1": top1, "archs": archs, "wall_s": wall, "sentence": done.stdout.strip().splitlines()[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="recipes/digits.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-demo"))
    parser.add_argument("--name", default="accuracy_demo_digits", help="results file stem")
    args = parser.parse_args()

    console = Console(width=150)
    runs = {}
    for seed in args.seeds:
        runs[seed] = run_seed(args.recipe, seed, Path(args.out) / f"seed{seed}", args.overrides)
        console.print(f"seed {seed}: {runs[seed]['wall_s']:.0f} s; {runs[seed]['sentence']}")
    method = next(k for k in runs[args.seeds[0]]["top1"] if k not in ("teacher", "ce"))
    gains = [runs[s]["top1"][method] - runs[s]["top1"]["ce"] for s in args.seeds]
    checks = {
        f"{method} - CE > 0 on every seed": all(g > 0 for g in gains),
        f"{method} - CE >= {GAIN_TARGET:.0f} points on average": statistics.mean(gains) >= GAIN_TARGET,
        f"teacher >= {TEACHER_TARGET:.0f}% on every seed": all(
            runs[s]["top1"]["teacher"] >= TEACHER_TARGET for s in args.seeds
        ),
        f"kdforge run <= {WALL_TARGET_S:.0f} s on every seed": all(
            runs[s]["wall_s"] <= WALL_TARGET_S for s in args.seeds
        ),
    }
    header = ["seed", "teacher", "student CE", f"student {method}", f"{method} - CE", "kdforge run s"]
    lines = [
        [
            str(s),
            f"{runs[s]['top1']['teacher']:.2f}",
            f"{runs[s]['top1']['ce']:.2f}",
            f"{runs[s]['top1'][method]:.2f}",
            f"{gain:+.2f}",
            f"{runs[s]['wall_s']:.0f}",
        ]
        for s, gain in zip(args.seeds, gains, strict=True)
    ]

    def mean(key: str) -> str:
        return f"{statistics.mean(runs[s]['top1'][key] for s in args.seeds):.2f}"

    walls = [runs[s]["wall_s"] for s in args.seeds]
    lines.append(["mean", mean("teacher"), mean("ce"), mean(method), f"{statistics.mean(gains):+.2f}",
                  f"{statistics.mean(walls):.0f}"])  # fmt: skip
    print_table(
        console, f"kdforge run {args.recipe}: test top-1 % (checkpoint selected on val)", header, lines
    )
    for name, ok in checks.items():
        console.print(f"{name}: {'PASS' if ok else 'FAIL'}")

    info = machine()
    archs = runs[args.seeds[0]]["archs"]
    payload = {
        "benchmark": "accuracy_demo_digits",
        "machine": info,
        "recipe": args.recipe,
        "overrides": args.overrides,
        "seeds": args.seeds,
        "archs": archs,
        "runs": {str(s): runs[s] for s in args.seeds},
        "gains": gains,
        "checks": checks,
    }
    markdown = [
        f"# The default demo over seeds {args.seeds}",
        "",
        f"{info['date']}, {info['device']} ({info['cores']} cores), torch {info['torch']}; "
        f"`python benchmarks/accuracy_demo.py --seeds {' '.join(map(str, args.seeds))}`: one fresh "
        f"`kdforge run {args.recipe} --set seed=N` per seed (teacher {archs['teacher']}, student "
        f"{archs['ce']}; train three networks, deploy two, write the report), timed from the command's "
        "start to its exit. Test top-1 % of the checkpoint selected on the validation split (the run "
        "table's headline number).",
        "",
        *markdown_table(header, lines),
        "",
        *check_lines(checks),
        "",
        "The sentence each run ends with:",
        "",
        *[f"- seed {s}: {runs[s]['sentence']}" for s in args.seeds],
    ]
    write_results(args.name, payload, "\n".join(markdown))


if __name__ == "__main__":
    main()
