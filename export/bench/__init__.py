"""The latency profiler: backends behind one interface and trtexec-style measurement.

The backends (torch, ONNX Runtime) load on first use; the timing and the backend registry need neither.
"""

from typing import Any

from kdforge.export.bench.timing import (
    COV_WARNING,
    LatencyStats,
    TimingPolicy,
    measure,
    measure_interleaved,
    percentile,
    summarize,
)

__all__ = [
    "COV_WARNING",
    "Backend",
    "LatencyStats",
    "OnnxRuntime",
    "TimingPolicy",
    "TorchEager",
    "measure",
    "measure_interleaved",
    "percentile",
    "summarize",
]

_BACKENDS = ("Backend", "OnnxRuntime", "TorchEager")


def __getattr__(name: str) -> Any:
    if name in _BACKENDS:
        from kdforge.export.bench import backends

        return getattr(backends, name)
    raise AttributeError(f"module 'kdforge.export.bench' has no attribute {name!r}")
