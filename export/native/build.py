"""`build_native`: configure (once) and build kdforge-runner with CMake into build/native, reusing the build
directory (CMake rebuilds only what changed) and reporting which backends were compiled in."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compress.errors import UserError

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # where CMakeLists.txt is, in a source checkout
DEFAULT_BUILD_DIR = SOURCE_ROOT / "build" / "native"
BINARY = "kdforge-runner"


@dataclass
class NativeBuild:
    """A built runner and the backends compiled into it."""

    binary: Path
    backends: tuple[str, ...]


def _cmake() -> str:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise UserError("cmake is not on PATH: install it (pip install cmake, or your system's package)")
    return cmake


def _run(command: list[str], log: Path, what: str) -> None:
    with open(log, "a") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        lines = log.read_text(errors="replace").splitlines()
        first = next((line.strip() for line in lines if "error" in line.lower()), lines[-1] if lines else "")
        raise UserError(f"{what} failed: {first[:200]} (full log: {log})")


def build_native(
    build_dir: str | Path = DEFAULT_BUILD_DIR,
    *,
    tensorrt_root: str | None = None,
    onnxruntime_root: str | None = None,
    cmake_options: tuple[str, ...] = (),
    jobs: int = 2,
    log: Callable[[str], None] | None = None,
) -> NativeBuild:
    """Configure when the build directory is new or the options changed, then build (incremental).
    `cmake_options` are passed to CMake as they are (-DNAME=VALUE)."""
    if not (SOURCE_ROOT / "CMakeLists.txt").is_file():
        raise UserError(
            f"no CMakeLists.txt in {SOURCE_ROOT}: build the runner from a kdforge source checkout"
        )
    log = log or (lambda message: None)
    cmake = _cmake()
    build = Path(build_dir).resolve()
    build.mkdir(parents=True, exist_ok=True)
    logfile = build / "build.log"
    logfile.write_text("")
    options = [f"-DPython3_EXECUTABLE={sys.executable}", "-DCMAKE_BUILD_TYPE=Release"]
    if tensorrt_root:
        options.append(f"-DTensorRT_ROOT={tensorrt_root}")
    if onnxruntime_root:
        options.append(f"-DONNXRUNTIME_ROOT={onnxruntime_root}")
    options.extend(cmake_options)
    stamp = build / "kdforge-options.txt"
    if (
        not (build / "CMakeCache.txt").is_file()
        or not stamp.is_file()
        or stamp.read_text() != "\n".join(options)
    ):
        log(f"configuring {build} (cmake)")
        _run([cmake, "-S", str(SOURCE_ROOT), "-B", str(build), *options], logfile, "cmake configure")
        stamp.write_text("\n".join(options))
    log(f"building {BINARY} (incremental; the first build takes about a minute on 2 cores)")
    _run([cmake, "--build", str(build), "--parallel", str(jobs)], logfile, "cmake build")
    return find_runner(build)


def find_runner(build_dir: str | Path = DEFAULT_BUILD_DIR) -> NativeBuild:
    """The runner in `build_dir` and its backends; one line telling how to build it when absent."""
    binary = Path(build_dir) / BINARY
    if not binary.is_file():
        raise UserError(f"{binary} does not exist: build it with `kdforge build-native` (or `make native`)")
    listed = subprocess.run([str(binary), "--list-backends"], capture_output=True, text=True, check=False)
    names = tuple(n.strip() for n in listed.stdout.split(",") if n.strip() and n.strip() != "none")
    return NativeBuild(binary, names)
