"""`run_native`: time a .pt2 / .engine / .onnx with kdforge-runner and return its rows, which carry the
Python profiler's field names (export/bench/schema.py), so reports treat it as one more backend."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from kdforge.compress.errors import UserError
from kdforge.export.bench.schema import read_rows
from kdforge.export.bench.timing import TimingPolicy
from kdforge.export.native.build import DEFAULT_BUILD_DIR, find_runner


def run_native(
    model: str | Path,
    batches: tuple[int, ...],
    policy: TimingPolicy | None = None,
    *,
    build_dir: str | Path = DEFAULT_BUILD_DIR,
    threads: int | None = None,
    extra: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Latency rows of `model` at each batch from the native runner (backend name prefixed 'native-')."""
    policy = policy or TimingPolicy()
    runner = find_runner(build_dir)
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "native.json"
        command = [
            str(runner.binary),
            "--model", str(model),
            "--batch", ",".join(map(str, batches)),
            "--warmup-ms", str(1000 * policy.warmup_s),
            "--min-iters", str(policy.min_iterations),
            "--min-ms", str(1000 * policy.min_duration_s),
            "--json", str(out),
            *(["--threads", str(threads)] if threads else []),
            *extra,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
            raise UserError(lines[-1].removeprefix("kdforge-runner: error: "))
        rows = read_rows(out.read_text(), "kdforge-runner", "; rebuild it: kdforge build-native")
    for row in rows:
        row["backend"] = f"native-{row['backend']}"
    return rows
