"""kdforge-runner, the native latency runner: its C++ sources live here, `build_native` builds them with
CMake into build/native, and `run_native` times an artifact with it and returns profiler rows."""

from export.native.build import NativeBuild, build_native, find_runner
from export.native.run import run_native

__all__ = ["NativeBuild", "build_native", "find_runner", "run_native"]
