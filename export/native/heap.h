// Heap retention: keep memory the model frees at the end of a run inside the process, so the next run's
// activation buffers are not mapped and page-faulted in again. Inference engines get this by allocating
// their activation memory once (TensorRT's workspace); libtorch's CPU allocator goes to malloc on every
// run, and glibc's defaults hand large freed blocks back to the kernel.
#pragma once

namespace kdforge {

// Serve every allocation from the heap and never trim it (glibc mallopt; the environment variables
// MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 do the same for any process). False where the C
// library has no such control (then the process keeps its defaults).
bool retain_freed_memory();

}  // namespace kdforge
