// The computing side of a persistent decode, alone (docs/CUDA.md, "A
// persistent model with a weight ring"): how fast one SM's warps turn Q4_0
// rows that are already in shared memory into dot products with 8-bit
// activations staged there, against the SM's share of the bus that a ring
// would deliver. A ring only hides the matmuls' dependencies if its consumer
// runs well above that share (about twice); tools/ring_chain_bench.cu's
// rows-alone runs took 535 us for a Phi-3-mini token's 2.04 GB of Q4_0 (~1x,
// H200 and H100 alike). Here the consumer is measured apart from that tool's
// work distribution and bookkeeping (results: docs/CUDA.md, "The computing
// side alone").
//
// One CTA per SM, 16 warps, no global traffic after the start: each CTA copies
// a ring image (SLOTS chunks of ROWS rows of K) into shared memory once, then
// computes chunk c from slot c % SLOTS, chunk c to warp c % 16, until it has
// consumed its share of 2.04 GB. Every output is checked against a host
// reference of its slot and row.
//
//   consumer_bench [K (3072 or 8192)]
//   consumer_bench chain      (a token's 128 matmuls as shares of one CTA, below)
// Consumers:
//   smem-act  : the ring tool's batched consumer (four rows at a time, a lane
//               per unit, the unit's activations read from shared memory for
//               every group of rows, a five-step shuffle sum per row);
//   reg-act   : a lane keeps its units' activations in registers for the whole
//               matmul, takes all ROWS rows of a chunk (8), the rows' scales of
//               a unit in one 16-byte load (stored unit-major), high nibbles
//               masked in place (unsigned dp4a, the sum's /16 exact), the -8
//               offset as the dp4a's starting value, and one transposed
//               reduction for the 8 rows (each shuffle step halves the values
//               a lane holds).
//
// Built here: nvcc -std=c++17 -O3 -arch=sm_90a -Icsrc -Itools tools/consumer_bench.cu -o .bench/consumer_bench
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda_bench.cuh"
#include "q4_0_reg_consumer.cuh"

namespace {

using namespace q4_0_reg;

constexpr int kThreads = 512, kWarps = kThreads / 32;
constexpr int kRows = 8;                  // rows a chunk
constexpr double kTokenBytes = 2.04e9;    // a Phi-3-mini token's Q4_0 matmul weights

// A slot: nibbles [kRows][K/2] (byte i of a unit: element i low, i + 16 high),
// then the rows' f16 scales, [kRows][units] (smem-act) or [units][kRows] (reg-act).
__host__ __device__ constexpr int slot_bytes(int K) { return kRows * (K / 2) + kRows * (K / 32) * 2; }

// The ring tool's batched consumer: rows r0..r0+3 of a slot.
__device__ __forceinline__ void rows4_smem(const uint8_t* nib, const __half* d, int K, const Act& a, int lane,
                                           float (&out)[4]) {
    const int units = K / 32;
#pragma unroll
    for (int r = 0; r < 4; ++r) out[r] = 0.0f;
    for (int u = lane; u < units; u += 32) {
        const int4 lo = *reinterpret_cast<const int4*>(a.q + u * 32);
        const int4 hi = *reinterpret_cast<const int4*>(a.q + u * 32 + 16);
        const float sa = a.scale[u];
        const int z = a.zsum[u];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const uint4 w = *reinterpret_cast<const uint4*>(nib + r * (K / 2) + u * 16);
            int t = z;
            t = __dp4a(static_cast<int>(w.x & 0x0F0F0F0Fu), lo.x, t);
            t = __dp4a(static_cast<int>(w.y & 0x0F0F0F0Fu), lo.y, t);
            t = __dp4a(static_cast<int>(w.z & 0x0F0F0F0Fu), lo.z, t);
            t = __dp4a(static_cast<int>(w.w & 0x0F0F0F0Fu), lo.w, t);
            t = __dp4a(static_cast<int>((w.x >> 4) & 0x0F0F0F0Fu), hi.x, t);
            t = __dp4a(static_cast<int>((w.y >> 4) & 0x0F0F0F0Fu), hi.y, t);
            t = __dp4a(static_cast<int>((w.z >> 4) & 0x0F0F0F0Fu), hi.z, t);
            t = __dp4a(static_cast<int>((w.w >> 4) & 0x0F0F0F0Fu), hi.w, t);
            out[r] += __half2float(d[r * units + u]) * sa * static_cast<float>(t);
        }
    }
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) out[r] += __shfl_xor_sync(0xffffffffu, out[r], o);
}

struct Params {
    const uint8_t* image;  // the ring image, slots * slot_bytes(K)
    const int8_t* act_q;
    const float* act_scale;
    const int* act_zsum;
    float* y;              // [gridDim.x][chunks][kRows]
    int K, slots, chunks;
    int mode;              // 0 smem-act, 1 reg-act
};

template <int U>
__global__ void __launch_bounds__(kThreads, 1) consume(Params p) {
    extern __shared__ __align__(16) uint8_t smem[];
    const int K = p.K, units = K / 32, sb = slot_bytes(K);
    int8_t* q = reinterpret_cast<int8_t*>(smem);
    float* scale = reinterpret_cast<float*>(smem + K);
    int* zsum = reinterpret_cast<int*>(smem + K + 4 * units);
    uint8_t* ring = smem + K + 8 * units;
    for (int i = threadIdx.x; i < K / 16; i += kThreads) reinterpret_cast<int4*>(q)[i] = reinterpret_cast<const int4*>(p.act_q)[i];
    for (int i = threadIdx.x; i < units; i += kThreads) scale[i] = p.act_scale[i], zsum[i] = p.act_zsum[i];
    for (int i = threadIdx.x; i < p.slots * sb / 16; i += kThreads)
        reinterpret_cast<int4*>(ring)[i] = reinterpret_cast<const int4*>(p.image)[i];
    __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const Act a{q, scale, zsum};
    float* y = p.y + static_cast<size_t>(blockIdx.x) * p.chunks * kRows;
    if (p.mode == 0) {
        for (int c = warp; c < p.chunks; c += kWarps) {
            const uint8_t* slot = ring + (c % p.slots) * sb;
            const __half* d = reinterpret_cast<const __half*>(slot + kRows * (K / 2));
#pragma unroll 1
            for (int r0 = 0; r0 < kRows; r0 += 4) {
                float out[4];
                rows4_smem(slot + r0 * (K / 2), d + r0 * units, K, a, lane, out);
                if (lane < 4) y[c * kRows + r0 + lane] = out[lane];
            }
        }
    } else {
        RegAct<U> x;
        x.load(a, lane);
        for (int c = warp; c < p.chunks; c += kWarps) {
            const uint8_t* slot = ring + (c % p.slots) * sb;
            const float v = rows_reg<U, kRows>(slot, reinterpret_cast<const __half*>(slot + kRows * (K / 2)), x, lane);
            if (lane % 4 == 0) y[c * kRows + row_of_lane<kRows>(lane)] = v;
        }
    }
}

// ---- chain: the 128 matmuls of a Phi-3-mini token as a persistent CTA sees
// them: its share of each matmul's rows (qkv 70, wo 24, gate_up 125, down 24 of
// K = 8192), the activations reloaded into registers for each matmul, a CTA
// barrier after each (the dependency, without the grid-wide part). Rows come
// from two rings in shared memory (one per K), R rows a group, group g of a
// matmul to warp g % 16: R = 8 is the ring tool's whole chunks a warp, smaller R
// spread a matmul's share over more warps.
struct ChainMat {
    int rows, big;  // rows of this CTA's share; big: K = 8192
};
constexpr int kChainMats = 4;
__constant__ ChainMat kPhi3[kChainMats] = {{70, 0}, {24, 0}, {125, 0}, {24, 1}};
constexpr int kRing3Rows = 64, kRing8Rows = 16;  // rows the two rings hold (K = 3072: 110 KB, 8192: 74 KB)

struct ChainParams {
    const uint8_t* image3;  // kRing3Rows rows of K = 3072 in groups of R (nibbles, then unit-major scales)
    const uint8_t* image8;
    const int8_t* act_q3;
    const float* act_s3;
    const int* act_z3;
    const int8_t* act_q8;
    const float* act_s8;
    const int* act_z8;
    float* y;  // [gridDim.x][layers][kChainMats][128]
    int layers;
};


template <int U, int R>
__device__ __forceinline__ void chain_mat(const uint8_t* ring, int ring_rows, const Act& a, int rows, int base,
                                          float* y, int warp, int lane) {
    constexpr int K = 1024 * U;
    RegAct<U> x;
    x.load(a, lane);
    const int groups = (rows + R - 1) / R, ring_groups = ring_rows / R;
    for (int g = warp; g < groups; g += kWarps) {
        const uint8_t* grp = ring + ((base + g) % ring_groups) * group_bytes(K, R);
        const float v = rows_reg<U, R>(grp, reinterpret_cast<const __half*>(grp + R * (K / 2)), x, lane);
        const int row = g * R + row_of_lane<R>(lane);
        if (lane % (32 / R) == 0 && row < rows) y[row] = v;
    }
}

template <int R>
__global__ void __launch_bounds__(kThreads, 1) chain_consume(ChainParams p) {
    extern __shared__ __align__(16) uint8_t smem[];
    int8_t* q3 = reinterpret_cast<int8_t*>(smem);
    float* s3 = reinterpret_cast<float*>(smem + 3072);
    int* z3 = reinterpret_cast<int*>(smem + 3072 + 4 * 96);
    int8_t* q8 = reinterpret_cast<int8_t*>(smem + 3840);
    float* s8 = reinterpret_cast<float*>(smem + 3840 + 8192);
    int* z8 = reinterpret_cast<int*>(smem + 3840 + 8192 + 4 * 256);
    uint8_t* ring3 = smem + 3840 + 10240;
    uint8_t* ring8 = ring3 + kRing3Rows / R * group_bytes(3072, R);
    for (int i = threadIdx.x; i < 3072 / 16; i += kThreads) reinterpret_cast<int4*>(q3)[i] = reinterpret_cast<const int4*>(p.act_q3)[i];
    for (int i = threadIdx.x; i < 8192 / 16; i += kThreads) reinterpret_cast<int4*>(q8)[i] = reinterpret_cast<const int4*>(p.act_q8)[i];
    for (int i = threadIdx.x; i < 96; i += kThreads) s3[i] = p.act_s3[i], z3[i] = p.act_z3[i];
    for (int i = threadIdx.x; i < 256; i += kThreads) s8[i] = p.act_s8[i], z8[i] = p.act_z8[i];
    for (int i = threadIdx.x; i < kRing3Rows / R * group_bytes(3072, R) / 16; i += kThreads)
        reinterpret_cast<int4*>(ring3)[i] = reinterpret_cast<const int4*>(p.image3)[i];
    for (int i = threadIdx.x; i < kRing8Rows / R * group_bytes(8192, R) / 16; i += kThreads)
        reinterpret_cast<int4*>(ring8)[i] = reinterpret_cast<const int4*>(p.image8)[i];
    __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const Act a3{q3, s3, z3}, a8{q8, s8, z8};
    int base3 = 0, base8 = 0;
    for (int l = 0; l < p.layers; ++l) {
#pragma unroll 1
        for (int m = 0; m < kChainMats; ++m) {
            const ChainMat cm = kPhi3[m];
            float* y = p.y + ((static_cast<size_t>(blockIdx.x) * p.layers + l) * kChainMats + m) * 128;
            if (cm.big) {
                chain_mat<8, R>(ring8, kRing8Rows, a8, cm.rows, base8, y, warp, lane);
                base8 += (cm.rows + R - 1) / R;
            } else {
                chain_mat<3, R>(ring3, kRing3Rows, a3, cm.rows, base3, y, warp, lane);
                base3 += (cm.rows + R - 1) / R;
            }
            __syncthreads();  // the next matmul reads this one's outputs
        }
    }
}

}  // namespace

// The best of four timed launches (after one warm-up), ms.
template <class Kernel, class P>
float best_launch_ms(Kernel kernel, int grid, size_t smem, cudaStream_t st, const P& p) {
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    float best = 1e30f;
    for (int rep = 0; rep < 5; ++rep) {
        CHECK(cudaEventRecord(e0, st));
        kernel<<<grid, kThreads, smem, st>>>(p);
        CHECK(cudaEventRecord(e1, st));
        CHECK(cudaEventSynchronize(e1));
        CHECK(cudaGetLastError());
        float ms = 0;
        CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (rep > 0) best = std::min(best, ms);
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return best;
}
void report(const char* what, float ms, double bytes, double maxrel) {
    std::printf("%-34s %8.1f us  %6.2f TB/s of Q4_0 (%4.2fx a 4.3 TB/s bus)  max rel err %.2g%s\n", what, ms * 1e3,
                bytes / (ms * 1e-3) / 1e12, bytes / (ms * 1e-3) / 4.3e12, maxrel, maxrel > 1e-3 ? "  WRONG" : "");
}

// Host side of the chain: rows of the two rings with their references.
struct RefRows : q4_0_reg::RingRows {
    std::vector<double> ref;  // [n]
};
RefRows ring_rows(int K, int n, const std::vector<int8_t>& aq, const std::vector<float>& as, const std::vector<int>& az,
                   uint32_t seed) {
    RefRows rr{q4_0_reg::random_rows(K, n, seed), std::vector<double>(n)};
    for (int j = 0; j < n; ++j) rr.ref[j] = q4_0_reg::row_dot(rr, j, aq.data(), as.data(), az.data());
    return rr;
}
struct HostAct {
    std::vector<int8_t> q;
    std::vector<float> s;
    std::vector<int> z;
};
HostAct host_act(int K, uint32_t seed) {
    HostAct a{std::vector<int8_t>(K), std::vector<float>(K / 32), std::vector<int>(K / 32)};
    for (int k = 0; k < K; ++k) a.q[k] = static_cast<int8_t>(static_cast<int>(bench_hash(k, seed) % 255) - 127);
    for (int u = 0; u < K / 32; ++u) {
        a.s[u] = 0.01f + (bench_hash(u, seed + 1) % 1000) * 1e-5f;
        int t = 0;
        for (int i = 0; i < 32; ++i) t += a.q[u * 32 + i];
        a.z[u] = -8 * t;
    }
    return a;
}
template <class T>
T* to_device(const std::vector<T>& v) {
    T* d;
    CHECK(cudaMalloc(&d, v.size() * sizeof(T)));
    CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

int run_chain(const BenchDevice& dev) {
    const int sms = dev.props.multiProcessorCount, layers = 32;
    const HostAct a3 = host_act(3072, 11), a8 = host_act(8192, 13);
    const RefRows r3 = ring_rows(3072, kRing3Rows, a3.q, a3.s, a3.z, 21), r8 = ring_rows(8192, kRing8Rows, a8.q, a8.s, a8.z, 23);
    const int rows[kChainMats] = {70, 24, 125, 24}, big[kChainMats] = {0, 0, 0, 1};
    double bytes = 0;
    for (int m = 0; m < kChainMats; ++m) bytes += static_cast<double>(rows[m]) * (big[m] ? 4608 : 1728);
    bytes *= static_cast<double>(layers) * sms;
    std::printf("%s, %d SMs; chain: %d layers of a Phi-3-mini token's 4 matmuls, a CTA's share of rows (qkv 70, wo 24, "
                "gate_up 125, down 24 of K = 8192), a CTA barrier after each; %.2f GB of Q4_0\n",
                dev.props.name, sms, layers, bytes / 1e9);
    int8_t *dq3 = to_device(a3.q), *dq8 = to_device(a8.q);
    float *ds3 = to_device(a3.s), *ds8 = to_device(a8.s);
    int *dz3 = to_device(a3.z), *dz8 = to_device(a8.z);
    const size_t ny = static_cast<size_t>(sms) * layers * kChainMats * 128;
    float* dy;
    CHECK(cudaMalloc(&dy, ny * 4));
    const auto run = [&](auto kernel, int R) {
        const std::vector<uint8_t> i3 = ring_image(r3, R), i8 = ring_image(r8, R);
        uint8_t *di3 = to_device(i3), *di8 = to_device(i8);
        const size_t smem = 3840 + 10240 + i3.size() + i8.size();
        CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
        CHECK(cudaMemset(dy, 0, ny * 4));
        const ChainParams p{di3, di8, dq3, ds3, dz3, dq8, ds8, dz8, dy, layers};
        const float ms = best_launch_ms(kernel, sms, smem, dev.stream, p);
        std::vector<float> y(ny);
        CHECK(cudaMemcpy(y.data(), dy, ny * 4, cudaMemcpyDeviceToHost));
        double maxrel = 0;
        for (int b = 0; b < sms; ++b) {
            int base3 = 0, base8 = 0;
            for (int l = 0; l < layers; ++l)
                for (int m = 0; m < kChainMats; ++m) {
                    const RefRows& rr = big[m] ? r8 : r3;
                    int& base = big[m] ? base8 : base3;
                    const int ring_groups = rr.n / R;
                    for (int row = 0; row < rows[m]; ++row) {
                        const double want = rr.ref[((base + row / R) % ring_groups) * R + row % R];
                        const double got = y[((static_cast<size_t>(b) * layers + l) * kChainMats + m) * 128 + row];
                        maxrel = std::max(maxrel, std::fabs(got - want) / (std::fabs(want) + 1e-3));
                    }
                    base += (rows[m] + R - 1) / R;
                }
        }
        char what[64];
        std::snprintf(what, sizeof what, "R = %d rows a warp at once", R);
        report(what, ms, bytes, maxrel);
        cudaFree(di3);
        cudaFree(di8);
    };
    run(chain_consume<8>, 8);
    run(chain_consume<4>, 4);
    run(chain_consume<2>, 2);
    run(chain_consume<1>, 1);
    return 0;
}

// The single-K runs: 2.04 GB of chunks from one ring, each consumer in turn.
int run_single(const BenchDevice& dev, int K) {
    const int sms = dev.props.multiProcessorCount, units = K / 32, sb = slot_bytes(K);
    const int smem_max = static_cast<int>(dev.props.sharedMemPerBlockOptin);
    const int slots = std::min(15, (smem_max - K - 8 * units - 1024) / sb);
    const int chunks = static_cast<int>(kTokenBytes / sms / sb);
    const size_t smem = K + 8 * units + static_cast<size_t>(slots) * sb;
    const HostAct a = host_act(K, 1);
    const RefRows rr = ring_rows(K, slots * kRows, a.q, a.s, a.z, 3);
    int8_t* d_aq = to_device(a.q);
    float* d_as = to_device(a.s);
    int* d_az = to_device(a.z);
    const size_t ny = static_cast<size_t>(sms) * chunks * kRows;
    float* d_y;
    CHECK(cudaMalloc(&d_y, ny * 4));
    std::printf("%s, %d SMs; K = %d, %d rows a chunk (%d bytes), %d slots, %d chunks a CTA (%.2f GB in all)\n",
                dev.props.name, sms, K, kRows, sb, slots, chunks, static_cast<double>(sms) * chunks * sb / 1e9);
    const auto kernel = K == 3072 ? consume<3> : consume<8>;
    CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    const char* names[2] = {"smem-act (ring tool's batched)", "reg-act (8 rows, registers)"};
    for (int mode = 0; mode < 2; ++mode) {
        const std::vector<uint8_t> img = ring_image(rr, kRows, mode == 1);  // scales unit-major for reg-act
        uint8_t* d_img = to_device(img);
        CHECK(cudaMemset(d_y, 0, ny * 4));
        const Params p{d_img, d_aq, d_as, d_az, d_y, K, slots, chunks, mode};
        const float ms = best_launch_ms(kernel, sms, smem, dev.stream, p);
        std::vector<float> y(ny);
        CHECK(cudaMemcpy(y.data(), d_y, ny * 4, cudaMemcpyDeviceToHost));
        double maxrel = 0;
        for (int b = 0; b < sms; ++b)
            for (int c = 0; c < chunks; ++c)
                for (int r = 0; r < kRows; ++r) {
                    const double want = rr.ref[(c % slots) * kRows + r];
                    const double got = y[(static_cast<size_t>(b) * chunks + c) * kRows + r];
                    maxrel = std::max(maxrel, std::fabs(got - want) / (std::fabs(want) + 1e-3));
                }
        report(names[mode], ms, static_cast<double>(sms) * chunks * sb, maxrel);
        cudaFree(d_img);
    }
    return 0;
}

int main(int argc, char** argv) {
    if (argc > 1 && std::string(argv[1]) == "chain") return run_chain(bench_device());
    const int K = argc > 1 ? std::atoi(argv[1]) : 3072;
    if (K != 3072 && K != 8192) {
        std::fprintf(stderr, "K must be 3072 or 8192\n");
        return 1;
    }
    return run_single(bench_device(), K);
}
