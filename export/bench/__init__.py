"""The latency profiler: backends behind one interface and trtexec-style measurement."""

from export.bench.backends import Backend, OnnxRuntime, TorchEager
from export.bench.timing import (
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
