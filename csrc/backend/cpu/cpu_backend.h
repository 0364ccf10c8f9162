// The CPU backend: host memory, weights used in place from the mapping,
// ops run synchronously on a thread pool.
#pragma once
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/threadpool.h"

namespace phi::cpu {

std::unique_ptr<Backend> make_cpu_backend(int n_threads);

} // namespace phi::cpu
