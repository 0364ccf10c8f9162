// Shared by the CUDA kernels: error checks, warp reductions, launches with
// programmatic dependent launch (PDL), half/bfloat helpers.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/error.h"

namespace phi::cuda {

[[noreturn]] inline void cuda_fail(cudaError_t e, const char* what) {
    fail(ErrorKind::generic, "CUDA error in ", what, ": ", cudaGetErrorString(e));
}
#define PHI_CUDA_CHECK(call)                                   \
    do {                                                       \
        const cudaError_t e_ = (call);                         \
        if (e_ != cudaSuccess) ::phi::cuda::cuda_fail(e_, #call); \
    } while (0)

constexpr int kWarp = 32;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result. `red` holds 32 floats of shared memory; the
// function may be called again right after it returns.
__device__ __forceinline__ float block_sum(float v, float* red) {
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
    v = warp_sum(v);
    __syncthreads();  // red may still be read from the previous call
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return warp_sum(v);
}

// The same for the largest value.
__device__ __forceinline__ float block_max(float v, float* red) {
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : -INFINITY;
    return warp_max(v);
}

// Programmatic dependent launch (Hopper): a kernel launched with it may start
// while the one before still runs. It reads only weights (never written)
// before pdl_wait(); after it, everything the earlier kernels wrote is there.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
// Lets the next kernel of the stream start its CTAs (they wait in pdl_wait).
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}
// Every element (r, c) of an n_rows x width array, grid-stride, as f(r, c, r * width + c).
template <class F>
__device__ __forceinline__ void for_each_element(int64_t n_rows, int width, F&& f) {
    const int64_t total = n_rows * width;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        f(i / width, i % width, i);
}
// CTAs of 256 threads for such a loop: one element a thread, at most `cap` CTAs.
inline int element_ctas(int64_t total, int cap) {
    return static_cast<int>(total <= 0 ? 1 : (total + 255) / 256 < cap ? (total + 255) / 256 : cap);
}

__device__ __forceinline__ void prefetch_l2(const void* p) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// Global -> shared copies that bypass registers (sm_80+): a thread's copies
// complete in the order of their commit groups.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem));
}
// src_bytes < 16 zero-fills the rest of the 16 bytes.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
    const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
// A copy of g = 4, 8 or 16 bytes (smem and gmem aligned to g).
__device__ __forceinline__ void cp_async_g(void* smem, const void* gmem, int g) {
    const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    if (g == 16) asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem));
    else if (g == 8) asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(s), "l"(gmem));
    else asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
// Waits until at most kPending of this thread's newest commit groups are in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
}

// What a kernel launch needs besides its arguments.
struct Launch {
    cudaStream_t stream = nullptr;
    bool pdl = false;  // launch with programmatic stream serialization
    int carveout = -1;  // the kernel's preferred shared-memory carveout (percent), or -1: the driver's choice
};

template <class... KArgs, class... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, const Launch& l, Args&&... args) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = l.stream;
    cfg.attrs = attr;
    cfg.numAttrs = l.pdl ? 1 : 0;
    if (l.carveout >= 0)
        PHI_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, l.carveout));
    PHI_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...));
}

__device__ __forceinline__ float gelu_tanh(float v) {
    // 0.5 v (1 + tanh(u)) = v * sigmoid(2u): no cancellation for v < 0
    const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
    return v / (1.0f + expf(-2.0f * u));
}
__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

__device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float bf2f(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }
// Two floats rounded to f16, as the 32-bit word the tensor-core operands and 16-byte stores take.
__device__ __forceinline__ uint32_t pack_half2(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
}
// kV (1 or 4) consecutive floats; 4: one 16-byte access (p 16-byte aligned).
template <int kV>
__device__ __forceinline__ void load_floats(const float* p, float (&v)[kV]) {
    if constexpr (kV == 4) {
        const float4 f = *reinterpret_cast<const float4*>(p);
        v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
    } else {
        v[0] = *p;
    }
}
template <int kV>
__device__ __forceinline__ void store_floats(float* p, const float (&v)[kV]) {
    if constexpr (kV == 4) *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    else *p = v[0];
}

inline int ceil_div(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

} // namespace phi::cuda
