// Does a kernel that loads its first weight bytes into shared memory before
// its PDL wait, while the kernel before still runs on the same SM, stream a
// chain of dependent matmul-sized reads closer to HBM's peak? A model of the
// decode matmuls without their arithmetic: 128 dependent kernels (one CUDA
// graph, PDL), each reading its own weight buffer of one of Phi-3-mini Q4_0's
// four matmul sizes (15.9, 5.3, 28.3, 14.2 MB: 2.04 GB a "token", nothing
// stays in L2), one CTA an SM, each a contiguous share, summing it and writing
// one value the next kernel reads after its wait. Configurations:
//   alone    the SM held by one CTA (160 KB of shared memory asked for, as the
//            shipped matvecs' registers hold it): the next kernel's CTA starts
//            only when this one leaves; 16-byte loads, 4 in flight a thread,
//            all after the wait
//   beside   the same reads with room for the next kernel's CTA beside it
//   ring P   beside, and the first P KB of the CTA's share copied to shared
//            memory (cp.async) before the wait, the rest read after it
//   prefetch_chain_bench [P_KB ...]      (default 32 64 96)
// Built here and carried to the device:
//   nvcc -std=c++17 -O2 -arch=sm_90a -Icsrc tools/prefetch_chain_bench.cu -o .bench/prefetch_chain_bench
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "backend/cuda/common.cuh"
#include "cuda_bench.cuh"

using namespace phi::cuda;

namespace prefetch_bench {

struct Args {
    const uint8_t* w;
    size_t bytes;
    const float* in;  // [gridDim] written by the kernel before
    float* out;
    int pre;  // bytes copied to shared memory before the wait (multiple of 16)
};

__device__ __forceinline__ uint32_t sum16(uint4 v) { return v.x + v.y + v.z + v.w; }

template <int kThreads, int kMinBlocks, int kInFlight>
__global__ void __launch_bounds__(kThreads, kMinBlocks) read_share(Args a) {
    extern __shared__ __align__(16) uint8_t ring[];
    const size_t share = (a.bytes / gridDim.x) & ~size_t{15};
    const uint8_t* w = a.w + blockIdx.x * share;
    const int pre = static_cast<int>(min(static_cast<size_t>(a.pre), share));
    for (int o = threadIdx.x * 16; o < pre; o += kThreads * 16) cp_async16(ring + o, w + o);
    cp_async_commit();
    pdl_wait();
    pdl_launch_dependents();
    uint32_t s = static_cast<uint32_t>(a.in[blockIdx.x % 128]);
    // the rest straight from global memory, kInFlight loads in flight a thread
    const uint4* w4 = reinterpret_cast<const uint4*>(w);
    const size_t n4 = share / 16;
    size_t i = pre / 16 + threadIdx.x;
    for (; i + (kInFlight - 1) * kThreads < n4; i += kInFlight * kThreads) {
        uint4 v[kInFlight];
#pragma unroll
        for (int j = 0; j < kInFlight; ++j) v[j] = __ldg(w4 + i + j * kThreads);
#pragma unroll
        for (int j = 0; j < kInFlight; ++j) s += sum16(v[j]);
    }
    for (; i < n4; i += kThreads) s += sum16(__ldg(w4 + i));
    cp_async_wait<0>();
    __syncthreads();
    for (int o = threadIdx.x * 16; o < pre; o += kThreads * 16) s += sum16(*reinterpret_cast<const uint4*>(ring + o));
    s = __reduce_add_sync(0xffffffffu, s);
    if (threadIdx.x == 0) a.out[blockIdx.x % 128] = static_cast<float>(s & 0xFF);
}

__global__ void fill(uint8_t* p, size_t n) {
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        p[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
}

template <int kThreads, int kMinBlocks, int kInFlight = 4>
double chain_us(const std::vector<uint8_t*>& bufs, const std::vector<size_t>& sizes, float* io, int ctas, int pre,
                size_t smem, cudaStream_t st) {
    auto k = read_share<kThreads, kMinBlocks, kInFlight>;
    smem = std::max<size_t>(smem, std::max(pre, 16));
    CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    return captured_us(st, 10, [&] {
        for (size_t i = 0; i < bufs.size(); ++i) {
            const Args a{bufs[i], sizes[i], io + 128 * (i % 2), io + 128 * ((i + 1) % 2), pre};
            launch(k, dim3(ctas), dim3(kThreads), smem, Launch{st, true}, a);
        }
    });
}

}  // namespace prefetch_bench

using namespace prefetch_bench;

int main(int argc, char** argv) {
    const BenchDevice dev = bench_device();
    const int sm = dev.props.multiProcessorCount;
    cudaStream_t st = dev.stream;
    const size_t kinds[4] = {15925248, 5308416, 28311552, 14155776};  // Phi-3-mini Q4_0: qkv, wo, gate_up, down
    std::vector<uint8_t*> bufs;
    std::vector<size_t> sizes;
    double total = 0;
    for (int i = 0; i < 128; ++i) {
        uint8_t* p;
        CHECK(cudaMalloc(&p, kinds[i % 4]));
        fill<<<1024, 256>>>(p, kinds[i % 4]);
        bufs.push_back(p);
        sizes.push_back(kinds[i % 4]);
        total += kinds[i % 4];
    }
    float* io;
    CHECK(cudaMalloc(&io, 256 * sizeof(float)));
    CHECK(cudaMemset(io, 0, 256 * sizeof(float)));
    CHECK(cudaDeviceSynchronize());
    std::vector<int> pres;
    for (int i = 1; i < argc; ++i) pres.push_back(std::atoi(argv[i]) * 1024);
    if (pres.empty()) pres = {32 << 10, 64 << 10, 96 << 10};
    auto row = [&](const char* name, double us) {
        std::printf("  %-28s %8.1f us  %5.2f TB/s (%2.0f%% of 4.8)\n", name, us, total / us / 1e6, 100 * total / us / 1e6 / 4.8);
    };
    std::printf("128 dependent kernels, %.2f GB, %d SMs\n", total / 1e9, sm);
    for (int rep = 0; rep < 2; ++rep) {
        row("alone, 512 threads", chain_us<512, 1>(bufs, sizes, io, sm, 0, 160 << 10, st));
        row("beside, 512 threads", chain_us<512, 1>(bufs, sizes, io, sm, 0, 0, st));
        row("beside, 256 threads", chain_us<256, 2>(bufs, sizes, io, sm, 0, 0, st));
        row("beside, 256 threads, 8 loads", chain_us<256, 2, 8>(bufs, sizes, io, sm, 0, 0, st));
        row("alone, 512 threads, 8 loads", chain_us<512, 1, 8>(bufs, sizes, io, sm, 0, 160 << 10, st));
        for (int pre : pres) {
            char name[64];
            std::snprintf(name, sizeof name, "ring %d KB, 512 threads", pre >> 10);
            row(name, chain_us<512, 1>(bufs, sizes, io, sm, pre, 0, st));
            std::snprintf(name, sizeof name, "ring %d KB, 256 threads", pre >> 10);
            row(name, chain_us<256, 2>(bufs, sizes, io, sm, pre, 0, st));
            std::snprintf(name, sizeof name, "ring %d KB, 256 thr, 8 loads", pre >> 10);
            row(name, chain_us<256, 2, 8>(bufs, sizes, io, sm, pre, 0, st));
        }
    }
    return 0;
}
