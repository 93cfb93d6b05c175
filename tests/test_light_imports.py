"""Deploy, bench and AOTInductor resolve a device through `kdforge.compress.device`, so importing them does
not import the Trainer and every distillation method (compress.jobs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("kdforge.compress.jobs", "kdforge.compress.train.trainer", "kdforge.compress.methods.kd")


@pytest.mark.parametrize(
    "module",
    [
        "kdforge.compress.device",
        "kdforge.compress.layout",
        "kdforge.export.aoti.package",
        "kdforge.export.bench.backends",
        "kdforge.export.deploy",
    ],
)
def test_importing_it_does_not_import_the_trainer_or_the_methods(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"{module} imports {done.stdout.strip()}"
