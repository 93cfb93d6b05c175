// Latency measurement exactly as the Python profiler (export/bench/timing.py) does it: warm-up by time,
// then at least N iterations and at least a minimum duration; the same statistics and field names.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace kdforge {

struct TimingPolicy {
  double warmup_ms = 200.0;
  int64_t min_iterations = 50;
  double min_duration_ms = 1000.0;
  int64_t max_iterations = 100000;
};

struct LatencyStats {
  int64_t batch = 0;
  int64_t iterations = 0;
  double p50 = 0, p90 = 0, p95 = 0, p99 = 0, mean = 0, std = 0, cov = 0;
  double throughput = 0;  // images per second at the median latency
  double peak_rss_mb = 0;
  double page_faults_per_run = 0;  // minor page faults of the process per measured run
  std::vector<double> samples_ms;
};

// Linear-interpolated percentile (q in [0, 100]) of already sorted values (numpy's default method).
double percentile(const std::vector<double>& sorted, double q);

// Figures of a list of per-run latencies (population standard deviation, as Python's pstdev).
LatencyStats summarize(const std::vector<double>& samples_ms, int64_t batch);

// Warm up by calling `run_once` for policy.warmup_ms, then time runs with `time_one_run` until both
// minimums are met.
LatencyStats measure(const std::function<void()>& run_once, const std::function<double()>& time_one_run,
                     const std::function<void()>& sync, int64_t batch, const TimingPolicy& policy);

// Peak resident set size of this process in MB (getrusage, like the Python profiler).
double peak_rss_mb();

// Minor page faults this process has taken so far (getrusage), to report faults per run.
int64_t minor_page_faults();

}  // namespace kdforge
