// How much memory the host can still give this process.
#pragma once
#include <cstddef>

namespace phi {

// Bytes this process can still allocate and touch without the kernel's OOM
// killer stepping in: MemAvailable + SwapFree from /proc/meminfo, lowered to
// what the cgroup's memory.max leaves (containers); 0 when unknown (then
// callers check nothing). Allocations succeed far beyond it under overcommit,
// and the process dies when the pages are first written.
size_t host_memory_available();

} // namespace phi
