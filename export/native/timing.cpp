#include "timing.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

namespace kdforge {

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0.0;
  if (sorted.size() == 1) return sorted[0];
  const double position = static_cast<double>(sorted.size() - 1) * q / 100.0;
  const auto low = static_cast<size_t>(position);
  const size_t high = std::min(low + 1, sorted.size() - 1);
  return sorted[low] + (sorted[high] - sorted[low]) * (position - static_cast<double>(low));
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports kilobytes
}

int64_t minor_page_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_minflt);
}

LatencyStats summarize(const std::vector<double>& samples_ms, int64_t batch) {
  LatencyStats stats;
  std::vector<double> sorted = samples_ms;
  std::sort(sorted.begin(), sorted.end());
  const double n = static_cast<double>(sorted.size());
  stats.batch = batch;
  stats.iterations = static_cast<int64_t>(sorted.size());
  stats.mean = sorted.empty() ? 0.0 : std::accumulate(sorted.begin(), sorted.end(), 0.0) / n;
  double squares = 0.0;
  for (double v : sorted) squares += (v - stats.mean) * (v - stats.mean);
  stats.std = sorted.size() > 1 ? std::sqrt(squares / n) : 0.0;
  stats.cov = stats.mean > 0 ? stats.std / stats.mean : 0.0;
  stats.p50 = percentile(sorted, 50);
  stats.p90 = percentile(sorted, 90);
  stats.p95 = percentile(sorted, 95);
  stats.p99 = percentile(sorted, 99);
  stats.throughput = stats.p50 > 0 ? 1000.0 * static_cast<double>(batch) / stats.p50 : 0.0;
  stats.peak_rss_mb = peak_rss_mb();
  stats.samples_ms = samples_ms;
  return stats;
}

LatencyStats measure(const std::function<void()>& run_once, const std::function<double()>& time_one_run,
                     const std::function<void()>& sync, int64_t batch, const TimingPolicy& policy) {
  using clock = std::chrono::steady_clock;
  const auto elapsed_ms = [](clock::time_point since) {
    return std::chrono::duration<double, std::milli>(clock::now() - since).count();
  };
  const auto warm = clock::now();
  while (elapsed_ms(warm) < policy.warmup_ms) run_once();
  sync();
  std::vector<double> samples;
  const int64_t faults_before = minor_page_faults();
  const auto began = clock::now();
  while (static_cast<int64_t>(samples.size()) < policy.max_iterations &&
         (static_cast<int64_t>(samples.size()) < policy.min_iterations ||
          elapsed_ms(began) < policy.min_duration_ms)) {
    samples.push_back(time_one_run());
  }
  const int64_t faults = minor_page_faults() - faults_before;
  LatencyStats stats = summarize(samples, batch);
  stats.page_faults_per_run = static_cast<double>(faults) / static_cast<double>(samples.size());
  return stats;
}

}  // namespace kdforge
