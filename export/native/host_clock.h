// Host-clock timing of one call, shared by the CPU backends.
#pragma once

#include <chrono>

namespace kdforge {

template <typename Run, typename Sync>
double host_clock_ms(Run&& call, Sync&& sync) {
  const auto tick = std::chrono::steady_clock::now();
  call();
  sync();
  const auto tock = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::milli>(tock - tick).count();
}

}  // namespace kdforge
