#include "backend/backend.h"

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace phi {

#ifdef PHICPP_WITH_CUDA
namespace cuda {
std::unique_ptr<Backend> make_cuda_backend(int device);  // backend/cuda
bool available();
}  // namespace cuda
#endif

std::unique_ptr<Backend> make_backend(const BackendOptions& opts) {
    if (opts.device == "cpu") return cpu::make_cpu_backend(opts.n_threads);
    if (opts.device == "cuda" || opts.device == "auto") {
#ifdef PHICPP_WITH_CUDA
        if (cuda::available()) return cuda::make_cuda_backend(0);
#endif
        if (opts.device == "auto") return cpu::make_cpu_backend(opts.n_threads);
        fail(ErrorKind::unsupported, "device 'cuda' requested, but ",
#ifdef PHICPP_WITH_CUDA
             "no CUDA device is available"
#else
             "phicpp was built without CUDA"
#endif
        );
    }
    fail(ErrorKind::invalid_arg, "unknown device '", opts.device, "' (expected cpu, cuda or auto)");
}

} // namespace phi
