#include "heap.h"

#include <climits>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace kdforge {

bool retain_freed_memory() {
#if defined(__GLIBC__)
  // No mmap'd blocks (each would be unmapped on free and faulted in again on the next run) and no trimming
  // of the heap's top (which returns the freed activations of a run to the kernel).
  return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
#else
  return false;
#endif
}

}  // namespace kdforge
