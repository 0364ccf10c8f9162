#include "backend/backend.h"

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

#ifdef PHICPP_WITH_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace phi {

bool cuda_available() {
#ifdef PHICPP_WITH_CUDA
    return cuda::device_count() > 0;
#else
    return false;
#endif
}

std::string cuda_unavailable_reason() {
    if (cuda_available()) return {};
#ifdef PHICPP_WITH_CUDA
    return cuda::why_unavailable();
#else
    return "this build of phicpp has no CUDA backend (nvcc was not found when it was built)";
#endif
}

void check_thread_count(int n_threads) {
    if (n_threads < 0 || n_threads > kMaxThreads)
        fail(ErrorKind::invalid_arg, "n_threads must be within [0, ", kMaxThreads, "] (0: all cores), got ", n_threads);
}

std::unique_ptr<Backend> make_backend(const BackendOptions& opts) {
    check_thread_count(opts.n_threads);
    if (opts.device == "cpu") return cpu::make_cpu_backend(opts.n_threads, opts.isa);
    if (opts.device == "cuda" || opts.device == "auto") {
#ifdef PHICPP_WITH_CUDA
        if (cuda_available()) return cuda::make_cuda_backend(0);
#endif
        if (opts.device == "auto") return cpu::make_cpu_backend(opts.n_threads, opts.isa);
        fail(ErrorKind::unsupported, "device 'cuda' requested, but ", cuda_unavailable_reason());
    }
    fail(ErrorKind::invalid_arg, "unknown device '", opts.device, "' (expected cpu, cuda or auto)");
}

} // namespace phi
