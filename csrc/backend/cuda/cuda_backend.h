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

// The plan of the one-token (tile) attention for a device described by its SM
// count and shared memory, as the backend makes it (attention.cu), and the
// shared memory of one of its CTAs: for tests of the plan on any machine.
struct AttentionPlanInfo {
    int tiles = 0, splits = 0, warps = 0, stages = 0, q_rows = 0;
    size_t cta_smem = 0;
};
struct AttentionPlanQuery {
    int n_q = 1, n_head = 1, n_head_kv = 1, head_dim = 64, kv_len = 1, window = 0;
    DType cache_type = DType::F16;
    int sm_count = 1;
    size_t smem_per_cta = 0, smem_per_sm = 0;        // the opt-in maximum, the SM's
    int warps_per_sm = 8, cta_warps = 8, stages = 0, cta_smem_kb = 0;  // AttentionTuning
};
AttentionPlanInfo describe_attention_plan(const AttentionPlanQuery& q);

} // namespace phi::cuda
