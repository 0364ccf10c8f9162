// The CPU backend: host memory, weights used in place from the mapping,
// ops run synchronously on a thread pool.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/threadpool.h"

namespace phi::cpu {

// n_threads <= 0: all cores. isa: scalar | avx2 | avxvnni | avx512 | amx | auto (see choose_isa).
std::unique_ptr<Backend> make_cpu_backend(int n_threads, const std::string& isa);

} // namespace phi::cpu
