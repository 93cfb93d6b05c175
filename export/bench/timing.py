"""Latency measurement as trtexec / MLPerf do it: warm-up by time, then at least N iterations and at
least a minimum duration; percentiles, mean, std, CoV and throughput from the raw samples."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

COV_WARNING = 0.05


@dataclass
class TimingPolicy:
    """How long to warm up and how much to measure."""

    warmup_s: float = 0.2
    min_iterations: int = 50
    min_duration_s: float = 1.0
    max_iterations: int = 100_000


@dataclass
class LatencyStats:
    """Per-call latency figures (milliseconds) of one backend at one batch size."""

    batch: int
    iterations: int
    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    std: float
    cov: float
    throughput: float  # images per second at the median latency
    peak_rss_mb: float
    page_faults_per_run: float  # minor page faults of the process per call: per-call allocation churn
    samples_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def unstable(self) -> bool:
        return self.cov > COV_WARNING

    def as_dict(self, with_samples: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not with_samples:
            data.pop("samples_ms")
        return data


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of already sorted values."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    position = (len(sorted_values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(samples_ms: list[float], batch: int, page_faults: int) -> LatencyStats:
    """The figures of a list of per-call latencies (`page_faults`: minor faults taken over those calls)."""
    ordered = sorted(samples_ms)
    mean = statistics.fmean(ordered)
    std = statistics.pstdev(ordered) if len(ordered) > 1 else 0.0
    p50 = percentile(ordered, 50)
    return LatencyStats(
        batch=batch,
        iterations=len(ordered),
        p50=p50,
        p90=percentile(ordered, 90),
        p95=percentile(ordered, 95),
        p99=percentile(ordered, 99),
        mean=mean,
        std=std,
        cov=std / mean if mean > 0 else 0.0,
        throughput=1000.0 * batch / p50 if p50 > 0 else 0.0,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        page_faults_per_run=page_faults / len(ordered),
        samples_ms=samples_ms,
    )


Timer = Callable[[Callable[[], object]], float]


def minor_page_faults() -> int:
    """Minor page faults this process has taken so far (all threads)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def wall_clock_timer(sync: Callable[[], None] | None = None) -> Timer:
    """Milliseconds of one call by the host clock, after `sync` (a GPU stream's work finished)."""
    sync = sync or (lambda: None)

    def time_one(call: Callable[[], object]) -> float:
        tick = time.perf_counter()
        call()
        sync()
        return (time.perf_counter() - tick) * 1000.0

    return time_one


def cuda_event_timer(stream: Any) -> Timer:
    """Milliseconds of one call by CUDA events recorded on `stream` (a torch.cuda.Stream), as trtexec
    times GPU work: the host's launch overhead before the first kernel does not count."""
    import torch

    def time_one(call: Callable[[], object]) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        call()
        end.record(stream)
        end.synchronize()
        return float(start.elapsed_time(end))

    return time_one


def measure(
    call: Callable[[], object], batch: int, policy: TimingPolicy, sync: Callable[[], None] | None = None
) -> LatencyStats:
    """Warm up for `policy.warmup_s`, then time single calls until both minimums are met."""
    return measure_interleaved({"only": call}, batch, policy, sync)["only"]


def measure_interleaved(
    calls: dict[str, Callable[[], object]],
    batch: int,
    policy: TimingPolicy,
    sync: Callable[[], None] | None = None,
    timers: dict[str, Timer] | None = None,
) -> dict[str, LatencyStats]:
    """Time several calls together: warm each up, then rounds that run every call once in rotating order,
    until each has `min_iterations` samples and the rounds have lasted `min_duration_s` per call. Drift
    of the machine then hits every call alike, so their ratios are fair within one run. `timers` gives a
    call its own clock (CUDA events); the others use the host clock after `sync`."""
    if not calls:
        raise ValueError("measure_interleaved needs at least one call")
    default = wall_clock_timer(sync)
    clocks = {name: (timers or {}).get(name, default) for name in calls}
    names = list(calls)
    for name in names:
        start = time.perf_counter()
        while time.perf_counter() - start < policy.warmup_s:
            calls[name]()
        (sync or (lambda: None))()
    samples: dict[str, list[float]] = {name: [] for name in names}
    faults = dict.fromkeys(names, 0)
    began, round_index = time.perf_counter(), 0
    while round_index < policy.max_iterations and (
        round_index < policy.min_iterations
        or time.perf_counter() - began < policy.min_duration_s * len(names)
    ):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            before = minor_page_faults()
            samples[name].append(clocks[name](calls[name]))
            faults[name] += minor_page_faults() - before
        round_index += 1
    return {name: summarize(values, batch, faults[name]) for name, values in samples.items()}
