"""Hostile-input study: every probe of the hostile-file corpus (tests/hostile/: code-running teachers and
packages, run folders and recipes, image folders, checkpoints and images, ONNX files for the lint) run as
a user would run it, `python -m kdforge ...` in its own process, each bounded in time and address space.
One row per probe: exit code, whether the error was one line, anything written outside, time and peak
memory. Writes benchmarks/results/hostile.{json,md}.

    python benchmarks/hostile.py [--timeout 120] [--memory-gib 12] [--only NAME-SUBSTRING]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine, write_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.hostile import Outcome, Probe, prepare, snapshot, verdict  # noqa: E402
from tests.hostile.corpus import all_probes  # noqa: E402


def _limits(memory_bytes: int) -> None:
    """In the child, before exec: cap its address space (a blow-up ends as MemoryError, not a dead box)."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def run_probe(probe: Probe, root: Path, timeout: float, memory_bytes: int) -> dict[str, Any]:
    """Build the probe under `root`, run its command in a bounded subprocess and judge what it did."""
    prepare(root)
    attack = probe.build(root)
    before = snapshot(root / "outside")
    env = {**os.environ, **attack.env, "PYTHONPATH": str(REPO)}
    began = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "kdforge", *attack.argv],
            cwd=root / "work",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            preexec_fn=lambda: _limits(memory_bytes),
        )
        timed_out = False
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - began > timeout:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                timed_out = True
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - began
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    outcome = Outcome(process.returncode, stdout, stderr, root)
    problems = verdict(probe, attack, outcome, before)
    if timed_out:
        problems.insert(0, f"still running after {timeout:.0f} s (killed)")
    error_lines = [line for line in stderr.splitlines() if line.strip()]
    written = sorted(set(snapshot(root / "outside")) ^ set(before))
    return {
        "probe": probe.name,
        "item": probe.item,
        "what": probe.what,
        "exit": process.returncode,
        "expected_exit": attack.expect_exit,
        "one_line": attack.expect_exit != 2
        or (len(error_lines) == 1 and error_lines[0].startswith("kdforge: error: ")),
        "first_line": (error_lines or stdout.strip().splitlines()[-1:] or [""])[0][:240],
        "written_outside": written[:5],
        "seconds": round(seconds, 2),
        "peak_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: ru_maxrss in KiB
        "problems": problems,
        "clean": not problems,
    }


def markdown(rows: list[dict[str, Any]], info: dict[str, Any], command: str, total: float) -> str:
    clean = sum(row["clean"] for row in rows)
    lines = [
        "# Hostile-input study",
        "",
        f"{info['date']}, {info['device']} ({info['cores']} cores), torch {info['torch']}; `{command}` "
        f"({total / 60:.1f} min).",
        "",
        "Each probe is a file an attacker hands a kdforge user (a teacher, a deployed package, a recipe, an "
        "image folder, a checkpoint, an image, an ONNX file) and the command the user runs on it, in its own "
        "process with a time limit and a cap on its address space. Clean: the expected exit code, an error "
        "as one `kdforge: error:` line (no traceback), nothing written or changed outside the run folder "
        "(every payload aims a marker file there), and the probe's own check (counts, escaped output). "
        "Peak memory is the process's maximum resident set, Python and torch included (an import of "
        "kdforge alone is most of it).",
        "",
        f"**{clean} of {len(rows)} probes clean.**",
        "",
        "| # | probe | what the attacker does | exit | one line | written outside | s | peak MiB | clean |",
        "|---:|---|---|---:|:---:|---|---:|---:|:---:|",
    ]
    for row in rows:
        outside = ", ".join(row["written_outside"]) or "nothing"
        verdict_text = "yes" if row["clean"] else "NO: " + "; ".join(row["problems"])[:200]
        exit_text = f"{row['exit']}" + (
            "" if row["exit"] == row["expected_exit"] else f" (want {row['expected_exit']})"
        )
        lines.append(
            f"| {row['item']} | `{row['probe']}` | {row['what'].replace('|', '/')} | {exit_text} | "
            f"{'yes' if row['one_line'] else 'NO'} | {outside} | {row['seconds']:.1f} | "
            f"{row['peak_mib']:.0f} | {verdict_text} |"
        )
    lines += ["", "What each run printed (its error line, or its last output line):", ""]
    for row in rows:
        first = row["first_line"].replace("|", "\\|").replace("`", "'")
        lines.append(f"- `{row['probe']}`: {first}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timeout", type=float, default=120, help="seconds each probe may run")
    parser.add_argument("--memory-gib", type=float, default=12, help="address-space cap per probe")
    parser.add_argument("--only", help="run only probes whose name contains this")
    parser.add_argument("--no-write", action="store_true", help="print the table, write no results")
    args = parser.parse_args()
    probes = [p for p in all_probes() if not args.only or args.only in p.name]
    rows = []
    began = time.perf_counter()
    memory = int(args.memory_gib * 2**30)
    with tempfile.TemporaryDirectory(prefix="kdforge-hostile-") as scratch:
        for index, probe in enumerate(probes):
            row = run_probe(probe, Path(scratch) / f"{index:02d}-{probe.name}", args.timeout, memory)
            rows.append(row)
            mark = "clean" if row["clean"] else "NOT CLEAN: " + "; ".join(row["problems"])
            print(
                f"[{index + 1:>2}/{len(probes)}] {probe.name:<40} exit {row['exit']:>3} "
                f"{row['seconds']:>6.1f} s {row['peak_mib']:>7.0f} MiB  {mark}",
                flush=True,
            )
    total = time.perf_counter() - began
    info = machine()
    command = "python benchmarks/hostile.py" + (f" --only {args.only}" if args.only else "")
    text = markdown(rows, info, command, total)
    print()
    print(text)
    if not args.no_write:
        payload = {"machine": info, "command": command, "seconds": round(total, 1), "rows": rows}
        write_results("hostile", payload, text)
    sys.exit(0 if all(row["clean"] for row in rows) else 1)


if __name__ == "__main__":
    main()
