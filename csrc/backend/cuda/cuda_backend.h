// The CUDA backend, as the rest of the library sees it: no CUDA headers here,
// so code built without nvcc in mind can include it.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "backend/backend.h"

namespace phi::cuda {

// CUDA devices this process can use (0 without a driver or a device: the
// runtime is linked statically and finds libcuda at run time, so a machine
// without one still imports phicpp).
int device_count();
// Why no device can be used, for an error message.
std::string why_unavailable();
std::unique_ptr<Backend> make_cuda_backend(int device);
// Free and total memory of device 0 (false without one).
bool memory_info(size_t& free, size_t& total);

} // namespace phi::cuda
