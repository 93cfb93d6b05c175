"""Run kdforge from a checkout that is not installed (a lent GPU image: the repository copied in, no pip).

pyproject.toml maps the folders compress/, kernels/ and export/ to kdforge.compress, kdforge.kernels and
kdforge.export, so `PYTHONPATH=.` alone gives `kdforge` (the kdforge/ folder) but not its subpackages. This
module puts the checkout on sys.path and appends it to `kdforge.__path__`, so `import kdforge.kernels`
finds kernels/ under its proper name. It does nothing where kdforge is installed.

    python benchmarks/_bootstrap.py -m pytest -p benchmarks._bootstrap tests/kernels  # + xdist workers
    python benchmarks/_bootstrap.py benchmarks/loss_kernels.py --losses kd             # a script
    python benchmarks/_bootstrap.py -m kdforge doctor                                  # a module
    python benchmarks/_bootstrap.py --check                      # where kdforge.kernels comes from

With -p the module is a pytest plugin: every process pytest starts (xdist workers) imports it first; for
that PYTHONPATH must hold the checkout (gpu_suite.sh sets it).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def install() -> str:
    """Make kdforge's subpackages importable from the checkout; returns where kdforge.kernels comes from."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import kdforge

    try:
        import kdforge.kernels  # an installed kdforge (wheel or editable) maps it already
    except ImportError:
        kdforge.__path__.append(str(REPO))
        import kdforge.kernels

    return str(Path(kdforge.kernels.__file__).parent)


install()


def main(argv: list[str]) -> None:
    """`-m module args...` or `script.py args...`, run as __main__ after install(); `--check` prints
    where kdforge.kernels is imported from."""
    if not argv:
        raise SystemExit(f"usage: {Path(__file__).name} (--check | -m module | script.py) [args...]")
    if argv[0] == "--check":
        print(install())
    elif argv[0] == "-m":
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        sys.path.insert(0, str(Path(argv[0]).resolve().parent))
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
