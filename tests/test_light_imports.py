"""Deploy, bench and AOTInductor resolve a device through `kdforge.compress.device`, so importing them does
not import the Trainer and every distillation method (compress.jobs)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("kdforge.compress.jobs", "kdforge.compress.train.trainer", "kdforge.compress.methods.kd")
LIGHT = (
    "kdforge.compress.device",
    "kdforge.compress.layout",
    "kdforge.export.aoti.package",
    "kdforge.export.bench.backends",
    "kdforge.export.deploy",
)

# One fresh interpreter imports the light modules one after another and, after each, names any heavy module
# loaded so far: the first light module that pulls one in is the one reported (the union of what they load
# stays light only if each does).
PROBE = """
import importlib, sys
for module in {light!r}:
    importlib.import_module(module)
    heavy = [m for m in {heavy!r} if m in sys.modules]
    if heavy:
        print(module, "imports", ", ".join(heavy))
        break
"""


def test_importing_them_does_not_import_the_trainer_or_the_methods() -> None:
    code = PROBE.format(light=LIGHT, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
