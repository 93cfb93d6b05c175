"""kdforge-runner, the native latency runner: its C++ sources and CMake files live here (and ship in the
package), `build_native` builds them into the user's cache, and `run_native` times an artifact with it."""

from kdforge.export.native.build import NativeBuild, build_native, find_runner
from kdforge.export.native.run import run_native

__all__ = ["NativeBuild", "build_native", "find_runner", "run_native"]
