"""`build_native`: configure (once) and build kdforge-runner with CMake from the sources that ship in this
package, into a per-environment folder of the user's cache (reused: CMake rebuilds only what changed)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kdforge.compress.errors import UserError

SOURCE_DIR = Path(__file__).resolve().parent  # CMakeLists.txt + runner.cmake + the C++ sources
BINARY = "kdforge-runner"


def default_build_dir() -> Path:
    """Where the runner is built unless told otherwise: $XDG_CACHE_HOME (or ~/.cache)/kdforge/native/<env>,
    one folder per Python environment, since the runner links that environment's libtorch."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    prefix = str(Path(sys.prefix).resolve())
    name = re.sub(r"[^A-Za-z0-9_-]", "", Path(prefix).name).lstrip("_-") or "python"
    return root / "kdforge" / "native" / f"{name}-{hashlib.sha256(prefix.encode()).hexdigest()[:8]}"


DEFAULT_BUILD_DIR = default_build_dir()


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


def _configured_source(build: Path) -> str | None:
    """The source folder an existing CMake cache in `build` was generated from (None when there is none)."""
    cache = build / "CMakeCache.txt"
    if not cache.is_file():
        return None
    for line in cache.read_text(errors="replace").splitlines():
        if line.startswith("CMAKE_HOME_DIRECTORY:"):
            return line.partition("=")[2]
    return None


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def build_native(
    build_dir: str | Path = DEFAULT_BUILD_DIR,
    *,
    tensorrt_root: str | None = None,
    onnxruntime_root: str | None = None,
    cmake_options: tuple[str, ...] = (),
    jobs: int = 2,
    log: Callable[[str], None] | None = None,
) -> NativeBuild:
    """Configure when the build directory is new, the options changed or no backend was found last time,
    then build (incremental). Refuses, in one line, a runner with no backend. `cmake_options` are passed
    to CMake as they are (-DNAME=VALUE). Builds into one folder take turns (a file lock), so two processes
    that build at once (two deploys, parallel tests) never run CMake over each other."""
    if not (SOURCE_DIR / "CMakeLists.txt").is_file():
        raise UserError(f"no CMakeLists.txt in {SOURCE_DIR}: this kdforge install lacks the runner's sources")
    log = log or (lambda message: None)
    cmake = _cmake()
    build = Path(build_dir).resolve()
    build.mkdir(parents=True, exist_ok=True)
    with _exclusive(build / ".kdforge-build.lock", log):
        return _configure_and_build(build, cmake, tensorrt_root, onnxruntime_root, cmake_options, jobs, log)


@contextlib.contextmanager
def _exclusive(lock: Path, log: Callable[[str], None]) -> Iterator[None]:
    """Hold an advisory lock on `lock` (released when the process exits, whatever the way)."""
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another build in {lock.parent}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _configure_and_build(
    build: Path,
    cmake: str,
    tensorrt_root: str | None,
    onnxruntime_root: str | None,
    cmake_options: tuple[str, ...],
    jobs: int,
    log: Callable[[str], None],
) -> NativeBuild:
    logfile = build / "build.log"
    logfile.write_text("")
    options = [f"-DPython3_EXECUTABLE={sys.executable}", "-DCMAKE_BUILD_TYPE=Release"]
    if tensorrt_root:
        options.append(f"-DTensorRT_ROOT={tensorrt_root}")
    if onnxruntime_root:
        options.append(f"-DONNXRUNTIME_ROOT={onnxruntime_root}")
    options.extend(cmake_options)
    stamp = build / "kdforge-options.txt"
    stamped = "\n".join([f"-S {SOURCE_DIR}", *options])
    source = _configured_source(build)
    if source is not None and Path(source).resolve() != SOURCE_DIR:
        # configured from another copy of the sources (a checkout, an older install): CMake refuses to
        # reuse such a cache, so the configuration starts over (objects are rebuilt as needed)
        (build / "CMakeCache.txt").unlink()
        shutil.rmtree(build / "CMakeFiles", ignore_errors=True)
        source = None
    backends_file = build / "backends.txt"
    if source is None or not stamp.is_file() or stamp.read_text() != stamped or not _lines(backends_file):
        log(f"configuring {build} (cmake)")
        _run([cmake, "-S", str(SOURCE_DIR), "-B", str(build), *options], logfile, "cmake configure")
        stamp.write_text(stamped)
    missing = _lines(build / "missing-backends.txt")
    if not _lines(backends_file):
        raise UserError(
            f"no backend found, so {BINARY} would time nothing: "
            + "; ".join(missing or ["every backend is switched off (KDFORGE_WITH_*=OFF)"])
            + f" (full log: {logfile})"
        )
    for line in missing:
        log(f"not compiled in: {line}")
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
