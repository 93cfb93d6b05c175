"""Every fused-kernel variant compiles for sm_90 (H100/H200) without a GPU, with no register spill.

tests/kernels/sm90_compile.py makes a compile-only Triton driver active in a fresh process (the suite's
TRITON_INTERPRET=1 would interpret the kernels instead), runs the real autograd wrappers on CPU tensors and
reads each cubin's register and stack use with the cuobjdump Triton bundles. The representative set runs
here; the full set (every shape class, dtype, standardize, gradient and layout: hundreds of variants,
minutes of ptxas) is `slow` and runs with KDFORGE_SM90_ALL=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("sm90_compile.py")
REPO = Path(__file__).resolve().parents[2]


def _compile(tmp_path: Path, *args: str) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # a cold cache: every variant goes through ptxas
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode not in (0, 1) or not out.is_file():
        pytest.fail(
            f"sm_90 compile failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return json.loads(out.read_text())


def _check(rows: list[dict]) -> None:
    assert rows, "no kernel variant was compiled"
    spills = [r for r in rows if r["local_bytes"] or r["stack_bytes"]]
    assert not spills, f"register spills on sm_90: {spills}"
    assert max(r["registers"] for r in rows) <= 255
    kernels = {r["kernel"] for r in rows}
    assert kernels >= {
        "_kd_forward_kernel",
        "_kd_backward_kernel",
        "_dkd_forward_kernel",
        "_dkd_backward_kernel",
        "_dist_row_kernel",
        "_dist_col_kernel",
        "_dist_grad_kernel",
    }


def test_representative_variants_compile_for_sm90_without_spills(tmp_path: Path) -> None:
    rows = _compile(tmp_path)
    _check(rows)
    # contiguous rows of any C walk their body in 16-byte vectors (C = 2047 and 32001 are odd)
    for r in rows:
        if r["constexprs"].get("VEC", 1) > 1:
            assert r["vector_loads"] > 0, r
            if "backward" in r["kernel"] or "grad" in r["kernel"]:
                assert r["vector_stores"] > 0, r


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("KDFORGE_SM90_ALL") != "1", reason="set KDFORGE_SM90_ALL=1 (minutes of ptxas)"
)
def test_every_variant_compiles_for_sm90_without_spills(tmp_path: Path) -> None:
    _check(_compile(tmp_path, "--all"))
