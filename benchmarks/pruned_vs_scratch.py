"""Pruned from the teacher vs a zoo student from scratch, at matched measured latency, on digits.

Reads the budget searches `benchmarks/budget_digits.py` left in runs/bench-budget/seed<N>/budget: their
teacher, the pruned candidate (default: pruned-d0-w75, the teacher with every droppable conv dropped and
3/4 of its channels pruned) and every zoo candidate's latency, timed in the same rounds on the same target.
The zoo student is the one whose latency in seed 0's search is closest to the pruned one's. Then, per seed,
both are distilled with the recipe (`kdforge compress`, KD from that seed's teacher, 40 epochs, 30% of the
labels): the pruned one from its inherited weights (`--init`), the zoo one from scratch.

    python benchmarks/pruned_vs_scratch.py [--seeds 0 1 2] [--pruned pruned-d0-w75]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import machine, markdown_table, print_table, write_results
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]


def journal(root: Path, seed: int) -> dict:
    path = root / f"seed{seed}" / "budget" / "search" / "journal.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run benchmarks/budget_digits.py --seeds {seed} first")
    return json.loads(path.read_text())


def closest_zoo(record: dict, pruned: str) -> str:
    """The zoo candidate whose p50 on the target is closest to the pruned candidate's."""
    timings = record["timings"]
    goal = timings[pruned]["p50"]
    zoo = [name for name in timings if name.startswith("zoo-")]
    return min(zoo, key=lambda name: abs(timings[name]["p50"] - goal))


def distill(recipe: str, seed: int, teacher: Path, out: Path, sets: list[str], init: Path | None) -> dict:
    """One `kdforge compress` run; its result.json and wall seconds."""
    command = [sys.executable, "-m", "kdforge", "compress", recipe, "--teacher", str(teacher)]
    command += ["--out", str(out), "--no-progress", *([] if init is None else ["--init", str(init)])]
    command += [arg for item in [*sets, f"seed={seed}"] for arg in ("--set", item)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()[-600:]}")
    return {**json.loads((out / "result.json").read_text()), "wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="recipes/digits.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pruned", default="pruned-d0-w75")
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench-budget"))
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-pruned-vs-scratch"))
    args = parser.parse_args()
    console = Console(width=150)
    root, out = Path(args.runs), Path(args.out)
    records = {s: journal(root, s) for s in args.seeds}
    zoo_name = closest_zoo(records[args.seeds[0]], args.pruned)
    zoo_arch = next(c["arch"] for c in records[args.seeds[0]]["candidates"] if c["name"] == zoo_name)
    results = {}
    for seed in args.seeds:
        search = root / f"seed{seed}" / "budget"
        teacher = search / "teacher" / "checkpoints" / "best.safetensors"
        init = search / "search" / "candidates" / args.pruned / "pruned.safetensors"
        pruned_arch = next(c["arch"] for c in records[seed]["candidates"] if c["name"] == args.pruned)
        timings = records[seed]["timings"]
        pruned = distill(args.recipe, seed, teacher, out / f"seed{seed}" / "pruned",
                         [f"student.arch={pruned_arch}"], init)  # fmt: skip
        zoo_sets = [f"student.arch={zoo_arch}"]
        zoo = distill(args.recipe, seed, teacher, out / f"seed{seed}" / "zoo", zoo_sets, None)
        results[seed] = {
            "pruned_ms": timings[args.pruned]["p50"],
            "zoo_ms": timings[zoo_name]["p50"],
            "pruned_test_top1": pruned["test_top1"],
            "zoo_test_top1": zoo["test_top1"],
            "pruned_wall_s": pruned["wall_s"],
            "zoo_wall_s": zoo["wall_s"],
        }
        console.print(f"seed {seed}: {results[seed]}")

    def spread(key: str) -> str:
        values = [results[s][key] for s in args.seeds]
        deviation = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} ± {deviation:.2f}"

    header = ["seed", "pruned p50 ms", "zoo p50 ms", "pruned test top-1", "zoo test top-1", "pruned - zoo"]
    lines = [
        [str(s), f"{r['pruned_ms']:.3f}", f"{r['zoo_ms']:.3f}", f"{r['pruned_test_top1']:.2f}",
         f"{r['zoo_test_top1']:.2f}", f"{r['pruned_test_top1'] - r['zoo_test_top1']:+.2f}"]
        for s, r in ((s, results[s]) for s in args.seeds)
    ]  # fmt: skip
    gaps = [results[s]["pruned_test_top1"] - results[s]["zoo_test_top1"] for s in args.seeds]
    lines.append(["mean ± sd", spread("pruned_ms"), spread("zoo_ms"), spread("pruned_test_top1"),
                  spread("zoo_test_top1"), f"{statistics.mean(gaps):+.2f}"])  # fmt: skip
    print_table(
        console, f"pruned {args.pruned} vs zoo {zoo_arch} from scratch, KD, matched latency", header, lines
    )
    info = machine()
    target = records[args.seeds[0]]["target"]
    payload = {"benchmark": "pruned_vs_scratch_digits", "machine": info, "pruned": args.pruned,
               "zoo": zoo_name, "target": target, "seeds": args.seeds,
               "results": {str(s): results[s] for s in args.seeds}}  # fmt: skip
    markdown = [
        "# Pruned from the teacher vs a zoo student from scratch, at matched measured latency (digits)",
        "",
        f"{info['date']}, {info['device']} ({info['cores']} cores), torch {info['torch']}; "
        f"`python benchmarks/pruned_vs_scratch.py --seeds {' '.join(map(str, args.seeds))}` after "
        "`benchmarks/budget_digits.py`. Latency: p50 of the shipped file on "
        f"{target['backend']} {target['precision']}, batch {target['batch']}, measured in the same rounds "
        f"inside each seed's budget search. The zoo student ({zoo_arch}) is the zoo candidate closest in "
        f"latency to {args.pruned} in seed 0's search. Both distilled with `kdforge compress "
        f"{args.recipe}` (KD from that seed's teacher, the recipe's 40 epochs on 30% of the labels): the "
        "pruned one from its inherited (pruned, BN-recalibrated) weights, the zoo one from scratch. Test "
        "top-1 % of the checkpoint selected on the validation split.",
        "",
        *markdown_table(header, lines),
    ]
    write_results("pruned_vs_scratch_digits", payload, "\n".join(markdown))


if __name__ == "__main__":
    main()
