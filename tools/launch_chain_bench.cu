// What a decode matmul pays at its kernel boundary, taken apart: chains of
// 128 dependent kernels (one CUDA graph, programmatic dependent launch, as the
// backend records a step) that each do one part of what a matvec does between
// its PDL wait and its weight loop, and write a matvec's share of a row for
// the next kernel to read. No weights are read, so what each chain costs per
// kernel is boundary and staging alone:
//   empty   wait, then each warp writes its two outputs
//   read    + every CTA reads the whole activation row (K f32, written by the kernel before)
//   stats   + the row's RMS statistics over the CTA (two barriers)
//   stage   + the row normalized and rounded to 8 bits in shared memory (stage_q8, as matvec_quant)
//   q_smem  the producer rounds its own 32 outputs (one 32-element unit per CTA,
//           a barrier); the consumer copies the codes, scales and sums to shared memory
//   q_reg   the same codes read straight into each lane's registers (no barrier)
//
//   launch_chain_bench [K] [CTAS] [THREADS]
// Built here (it needs only the backend's headers) and carried to the device:
//   nvcc -std=c++17 -O2 -arch=sm_90a -Icsrc tools/launch_chain_bench.cu -o .bench/launch_chain_bench
// Results (H200, 2026-12-04) and what they meant: docs/CUDA.md.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/cuda/matvec_stage.cuh"
#include "cuda_bench.cuh"

using namespace phi;
using namespace phi::cuda;

namespace chain_bench {

enum Variant { kEmpty, kRead, kStats, kStage, kQSmem, kQReg, kVariants };
const char* kNames[kVariants] = {"empty", "read", "stats", "stage", "q_smem", "q_reg"};

struct Buf {
    float* x;     // [K] f32 row
    int8_t* q;    // [K] codes
    float* d;     // [K/32] scales
    int* s;       // [K/32][2] code sums per half
};
struct Args {
    Buf in, out;
    const float* nw;  // RMSNorm weights (ones)
    int K;
    float* sink;
};

// The producer's side: warp w of CTA b writes outputs 2 (b nw + w) and the next.
__device__ void write_outputs(const Args& a, float v, bool quantize) {
    __shared__ float tile[64];
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, nw = blockDim.x / kWarp;
    const int o = 2 * (blockIdx.x * nw + warp);
    const float v0 = v + 1.0f, v1 = v - 1.0f;
    if (lane == 0 && o + 1 < a.K) {
        a.out.x[o] = v0;
        a.out.x[o + 1] = v1;
    }
    if (!quantize) return;
    // the CTA's 2 nw outputs as 8-bit units of 32 (nw = 16: one unit)
    if (lane == 0) {
        tile[2 * warp] = v0;
        tile[2 * warp + 1] = v1;
    }
    __syncthreads();
    if (warp < nw / 16) {
        const int e = 32 * warp + lane, k = 2 * blockIdx.x * nw + e;
        const float x = tile[e];
        const float amax = warp_max(fabsf(x));
        const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        const int q = __float2int_rn(x * id);
        int s = q;
#pragma unroll
        for (int m = 8; m > 0; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
        if (k < a.K) a.out.q[k] = static_cast<int8_t>(q);
        if (lane == 0 && k < a.K) a.out.d[k / 32] = d;
        if (lane % 16 == 0 && k < a.K) a.out.s[k / 16] = s;
    }
}

template <int V>
__global__ void __launch_bounds__(512, 1) boundary(Args a) {
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ float2 red[32];
    const int lane = threadIdx.x % kWarp;
    MatvecParams p;
    p.K = a.K;
    p.x = a.in.x;
    p.norm = static_cast<int>(NormKind::rms);
    p.nw = a.nw;
    p.eps = 1e-5f;
    const NormVecs nv = V == kStage ? norm_into_smem(p, reinterpret_cast<float*>(smem)) : NormVecs{a.nw, nullptr};
    pdl_wait();
    pdl_launch_dependents();
    float v = 0.0f;
    if constexpr (V == kRead || V == kStats) {
        float4 h[kHeld];
        if constexpr (V == kRead) {
            const float4* x4 = reinterpret_cast<const float4*>(a.in.x);
#pragma unroll
            for (int i = 0; i < kHeld; ++i) {
                const int c = threadIdx.x + i * blockDim.x;
                h[i] = c < a.K / 4 ? x4[c] : make_float4(0, 0, 0, 0);
            }
            for (int i = 0; i < kHeld; ++i) v += h[i].x + h[i].w;
            v = warp_sum(v);
        } else {
            v = held_row(p, a.in.x, h, red).inv;
        }
    } else if constexpr (V == kStage) {
        int8_t* xq = reinterpret_cast<int8_t*>(smem + a.K * sizeof(float));
        int* xs = reinterpret_cast<int*>(xq + a.K);
        float* xd = reinterpret_cast<float*>(xs + 2 * (a.K / 32));
        cp_async_wait<0>();
        stage_q8<1>(p, nv, 0, xq, xs, xd, red);
        __syncthreads();
        v = xd[lane] + static_cast<float>(xq[threadIdx.x]);
    } else if constexpr (V == kQSmem) {
        int8_t* xq = reinterpret_cast<int8_t*>(smem);
        float* xd = reinterpret_cast<float*>(xq + a.K);
        int* xs = reinterpret_cast<int*>(xd + a.K / 32);
        for (int c = threadIdx.x; c < a.K / 16; c += blockDim.x) cp_async16(xq + 16 * c, a.in.q + 16 * c);
        for (int c = threadIdx.x; c < a.K / 128; c += blockDim.x) cp_async16(xd + 4 * c, a.in.d + 4 * c);
        for (int c = threadIdx.x; c < a.K / 64; c += blockDim.x) cp_async16(xs + 4 * c, a.in.s + 4 * c);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
        v = xd[lane] + static_cast<float>(xq[threadIdx.x] + xs[lane]);
    } else if constexpr (V == kQReg) {
        // lane l holds units l, l + 32, ... of the row (as a matvec lane reads its weights)
        for (int u = lane; u < a.K / 32; u += kWarp) {
            const int4* q = reinterpret_cast<const int4*>(a.in.q + 32 * u);
            const int4 q0 = q[0], q1 = q[1];
            const int2 s = reinterpret_cast<const int2*>(a.in.s)[u];
            v += a.in.d[u] * static_cast<float>(q0.x + q1.w + s.x);
        }
        v = warp_sum(v);
    }
    write_outputs(a, v, V == kQSmem || V == kQReg);
    if (v == 12345.678f) *a.sink = v;  // keeps the reads
}

Buf make_buf(int K) {
    Buf b;
    CHECK(cudaMalloc(&b.x, K * 4));
    CHECK(cudaMalloc(&b.q, K));
    CHECK(cudaMalloc(&b.d, K / 32 * 4));
    CHECK(cudaMalloc(&b.s, K / 16 * 4));
    std::vector<float> xs(K);
    for (int i = 0; i < K; ++i) xs[i] = std::sin(0.37f * i);
    CHECK(cudaMemcpy(b.x, xs.data(), K * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemset(b.q, 1, K));
    CHECK(cudaMemset(b.d, 0, K / 32 * 4));
    CHECK(cudaMemset(b.s, 0, K / 16 * 4));
    return b;
}

template <int V>
double time_chain(const Args& a0, int ctas, int threads, cudaStream_t st, bool pdl) {
    const size_t smem = a0.K * sizeof(float) + a0.K + a0.K / 32 * 12;
    CHECK(cudaFuncSetAttribute(boundary<V>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    const int n = 128;
    return captured_us(st, 50, [&] {
               for (int i = 0; i < n; ++i) {
                   Args a = a0;
                   if (i % 2) std::swap(a.in, a.out);
                   launch(boundary<V>, dim3(ctas), dim3(threads), smem, Launch{st, pdl}, a);
               }
           }) /
           n;
}

}  // namespace chain_bench

using namespace chain_bench;

int main(int argc, char** argv) {
    const BenchDevice dev = bench_device();
    const int K = argc > 1 ? std::atoi(argv[1]) : 3072;
    const int ctas = argc > 2 ? std::atoi(argv[2]) : dev.props.multiProcessorCount;
    const int threads = argc > 3 ? std::atoi(argv[3]) : 512;
    cudaStream_t st = dev.stream;
    Args a;
    a.in = make_buf(K);
    a.out = make_buf(K);
    a.K = K;
    float* nw;
    CHECK(cudaMalloc(&nw, K * 4));
    std::vector<float> ones(K, 1.0f);
    CHECK(cudaMemcpy(nw, ones.data(), K * 4, cudaMemcpyHostToDevice));
    a.nw = nw;
    CHECK(cudaMalloc(&a.sink, 4));
    std::printf("K %d, %d CTAs of %d threads, us per kernel in a chain of 128 (pdl / no pdl)\n", K, ctas, threads);
    for (int rep = 0; rep < 2; ++rep) {
        const double t[kVariants][2] = {
            {time_chain<kEmpty>(a, ctas, threads, st, true), time_chain<kEmpty>(a, ctas, threads, st, false)},
            {time_chain<kRead>(a, ctas, threads, st, true), time_chain<kRead>(a, ctas, threads, st, false)},
            {time_chain<kStats>(a, ctas, threads, st, true), time_chain<kStats>(a, ctas, threads, st, false)},
            {time_chain<kStage>(a, ctas, threads, st, true), time_chain<kStage>(a, ctas, threads, st, false)},
            {time_chain<kQSmem>(a, ctas, threads, st, true), time_chain<kQSmem>(a, ctas, threads, st, false)},
            {time_chain<kQReg>(a, ctas, threads, st, true), time_chain<kQReg>(a, ctas, threads, st, false)},
        };
        for (int v = 0; v < kVariants; ++v) std::printf("  %-8s %6.2f %6.2f\n", kNames[v], t[v][0], t[v][1]);
    }
    return 0;
}
