"""`kdforge doctor`: which backends are usable on this machine, one line each."""

from __future__ import annotations

import importlib
import shutil
import subprocess
from collections.abc import Callable


def _torch() -> tuple[bool, str]:
    import torch

    cuda = torch.cuda.is_available()
    where = (
        f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}" if cuda else "CPU only (no CUDA device)"
    )
    return True, f"torch {torch.__version__}: {where}, {torch.get_num_threads()} threads"


def _triton() -> tuple[bool, str]:
    try:
        triton = importlib.import_module("triton")
    except ImportError:
        return False, "not installed (comes with the CUDA torch wheels)"
    import torch

    if torch.cuda.is_available():
        return True, f"triton {triton.__version__}: compiled kernels on CUDA"
    return False, f"triton {triton.__version__} installed, but no CUDA GPU: losses use plain torch on the CPU"


def _onnxruntime() -> tuple[bool, str]:
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError:
        return False, "not installed: pip install onnxruntime (CPU) or kdforge[gpu] (see README)"
    return True, f"onnxruntime {ort.__version__}: providers {', '.join(ort.get_available_providers())}"


def _tensorrt() -> tuple[bool, str]:
    from kdforge.export.tensorrt import tensorrt_status

    return tensorrt_status()


def _version_line(program: str) -> str:
    """The first line `program --version` prints ('version unknown' if it prints nothing)."""
    try:
        lines = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        lines = ""
    return lines.splitlines()[0] if lines.strip() else "version unknown"


def _aoti() -> tuple[bool, str]:
    from kdforge.export.bench.available import cxx_compiler

    compiler = cxx_compiler()
    if compiler is None:
        return False, "no C++ compiler on PATH: AOTInductor cannot compile (install g++ or clang++)"
    return True, f"C++ compiler {compiler} ({_version_line(compiler)})"


def _cmake() -> tuple[bool, str]:
    cmake = shutil.which("cmake")
    if cmake is None:
        return False, "cmake not on PATH: the native latency runner cannot be built (pip install cmake)"
    return True, _version_line(cmake)


def _backends() -> tuple[bool, str]:
    from kdforge.export.bench.available import LATENCY_BACKENDS, why_unavailable

    usable = [name for name in LATENCY_BACKENDS if why_unavailable(name) is None]
    missing = [name for name in LATENCY_BACKENDS if name not in usable]
    return bool(usable), f"deploy/bench run here on {', '.join(usable)}" + (
        f"; not here: {', '.join(missing)}" if missing else ""
    )


CHECKS: dict[str, Callable[[], tuple[bool, str]]] = {
    "torch": _torch,
    "triton": _triton,
    "onnxruntime": _onnxruntime,
    "tensorrt": _tensorrt,
    "aotinductor": _aoti,
    "cmake": _cmake,
    "backends": _backends,
}


def doctor() -> list[tuple[str, bool, str]]:
    """(name, usable, one-line detail) for every backend kdforge can use."""
    report = []
    for name, check in CHECKS.items():
        try:
            usable, detail = check()
        except Exception as exc:  # a broken install must not crash the doctor
            usable, detail = False, f"check failed: {type(exc).__name__}: {str(exc)[:120]}"
        report.append((name, usable, detail))
    return report
