"""benchmarks/gpu_suite.sh and gpu_deploy.sh on a machine without a GPU: one line and exit 2 (no figure is
ever written off a GPU), a --dry-run plan that fits the device call's budget, the step machinery they share
(timeouts, budget, $OUT), and the bootstrap that runs the checkout without installing it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ["benchmarks/gpu_suite.sh", "benchmarks/gpu_deploy.sh"]


def _bash(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", **env},
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_dry_run_plans_within_the_budget(script: str) -> None:
    done = _bash(script, "--dry-run", PYTHON=sys.executable)
    assert done.returncode == 0, done.stderr
    budgets = [int(x) for x in re.findall(r"^  \S+\s+<=\s+(\d+) s", done.stdout, re.MULTILINE)]
    assert len(budgets) >= 5 and sum(budgets) + 15 <= 540, done.stdout
    assert "nothing measured, nothing written" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
@pytest.mark.parametrize("script", SCRIPTS)
def test_without_a_gpu_it_refuses_in_one_line(script: str, tmp_path: Path) -> None:
    done = _bash(script, PYTHON=sys.executable, OUT=str(tmp_path))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "no CUDA device" in done.stderr
    assert not any(tmp_path.iterdir()), "nothing may be written without a GPU"


def test_bootstrap_maps_the_subpackages_onto_the_checkout() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/_bootstrap.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0 and Path(done.stdout.strip()) == REPO / "kernels"


def test_steps_run_under_their_timeouts_and_leave_a_summary_and_a_tarball_in_out(tmp_path: Path) -> None:
    """The step machinery both scripts share (benchmarks/_steps.sh), with $OUT set as in a device call: a
    step that overruns is killed at its own limit and keeps the rows it wrote, a step that does not fit
    what is left of the budget is skipped and said so, and $OUT receives summary.md plus one tarball."""
    import tarfile

    fake_python = tmp_path / "python"  # stands in for the interpreter that names the GPU
    fake_python.write_text("#!/bin/sh\necho nvidia-h200\n")
    fake_python.chmod(0o755)
    out = tmp_path / "out"
    script = f"""
        set -uo pipefail
        root=$(pwd)
        . benchmarks/_steps.sh
        dry=0 budget=20 reserve=2 py={fake_python}
        gpu_script_outputs gpu-suite gpu
        suite_begin "steps on $device"
        step fast 10 1 bench bash -c 'echo row-1 >> "$0/rows.jsonl"; echo measured' "$work"
        step slow 2 1 bench bash -c 'echo row-2 >> "$0/rows.jsonl"; sleep 60' "$work"
        step late 10 100 bench true
        suite_end "$tarball"
        exit "$overall"
    """
    done = subprocess.run(
        ["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "OUT": str(out), "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # a step timed out
    assert sorted(p.name for p in out.iterdir()) == ["gpu-suite.tar.gz", "summary.md"]
    summary = (out / "summary.md").read_text()
    assert "# steps on nvidia-h200" in summary
    assert "## fast: ok" in summary and "measured" in summary
    assert "## slow: TIMED OUT after 2 s (rows written before it are kept)" in summary
    assert "## late: skipped" in summary and "needs >= 100 s" in summary
    with tarfile.open(out / "gpu-suite.tar.gz") as packed:
        names = {Path(n).name for n in packed.getnames()}
        rows = packed.extractfile("./rows.jsonl").read().decode().split()
    assert {"fast.log", "slow.log", "rows.jsonl", "summary.md"} <= names
    assert rows == ["row-1", "row-2"]
