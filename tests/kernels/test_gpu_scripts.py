"""benchmarks/gpu_suite.sh and gpu_deploy.sh on a machine without a GPU: one line and exit 2 (no figure is
ever written off a GPU), a --dry-run plan that fits the device call's budget, and the bootstrap that runs
the checkout without installing it."""

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
