// The wait and the staging of a persistent decode, with the computing side
// they feed (docs/CUDA.md, "The computing side alone" and "Wait and staging
// shared by a cluster"). tools/consumer_bench.cu measured a token's 128 Q4_0
// matmuls as a persistent CTA's shares, rows already in shared memory, with a
// CTA barrier after each: ~200 us on the H100. What it left out is the
// dependency between CTAs: matmul m + 1 reads every CTA's outputs of matmul m.
// Here it is in place, and the question is what it costs a matmul (the ring
// design keeps the bus busy only if that is at most ~2 us).
//
// One CTA of 16 warps an SM, clusters of C CTAs (1, 2, 4, 8). Each CTA, for
// each of 32 layers' qkv, wo, gate_up and down:
//   1. waits for the inputs it stages: the outputs of the matmul before, each
//      published as one 64-bit word (the launch's epoch in the high half, the
//      float in the low; no fence, no counter), polled with all loads in
//      flight; a CTA of a cluster stages only 1/C of the units;
//   2. stages them: qkv and gate_up read the residual stream (h += the
//      outputs of down or wo, h kept per element by the CTA that stages it;
//      RMS normalization deferred: the units are rounded from h and the dot
//      products scaled by 1/rms, from sums of squares the stagers publish),
//      wo reads q (the first 3072 of qkv: no attention here), down reads
//      silu(gate) * up; every unit of 32 rounded to 8 bits by a half-warp and
//      written into the shared memory of every CTA of the cluster;
//   3. one cluster barrier (C = 1: a CTA barrier), then the reg-act consumer
//      over the CTA's rows (8 a warp at once; rows from two rings in shared
//      memory, as consumer_bench's chain), each row published.
// Every output of the last launch is checked on the host against the same
// staging done from the device's outputs of the matmul before.
//
// Modes (bits): 0 = compute, publish and the barrier only (what the
// dependency adds nothing to); 2 = staging from the words without waiting
// (outputs not checked: they may be the launch before's); 3 = everything.
// With `stream` the rows come from HBM instead (2.1 GB, each CTA's own,
// through a ring: stream_chain below) and the modes are 12 = the stream alone
// (consumers take and free each piece), 4 = stream and compute, 6 = with
// staging, 7 = everything (outputs of CTAs 0 and last checked), 23 = 7 traced
// (bit 16: when each CTA begins each matmul, has its input staged and has
// published its rows; printed as the CTAs' spread, the wait after the last
// of them, and each CTA's mean lateness); bit 32 (36, 39, 55): row groups
// taken from a counter a matmul at each producer's pace instead of each
// CTA its own (produce_claimed), so that CTAs whose streams run ahead take
// more and the spread between the first and last to end a matmul shrinks.
//
//   staging_bench [stream] [C ...]     (default: 1 2 4 8)
// Built here: nvcc -std=c++17 -O3 -arch=sm_90a -Icsrc -Itools tools/staging_bench.cu -o .bench/staging_bench
// (add -DSTAGING_SLOTS=n for a ring of n slots instead of 13)
#include <cooperative_groups.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_bench.cuh"
#include "mbarrier.cuh"
#include "q4_0_reg_consumer.cuh"

namespace cg = cooperative_groups;
using namespace q4_0_reg;

namespace {

constexpr int kThreads = 512, kWarps = kThreads / 32, kR = 8;
constexpr int kMats = 4;  // qkv, wo, gate_up, down
constexpr int kEmbd = 3072, kFf = 8192;
constexpr int kTotalRows[kMats] = {9216, 3072, 16384, 3072};
constexpr int kRing3Rows = 64, kRing8Rows = 16;  // rows the two rings hold (110 KB, 74 KB)
constexpr int kMaxCluster = 8;
constexpr float kEps = 1e-5f;
enum : int { kWait = 1, kStage = 2 };

__host__ __device__ constexpr int mat_k(int mi) { return mi == 3 ? kFf : kEmbd; }
__host__ __device__ constexpr bool mat_normed(int mi) { return mi == 0 || mi == 2; }

struct Staged {  // a matmul's input as the consumer reads it
    int8_t q[kFf];
    float scale[kFf / 32];
    int zsum[kFf / 32];
    float sumsq[kMaxCluster * kWarps];  // the stagers' partial sums of squares, [rank][warp]
};

struct Params {
    const uint8_t* image3;
    const uint8_t* image8;
    unsigned long long* words;  // [layers * 4][stride]: epoch << 32 | float bits
    const float* h0;            // the residual stream before layer 0
    int* stuck;                 // set when a wait gives up: matmul + 1 (words), or kStuck* + piece or matmul
    int rows[kMats];            // a CTA's rows of each matmul
    int layers, stride, mode;
    unsigned epoch;
    const uint8_t* stream;      // the streaming kernel's weights: a CTA's pieces, in order, stream_stride bytes a CTA
    size_t stream_stride;
    unsigned long long* trace;  // mode bit kTrace: [matmul][CTA][3] global times (ns) of a CTA's matmul (below)
    int* claims;                // mode bit kClaim: a counter a matmul, of the row groups taken (zero at launch)
};

__device__ __forceinline__ void load_words(const unsigned long long* p, unsigned long long& a, unsigned long long& b) {
    asm volatile("ld.relaxed.gpu.global.v2.u64 {%0, %1}, [%2];" : "=l"(a), "=l"(b) : "l"(p) : "memory");
}
__device__ __forceinline__ void publish(unsigned long long* p, float v, unsigned epoch) {
    const unsigned long long w = (static_cast<unsigned long long>(epoch) << 32) | __float_as_uint(v);
    asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" : : "l"(p), "l"(w) : "memory");
}
__device__ __forceinline__ bool current(unsigned long long w, unsigned epoch) {
    return static_cast<unsigned>(w >> 32) == epoch;
}

__device__ __forceinline__ int rows_of(const Params& p, int mi) {
    return mi == 0 ? p.rows[0] : mi == 1 ? p.rows[1] : mi == 2 ? p.rows[2] : p.rows[3];
}
// 1/rms of the residual stream a normed matmul's input was rounded from, from
// the stagers' partial sums of squares (n of them), in every lane.
__device__ __forceinline__ float inverse_rms(const Staged& s, int n, int lane) {
    float t = 0.0f;
    for (int i = lane; i < n; i += 32) t += s.sumsq[i];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    return rsqrtf(t / kEmbd + kEps);
}

// Steps 1 and 2 for matmul g (layer g / 4, input length K), into buffer `dst`
// of every CTA of the cluster. A thread stages pairs of inputs threadIdx.x +
// i * kStagers, at most two at a time (their words, and for down the up
// half's, all in flight): ptxas, C = 1 / 2 / 4 / 8, bytes spilled a thread
// beside the consumer's registers, four at a time 196 / 248 / 48 / 8 (rows in
// shared memory) and 292 / 224 / 136 / 92 (streamed), two 0 / 92 / 48 / 8 and
// 104 / 120 / 88 / 92.
// With kAsync (the streaming kernel, whose producer warp takes no part in
// barriers), every store also counts its bytes on the receiving CTA's `bar`
// (st.async), in place of a cluster barrier. kStagers: the threads that stage.
template <int C, int K, int kStagers = kThreads, bool kAsync = false>
__device__ void stage(const Params& p, int g, unsigned rank, Staged* dst, float* h, int warp, int lane,
                      uint64_t* bar = nullptr) {
    constexpr int mi_down = K == kFf, uc = K / 32 / C, pairs = uc * 16;
    constexpr int kPairs = (pairs + kStagers - 1) / kStagers, kRound = kPairs < 2 ? kPairs : 2;
    static_assert(pairs % 32 == 0, "whole warps stage or leave");
    const int mi = g % kMats, k0 = static_cast<int>(rank) * uc * 32;
    const unsigned long long* prev = g > 0 ? p.words + static_cast<size_t>(g - 1) * p.stride : nullptr;
    cg::cluster_group cluster = cg::this_cluster();
    float sq = 0.0f;
#pragma unroll
    for (int i0 = 0; i0 < kPairs; i0 += kRound) {
        unsigned long long a[kRound][2], b[kRound][2];
        const auto src = [&](int i) { return prev + k0 + 2 * (threadIdx.x + (i0 + i) * kStagers); };
        const auto active = [&](int i) { return i0 + i < kPairs && threadIdx.x + (i0 + i) * kStagers < pairs; };
        if (prev) {
#pragma unroll
            for (int i = 0; i < kRound; ++i)
                if (active(i)) {
                    load_words(src(i), a[i][0], a[i][1]);
                    if (mi_down) load_words(src(i) + kFf, b[i][0], b[i][1]);
                }
            if (p.mode & kWait) {
                const long long t0 = clock64();
                for (int spin = 0;; ++spin) {
                    bool ready = true;
#pragma unroll
                    for (int i = 0; i < kRound; ++i)
                        if (active(i)) {
                            if (!current(a[i][0], p.epoch) || !current(a[i][1], p.epoch)) {
                                load_words(src(i), a[i][0], a[i][1]);
                                ready = false;
                            }
                            if (mi_down && (!current(b[i][0], p.epoch) || !current(b[i][1], p.epoch))) {
                                load_words(src(i) + kFf, b[i][0], b[i][1]);
                                ready = false;
                            }
                        }
                    if (ready) break;
                    if ((spin & 255) == 255 &&
                        (*reinterpret_cast<volatile int*>(p.stuck) || clock64() - t0 > (1ll << 31))) {
                        atomicCAS(p.stuck, 0, g + 1);
                        break;
                    }
                }
            }
        }
#pragma unroll
        for (int i = 0; i < kRound; ++i) {
            if (!active(i)) break;  // pairs is a multiple of 32: whole warps leave
            const int pp = threadIdx.x + (i0 + i) * kStagers;
            float v[2];
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                v[j] = prev ? __uint_as_float(static_cast<unsigned>(a[i][j])) : 0.0f;
                if (mi_down) {
                    const float up = __uint_as_float(static_cast<unsigned>(b[i][j]));
                    v[j] = v[j] / (1.0f + expf(-v[j])) * up;
                } else if (mat_normed(mi)) {
                    h[2 * pp + j] += v[j];
                    v[j] = h[2 * pp + j];
                    sq += v[j] * v[j];
                }
            }
            // a unit is 16 pairs, a half-warp: its absolute maximum, codes and code sum
            float amax = fmaxf(fabsf(v[0]), fabsf(v[1]));
#pragma unroll
            for (int o = 8; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
            const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
            const int q0 = __float2int_rn(v[0] * id), q1 = __float2int_rn(v[1] * id);
            int sum = q0 + q1;
#pragma unroll
            for (int o = 8; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            const unsigned two = (q0 & 0xFF) | ((q1 & 0xFF) << 8);
            const unsigned four = two | (__shfl_down_sync(0xffffffffu, two, 1) << 16);
            const int k = k0 + 2 * pp, u = k / 32;
#pragma unroll
            for (int r = 0; r < C; ++r) {
                if constexpr (kAsync) {
                    const uint32_t b = peer_u32(bar, r);
                    if (lane % 2 == 0) st_async_u32(peer_u32(dst->q + k, r), four, b);
                    if (lane % 16 == 0) {
                        st_async_u32(peer_u32(&dst->scale[u], r), __float_as_uint(amax / 127.0f), b);
                        st_async_u32(peer_u32(&dst->zsum[u], r), static_cast<uint32_t>(-8 * sum), b);
                    }
                } else {
                    Staged* d = C == 1 ? dst : cluster.map_shared_rank(dst, r);
                    if (lane % 2 == 0) *reinterpret_cast<unsigned*>(d->q + k) = four;
                    if (lane % 16 == 0) d->scale[u] = amax / 127.0f, d->zsum[u] = -8 * sum;
                }
            }
        }
    }
    if (mat_normed(mi)) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
        if (lane == 0)
#pragma unroll
            for (int r = 0; r < C; ++r) {
                float* to = &dst->sumsq[rank * (kStagers / 32) + warp];
                if constexpr (kAsync) st_async_u32(peer_u32(to, r), __float_as_uint(sq), peer_u32(bar, r));
                else *(C == 1 ? to : cluster.map_shared_rank(to, r)) = sq;
            }
    }
}

// Step 3: a CTA's rows of one matmul, published from global row row0 on.
template <int U>
__device__ void compute(const uint8_t* ring, int ring_rows, const Staged& s, int rows, int base, unsigned long long* out,
                        float rscale, unsigned epoch, int warp, int lane) {
    constexpr int K = 1024 * U;
    RegAct<U> x;
    x.load(Act{s.q, s.scale, s.zsum}, lane);
    const int groups = (rows + kR - 1) / kR, ring_groups = ring_rows / kR;
    for (int g = warp; g < groups; g += kWarps) {
        const uint8_t* grp = ring + ((base + g) % ring_groups) * group_bytes(K, kR);
        const float v = rows_reg<U, kR>(grp, reinterpret_cast<const __half*>(grp + kR * (K / 2)), x, lane);
        const int row = g * kR + row_of_lane<kR>(lane);
        if (lane % (32 / kR) == 0 && row < rows) publish(out + row, v * rscale, epoch);
    }
}

template <int C>
__global__ void __launch_bounds__(kThreads, 1) dep_chain(Params p) {
    extern __shared__ __align__(16) uint8_t smem[];
    uint8_t* ring3 = smem;
    uint8_t* ring8 = ring3 + kRing3Rows / kR * group_bytes(kEmbd, kR);
    Staged* staged = reinterpret_cast<Staged*>(ring8 + kRing8Rows / kR * group_bytes(kFf, kR));  // two, by matmul parity
    float* h = reinterpret_cast<float*>(staged + 2);  // this CTA's kEmbd / C elements of the residual stream
    const unsigned rank = C == 1 ? 0 : cg::this_cluster().block_rank();
    for (int i = threadIdx.x; i < kRing3Rows / kR * group_bytes(kEmbd, kR) / 16; i += kThreads)
        reinterpret_cast<int4*>(ring3)[i] = reinterpret_cast<const int4*>(p.image3)[i];
    for (int i = threadIdx.x; i < kRing8Rows / kR * group_bytes(kFf, kR) / 16; i += kThreads)
        reinterpret_cast<int4*>(ring8)[i] = reinterpret_cast<const int4*>(p.image8)[i];
    for (int i = threadIdx.x; i < 2 * static_cast<int>(sizeof(Staged)) / 4; i += kThreads) reinterpret_cast<int*>(staged)[i] = 0;
    for (int i = threadIdx.x; i < kEmbd / C; i += kThreads) h[i] = p.h0[rank * (kEmbd / C) + i];
    if constexpr (C > 1) cg::this_cluster().sync();  // peers write into this CTA's buffers from here on
    else __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int base3 = 0, base8 = 0;
    for (int g = 0; g < p.layers * kMats; ++g) {
        const int mi = g % kMats;
        Staged& s = staged[g % 2];
        const int rows = rows_of(p, mi);
        if (p.mode & kStage) {
            if (mi == 3) stage<C, kFf>(p, g, rank, &s, h, warp, lane);
            else stage<C, kEmbd>(p, g, rank, &s, h, warp, lane);
        }
        if constexpr (C > 1) cg::this_cluster().sync();
        else __syncthreads();
        const float rscale = mat_normed(mi) ? inverse_rms(s, C * kWarps, lane) : 1.0f;
        unsigned long long* out = p.words + static_cast<size_t>(g) * p.stride + static_cast<size_t>(blockIdx.x) * rows;
        if (mi == 3) {
            compute<8>(ring8, kRing8Rows, s, rows, base8, out, rscale, p.epoch, warp, lane);
            base8 += (rows + kR - 1) / kR;
        } else {
            compute<3>(ring3, kRing3Rows, s, rows, base3, out, rscale, p.epoch, warp, lane);
            base3 += (rows + kR - 1) / kR;
        }
    }
}

// ---- the same with the weights streamed: each CTA's rows read from HBM
// through a ring of shared-memory slots by a producer warp that never waits on
// the dependency (tools/ring_chain_bench.cu's bus side), consumed by 15 warps
// that also stage. A piece is a group of 8 rows' units [96 part, 96 part + n)
// (K = 3072: one part of 96; K = 8192: 96, 96, 64) behind a 16-byte header
// holding its number: the rows' nibbles, [8][16 n], then the scales, [n][8].
// A group's pieces go to warp group % 15; piece i to slot i % 13. A consumer
// takes a slot when the header shows its piece and the slot's barrier has
// completed the phase of that use: the header tells a use apart from the use
// two before, which the barrier's parity alone cannot.
// (-DSTAGING_SLOTS=n: a shallower ring, fewer of the producer's bytes in flight)
#ifndef STAGING_SLOTS
#define STAGING_SLOTS 13
#endif
constexpr int kSlots = STAGING_SLOTS, kPieceUnits = 96;
constexpr int kSlotBytes = 16 + kR * kPieceUnits * 18;  // 13840
constexpr int kConsumers = 15;                          // warps; warp 15 streams
constexpr int kMaxMats = 128;                           // matmuls a launch (32 layers)
constexpr int kStagers = kConsumers * 32;
enum : int { kStream = 4, kNoCompute = 8, kTrace = 16, kClaim = 32 };
__device__ __forceinline__ unsigned long long global_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__host__ __device__ constexpr int parts_of(int mi) { return mi == 3 ? 3 : 1; }
__host__ __device__ constexpr int part_units(int mi, int part) { return mi == 3 && part == 2 ? 64 : kPieceUnits; }
__host__ __device__ constexpr int piece_bytes(int mi, int part) { return 16 + kR * part_units(mi, part) * 18; }
// bytes every CTA's stagers send a CTA's buffer for matmul mi (codes, scales and sums, sums of squares)
__host__ __device__ constexpr unsigned staged_bytes(int mi, int C) {
    return mat_k(mi) + 8 * (mat_k(mi) / 32) + (mat_normed(mi) ? 4 * C * kConsumers : 0);
}
struct alignas(16) Ring {  // (the staged buffers follow it: 16-byte vectors)
    uint8_t slot[kSlots][kSlotBytes];
    uint64_t full[kSlots], empty[kSlots];
    uint64_t staged[2];  // a staged buffer's bytes from every stager of the cluster
    // kClaim: the producer's note of what a slot holds (written before the
    // slot's arrival, so read once its phase is complete): the piece's number
    // in this CTA's sequence and the global row group it belongs to; and, per
    // matmul, how many groups this CTA took, once it took its last (-1 before)
    int seq[kSlots], grp[kSlots];
    int claimed[kMaxMats];
};

// Spins on ready() until it holds, or gives up after ~1 s or once another
// wait has (*stuck = code): a bug must not hang the device call.
template <class Ready>
__device__ bool wait_until(Ready ready, int* stuck, int code) {
    const long long t0 = clock64();
    for (int spin = 0;; ++spin) {
        if (ready()) return true;
        if ((spin & 255) == 255 && (*reinterpret_cast<volatile int*>(stuck) || clock64() - t0 > (1ll << 31))) {
            atomicCAS(stuck, 0, code);
            return false;
        }
    }
}
constexpr int kStuckFree = 1000000, kStuckFull = 2000000, kStuckStaged = 3000000;  // + piece or matmul

// A matmul's row groups a CTA, and the bytes of one group's pieces and of the
// CTA's whole matmul in its stream.
__device__ __forceinline__ int groups_of(const Params& p, int mi) { return (rows_of(p, mi) + kR - 1) / kR; }
__device__ __forceinline__ size_t group_stream_bytes(int mi) {
    size_t b = 0;
    for (int part = 0; part < parts_of(mi); ++part) b += piece_bytes(mi, part);
    return b;
}

// Piece `piece` (part `part` of a row group of matmul kind mi, from src) into
// its slot once the slot is free; with claims (group >= 0) the producer's
// notes first. False if the wait gave up.
__device__ __forceinline__ bool place_piece(const Params& p, Ring& ring, int piece, int mi, int part, const uint8_t* src,
                                            int group = -1) {
    const int sl = piece % kSlots, use = piece / kSlots;
    if (use > 0 &&
        !wait_until([&] { return mbar_try_wait(&ring.empty[sl], (use - 1) & 1); }, p.stuck, kStuckFree + piece))
        return false;
    const unsigned bytes = piece_bytes(mi, part);
    if (group >= 0) {  // (the arrival below releases them before the data)
        *reinterpret_cast<volatile int*>(&ring.seq[sl]) = piece;
        *reinterpret_cast<volatile int*>(&ring.grp[sl]) = group;
    }
    mbar_expect_tx(&ring.full[sl], bytes);
    bulk_copy(ring.slot[sl], src, bytes, &ring.full[sl]);
    return true;
}

// kClaim: the CTAs take row groups of each matmul from one counter as their
// producers have room for them, so a CTA whose stream runs ahead takes more
// (group G of the matmul is group G % n of CTA G / n's rows, read from that
// CTA's stream: outputs land where they would without claims).
__device__ void produce_claimed(const Params& p, Ring& ring, int mats) {
    const uint8_t* base = p.stream;
    size_t mat_off = 0;
    int piece = 0;
    for (int g = 0; g < mats; ++g) {
        const int mi = g % kMats, n = groups_of(p, mi), total = n * static_cast<int>(gridDim.x);
        const size_t gb = group_stream_bytes(mi);
        int taken = 0;
        int G = atomicAdd(&p.claims[g], 1);
        for (;; ++taken) {
            if (G >= total) break;
            // the next claim in flight while this group's pieces are placed (a
            // claim's round trip to L2 a group in series would throttle the stream)
            const int next = atomicAdd(&p.claims[g], 1);
            const uint8_t* src = base + static_cast<size_t>(G / n) * p.stream_stride + mat_off + (G % n) * gb;
            for (int part = 0; part < parts_of(mi); ++part, ++piece) {
                if (!place_piece(p, ring, piece, mi, part, src, G)) return;
                src += piece_bytes(mi, part);
            }
            G = next;
        }
        *reinterpret_cast<volatile int*>(&ring.claimed[g]) = taken;
        mat_off += static_cast<size_t>(n) * gb;
    }
}

__device__ void produce(const Params& p, Ring& ring, int mats) {
    if (p.mode & kClaim) return produce_claimed(p, ring, mats);
    const uint8_t* src = p.stream + static_cast<size_t>(blockIdx.x) * p.stream_stride;
    int piece = 0;
    for (int g = 0; g < mats; ++g) {
        const int mi = g % kMats, groups = groups_of(p, mi);
        for (int gr = 0; gr < groups; ++gr)
            for (int part = 0; part < parts_of(mi); ++part, ++piece) {
                if (!place_piece(p, ring, piece, mi, part, src)) return;
                src += piece_bytes(mi, part);
            }
    }
}

// One piece: wait for it, add its units [32 J0, 32 J1) of the lane's to acc, free the slot.
template <int U, int J0, int J1>
__device__ __forceinline__ void piece_acc(const Params& p, Ring& ring, int piece, const RegAct<U>& x, int lane,
                                          float (&acc)[kR]) {
    constexpr int n = 32 * (J1 - J0);
    const int sl = piece % kSlots;
    const uint8_t* slot = ring.slot[sl];
    // (the piece's number: its header, or with claims the producer's note)
    const volatile int* seq = p.mode & kClaim ? &ring.seq[sl] : reinterpret_cast<const volatile int*>(slot);
    wait_until([&] { return *seq == piece && mbar_try_wait(&ring.full[sl], (piece / kSlots) & 1); }, p.stuck,
               kStuckFull + piece);
    if (!(p.mode & kNoCompute))
        rows_acc<U, kR, J0, J1>(slot + 16, n * 16, reinterpret_cast<const __half*>(slot + 16 + kR * n * 16), x, lane, acc);
    __syncwarp();
    if (lane == 0) mbar_arrive(&ring.empty[sl]);
}

// One row group from the ring (its pieces from `piece` on): group gr of a
// CTA's rows, published from out (that CTA's first row of the matmul).
template <int U>
__device__ __forceinline__ void group_rows(const Params& p, Ring& ring, int piece, const RegAct<U>& x, int lane,
                                           unsigned long long* out, int rows, int gr, float rscale) {
    float acc[kR];
#pragma unroll
    for (int r = 0; r < kR; ++r) acc[r] = 0.0f;
    if constexpr (U == 8) {
        piece_acc<8, 0, 3>(p, ring, piece, x, lane, acc);
        piece_acc<8, 3, 6>(p, ring, piece + 1, x, lane, acc);
        piece_acc<8, 6, 8>(p, ring, piece + 2, x, lane, acc);
    } else {
        piece_acc<U, 0, U>(p, ring, piece, x, lane, acc);
    }
    if (p.mode & kNoCompute) return;
    const float v = rows_reduce<kR>(acc, lane);
    const int row = gr * kR + row_of_lane<kR>(lane);
    if (lane % (32 / kR) == 0 && row < rows) publish(out + row, v * rscale, p.epoch);
}

// A CTA's rows of one matmul from the ring; returns the next matmul's first piece.
template <int U>
__device__ int consume_mat(const Params& p, Ring& ring, const Staged& s, int rows, int piece0, unsigned long long* out,
                           float rscale, int warp, int lane) {
    constexpr int kParts = U == 8 ? 3 : 1;
    const int groups = (rows + kR - 1) / kR;
    RegAct<U> x;
    x.load(Act{s.q, s.scale, s.zsum}, lane);
    for (int gr = warp; gr < groups; gr += kConsumers) group_rows<U>(p, ring, piece0 + gr * kParts, x, lane, out, rows, gr, rscale);
    return piece0 + groups * kParts;
}

// kClaim: the CTA's k-th group taken (of any CTA's rows) goes to warp k % 15,
// until the producer's count for matmul g says there is no k-th; returns the
// next matmul's first piece.
template <int U>
__device__ int consume_claimed(const Params& p, Ring& ring, const Staged& s, int g, int piece0, float rscale, int warp,
                               int lane) {
    constexpr int kParts = U == 8 ? 3 : 1;
    const int mi = g % kMats, rows = rows_of(p, mi), n = groups_of(p, mi);
    const volatile int* claimed = &ring.claimed[g];
    auto taken = [&] { return *claimed; };
    RegAct<U> x;
    x.load(Act{s.q, s.scale, s.zsum}, lane);
    for (int k = warp;; k += kConsumers) {
        const int piece = piece0 + k * kParts, sl = piece % kSlots;
        bool none = false;
        wait_until([&] {
            const int t = taken();
            if (t >= 0 && k >= t) return none = true;
            return *reinterpret_cast<const volatile int*>(&ring.seq[sl]) == piece &&
                   mbar_try_wait(&ring.full[sl], (piece / kSlots) & 1);
        }, p.stuck, kStuckFull + piece);
        if (none) break;
        const int G = ring.grp[sl];
        group_rows<U>(p, ring, piece, x, lane, p.words + static_cast<size_t>(g) * p.stride + static_cast<size_t>(G / n) * rows,
                      rows, G % n, rscale);
    }
    int t = -1;
    wait_until([&] { return (t = taken()) >= 0; }, p.stuck, kStuckFull + piece0);
    return piece0 + t * kParts;
}

template <int C>
__global__ void __launch_bounds__(kThreads, 1) stream_chain(Params p) {
    extern __shared__ __align__(16) uint8_t smem[];
    Ring& ring = *reinterpret_cast<Ring*>(smem);
    Staged* staged = reinterpret_cast<Staged*>(smem + sizeof(Ring));  // two, by matmul parity
    float* h = reinterpret_cast<float*>(staged + 2);
    const unsigned rank = C == 1 ? 0 : cg::this_cluster().block_rank();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int i = threadIdx.x; i < kSlots; i += kThreads) {
        *reinterpret_cast<int*>(ring.slot[i]) = -1;  // no piece yet
        ring.seq[i] = -1;
    }
    for (int i = threadIdx.x; i < kMaxMats; i += kThreads) ring.claimed[i] = -1;
    for (int i = threadIdx.x; i < 2 * static_cast<int>(sizeof(Staged)) / 4; i += kThreads) reinterpret_cast<int*>(staged)[i] = 0;
    for (int i = threadIdx.x; i < kEmbd / C; i += kThreads) h[i] = p.h0[rank * (kEmbd / C) + i];
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // the headers' -1 before the copies that overwrite them
    if (threadIdx.x == 0) {
        for (int i = 0; i < kSlots; ++i) mbar_init(&ring.full[i], 1), mbar_init(&ring.empty[i], 1);
        mbar_init(&ring.staged[0], 1);
        mbar_init(&ring.staged[1], 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    if constexpr (C > 1) cg::this_cluster().sync();  // barriers ready before any peer stores into them
    else __syncthreads();
    const int mats = p.layers * kMats;
    if (warp == kConsumers) {
        if (lane == 0) produce(p, ring, mats);
        __syncwarp();  // whole again for the barrier below
    } else {
        int piece = 0;
        for (int g = 0; g < mats; ++g) {
            const int mi = g % kMats, rows = rows_of(p, mi);
            Staged& s = staged[g % 2];
            // kTrace: when the CTA begins staging matmul g, has its input staged, and
            // (its last warp) has published its rows
            unsigned long long* tr = p.mode & kTrace ? p.trace + (static_cast<size_t>(g) * gridDim.x + blockIdx.x) * 3 : nullptr;
            if (tr && threadIdx.x == 0) tr[0] = global_ns();
            if (p.mode & kStage) {
                uint64_t* bar = &ring.staged[g % 2];
                if (threadIdx.x == 0) mbar_expect_tx(bar, staged_bytes(mi, C));
                if (mi == 3) stage<C, kFf, kStagers, true>(p, g, rank, &s, h, warp, lane, bar);
                else stage<C, kEmbd, kStagers, true>(p, g, rank, &s, h, warp, lane, bar);
                wait_until([&] { return mbar_try_wait_cluster(bar, (g / 2) & 1); }, p.stuck, kStuckStaged + g);
            }
            if (tr && threadIdx.x == 0) tr[1] = global_ns();
            const float rscale = mat_normed(mi) ? inverse_rms(s, C * kConsumers, lane) : 1.0f;
            unsigned long long* out = p.words + static_cast<size_t>(g) * p.stride + static_cast<size_t>(blockIdx.x) * rows;
            if (p.mode & kClaim) {
                if (mi == 3) piece = consume_claimed<8>(p, ring, s, g, piece, rscale, warp, lane);
                else piece = consume_claimed<3>(p, ring, s, g, piece, rscale, warp, lane);
            } else if (mi == 3) {
                piece = consume_mat<8>(p, ring, s, rows, piece, out, rscale, warp, lane);
            } else {
                piece = consume_mat<3>(p, ring, s, rows, piece, out, rscale, warp, lane);
            }
            if (tr && lane == 0) atomicMax(&tr[2], global_ns());
        }
    }
    if constexpr (C > 1) cg::this_cluster().sync();  // no CTA leaves while a peer may still store into it
    else __syncthreads();
}

// ---- host

// Matmul g's staged input as the device builds it, from the outputs of g - 1 (y) and the residual h.
struct HostStaged {
    std::vector<int8_t> q;
    std::vector<float> s;
    std::vector<int> z;
    double rscale = 1.0;
};
HostStaged host_stage(int g, const float* y, std::vector<float>& h) {
    const int mi = g % kMats, K = mat_k(mi);
    HostStaged st{std::vector<int8_t>(K), std::vector<float>(K / 32), std::vector<int>(K / 32)};
    std::vector<float> v(K);
    double sq = 0;
    for (int k = 0; k < K; ++k) {
        float x = y ? y[k] : 0.0f;
        if (mi == 3) {
            x = x / (1.0f + std::exp(-x)) * y[kFf + k];
        } else if (mat_normed(mi)) {
            h[k] += x;
            x = h[k];
            sq += static_cast<double>(x) * x;
        }
        v[k] = x;
    }
    for (int u = 0; u < K / 32; ++u) {
        float amax = 0.0f;
        for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[u * 32 + i]));
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int i = 0; i < 32; ++i) {
            const float t = v[u * 32 + i] * id;
            st.q[u * 32 + i] = static_cast<int8_t>(std::nearbyint(t));
            sum += st.q[u * 32 + i];
        }
        st.s[u] = amax / 127.0f;
        st.z[u] = -8 * sum;
    }
    if (mat_normed(mi)) st.rscale = 1.0 / std::sqrt(sq / kEmbd + kEps);
    return st;
}

// The streaming kernel's weights: a CTA's pieces in order (offsets the same for every CTA).
struct Piece {
    size_t off;
    int mi, part;
};
std::vector<Piece> stream_pieces(const int (&rows)[kMats], int mats, size_t* bytes) {
    std::vector<Piece> v;
    size_t off = 0;
    for (int g = 0; g < mats; ++g) {
        const int mi = g % kMats;
        for (int gr = 0; gr < (rows[mi] + kR - 1) / kR; ++gr)
            for (int part = 0; part < parts_of(mi); ++part) {
                v.push_back(Piece{off, mi, part});
                off += piece_bytes(mi, part);
            }
    }
    *bytes = off;
    return v;
}
__global__ void fill_random(uint8_t* p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n / 4; i += static_cast<size_t>(gridDim.x) * blockDim.x)
        reinterpret_cast<uint32_t*>(p)[i] = bench_hash(i, seed);
}
// Piece blockIdx.x of CTA blockIdx.y: its number in the header, scales of 0.001-0.011.
__global__ void fix_pieces(uint8_t* stream, size_t stride, const Piece* pieces) {
    const Piece pc = pieces[blockIdx.x];
    uint8_t* p = stream + blockIdx.y * stride + pc.off;
    if (threadIdx.x == 0) *reinterpret_cast<int*>(p) = blockIdx.x;
    const int n = part_units(pc.mi, pc.part);
    __half* d = reinterpret_cast<__half*>(p + 16 + kR * n * 16);
    for (int i = threadIdx.x; i < n * kR; i += blockDim.x)
        d[i] = __float2half(0.001f + (bench_hash(blockIdx.y * stride + pc.off + i, 7) % 1000) * 1e-5f);
}
// Row r of a group whose pieces start at p (parts of mi), dotted with a staged input.
double piece_row_dot(const uint8_t* p, int mi, int r, const HostStaged& st) {
    double acc = 0;
    for (int part = 0; part < parts_of(mi); ++part) {
        const int n = part_units(mi, part);
        const uint8_t* nib = p + 16 + r * n * 16;
        const __half* d = reinterpret_cast<const __half*>(p + 16 + kR * n * 16);
        for (int u = 0; u < n; ++u) {
            const int U = kPieceUnits * part + u;
            long t = st.z[U];
            for (int i = 0; i < 16; ++i)
                t += static_cast<long>(nib[u * 16 + i] & 15) * st.q[U * 32 + i] + static_cast<long>(nib[u * 16 + i] >> 4) * st.q[U * 32 + 16 + i];
            acc += static_cast<double>(__half2float(d[u * kR + r])) * st.s[U] * t;
        }
        p += piece_bytes(mi, part);
    }
    return acc * st.rscale;
}

// What the traced launch (the last of its five) says about the wait between
// matmuls, averaged over matmuls of each kind (us): how far apart the CTAs
// finish the matmul before (spread), how long after the last of them a CTA
// has its input staged (after last: the dependency's latency and the
// staging), how long a CTA that was done early sat between its own end and
// its staged input (idle), and from staged input to its rows published.
void trace_report(const unsigned long long* dtrace, int mats, int grid) {
    std::vector<unsigned long long> t(static_cast<size_t>(mats) * grid * 3);
    CHECK(cudaMemcpy(t.data(), dtrace, t.size() * 8, cudaMemcpyDeviceToHost));
    auto at = [&](int g, int b, int k) { return static_cast<double>(t[(static_cast<size_t>(g) * grid + b) * 3 + k]); };
    const char* names[kMats] = {"qkv", "wo", "gate_up", "down"};
    double spread[kMats] = {}, after_med[kMats] = {}, after_min[kMats] = {}, after_max[kMats] = {}, idle[kMats] = {},
           work[kMats] = {};
    int n[kMats] = {};
    for (int g = 4; g < mats; ++g) {  // (from the second layer: the first waits for the launch)
        const int mi = g % kMats;
        double last = 0, first = 1e300;
        for (int b = 0; b < grid; ++b) last = std::max(last, at(g - 1, b, 2)), first = std::min(first, at(g - 1, b, 2));
        std::vector<double> after(grid), w(grid), id(grid);
        for (int b = 0; b < grid; ++b) {
            after[b] = at(g, b, 1) - last;
            id[b] = at(g, b, 1) - at(g - 1, b, 2);
            w[b] = at(g, b, 2) - at(g, b, 1);
        }
        std::sort(after.begin(), after.end());
        std::sort(w.begin(), w.end());
        std::sort(id.begin(), id.end());
        spread[mi] += last - first;
        after_min[mi] += after.front(), after_med[mi] += after[grid / 2], after_max[mi] += after.back();
        idle[mi] += id[grid / 2];
        work[mi] += w[grid / 2];
        ++n[mi];
    }
    // Is the lateness a CTA's own (the same SMs late every matmul) or chance? Each
    // CTA's mean of (its end - the median end) over the matmuls, sorted.
    std::vector<double> late(grid, 0.0);
    int counted = 0;
    for (int g = 4; g < mats; ++g, ++counted) {
        std::vector<double> e(grid);
        for (int b = 0; b < grid; ++b) e[b] = at(g, b, 2);
        std::vector<double> sorted = e;
        std::sort(sorted.begin(), sorted.end());
        for (int b = 0; b < grid; ++b) late[b] += e[b] - sorted[grid / 2];
    }
    std::vector<std::pair<double, int>> by;
    for (int b = 0; b < grid; ++b) by.push_back({late[b] / counted * 1e-3, b});
    std::sort(by.begin(), by.end());
    std::printf("    a CTA's mean end against the matmul's median end (us), earliest to latest: min %.2f, 10%% %.2f, "
                "median %.2f, 90%% %.2f, max %.2f; the five latest CTAs:", by.front().first, by[grid / 10].first,
                by[grid / 2].first, by[grid * 9 / 10].first, by.back().first);
    for (int i = grid - 5; i < grid; ++i) std::printf(" %d (%.2f)", by[i].second, by[i].first);
    std::printf("\n");
    std::printf("    traced, us a matmul (CTA medians unless said): kind, the CTAs' spread finishing the matmul before, "
                "staged after the last of them (min / median / max), a CTA idle from its own end to its staged input, "
                "staged input to rows published\n");
    for (int mi = 0; mi < kMats; ++mi)
        if (n[mi])
            std::printf("    %-8s spread %.2f  staged after last %.2f / %.2f / %.2f  idle %.2f  rows %.2f\n", names[mi],
                        spread[mi] / n[mi] * 1e-3, after_min[mi] / n[mi] * 1e-3, after_med[mi] / n[mi] * 1e-3,
                        after_max[mi] / n[mi] * 1e-3, idle[mi] / n[mi] * 1e-3, work[mi] / n[mi] * 1e-3);
}

template <class Kernel>
int run(const BenchDevice& dev, int C, bool stream, Kernel kernel) {
    const int sms = dev.props.multiProcessorCount, layers = 32, mats = layers * kMats;
    const RingRows r3 = random_rows(kEmbd, kRing3Rows, 21), r8 = random_rows(kFf, kRing8Rows, 23);
    const std::vector<uint8_t> i3 = ring_image(r3, kR), i8 = ring_image(r8, kR);
    const size_t smem = (stream ? sizeof(Ring) : i3.size() + i8.size()) + 2 * sizeof(Staged) + sizeof(float) * kEmbd / C;
    CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = C, attr[0].val.clusterDim.y = 1, attr[0].val.clusterDim.z = 1;
    cfg.blockDim = dim3(kThreads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = dev.stream;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    cfg.gridDim = dim3(sms / C * C);
    int clusters = sms / C;
    if (C > 1) CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg));
    const int grid = std::min(clusters, sms / C) * C;  // every CTA resident: the waits need it
    cfg.gridDim = dim3(grid);
    Params p{};
    for (int mi = 0; mi < kMats; ++mi) p.rows[mi] = (kTotalRows[mi] + grid - 1) / grid;
    p.layers = layers;
    p.stride = grid * *std::max_element(p.rows, p.rows + kMats);
    std::vector<float> h0(kEmbd);
    for (int k = 0; k < kEmbd; ++k) h0[k] = (static_cast<int>(bench_hash(k, 5) % 2001) - 1000) * 1e-3f;
    uint8_t *di3, *di8, *dstream = nullptr;
    Piece* dpieces = nullptr;
    float* dh0;
    int* dstuck;
    unsigned long long* dw;
    const size_t nwords = static_cast<size_t>(mats) * p.stride;
    CHECK(cudaMalloc(&di3, i3.size()));
    CHECK(cudaMalloc(&di8, i8.size()));
    CHECK(cudaMalloc(&dh0, kEmbd * 4));
    CHECK(cudaMalloc(&dstuck, 4));
    CHECK(cudaMalloc(&dw, nwords * 8));
    CHECK(cudaMemcpy(di3, i3.data(), i3.size(), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(di8, i8.data(), i8.size(), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dh0, h0.data(), kEmbd * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemset(dw, 0, nwords * 8));
    CHECK(cudaMemset(dstuck, 0, 4));
    p.image3 = di3, p.image8 = di8, p.h0 = dh0, p.stuck = dstuck, p.words = dw;
    std::vector<Piece> pieces;
    double weight_bytes = 0;
    if (stream) {
        pieces = stream_pieces(p.rows, mats, &p.stream_stride);
        weight_bytes = static_cast<double>(p.stream_stride) * grid;
        CHECK(cudaMalloc(&dstream, p.stream_stride * grid));
        CHECK(cudaMalloc(&dpieces, pieces.size() * sizeof(Piece)));
        CHECK(cudaMemcpy(dpieces, pieces.data(), pieces.size() * sizeof(Piece), cudaMemcpyHostToDevice));
        fill_random<<<1024, 256, 0, dev.stream>>>(dstream, p.stream_stride * grid, 9);
        fix_pieces<<<dim3(static_cast<unsigned>(pieces.size()), grid), 256, 0, dev.stream>>>(dstream, p.stream_stride, dpieces);
        CHECK(cudaStreamSynchronize(dev.stream));
        CHECK(cudaGetLastError());
        p.stream = dstream;
    }
    std::printf("C = %d%s: %d CTAs (%d clusters resident at most), rows a CTA %d/%d/%d/%d, %zu B shared memory", C,
                stream ? ", weights streamed" : "", grid, clusters, p.rows[0], p.rows[1], p.rows[2], p.rows[3], smem);
    if (stream) std::printf(", %.3f GB of weights in %zu pieces a CTA", weight_bytes / 1e9, pieces.size());
    std::printf("\n");
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    static unsigned epoch = 0;
    float base_us = 0;
    const std::vector<int> modes = stream ? std::vector<int>{kStream | kNoCompute, kStream, kStream | kStage, kStream | kStage | kWait,
                                                             kStream | kStage | kWait | kTrace, kStream | kClaim,
                                                             kStream | kStage | kWait | kClaim,
                                                             kStream | kStage | kWait | kTrace | kClaim}
                                          : std::vector<int>{0, kStage, kStage | kWait};
    int* dclaims = nullptr;
    unsigned long long* dtrace = nullptr;
    const size_t ntrace = static_cast<size_t>(mats) * grid * 3;
    if (stream) {  // (the streamed kernel's modes alone trace and claim)
        CHECK(cudaMalloc(&dclaims, mats * sizeof(int)));
        CHECK(cudaMalloc(&dtrace, ntrace * 8));
        p.claims = dclaims;
        p.trace = dtrace;
    }
    for (int mode : modes) {
        p.mode = mode;
        float best = 1e30f;
        for (int rep = 0; rep < 5; ++rep) {
            p.epoch = ++epoch;
            if (mode & kTrace) CHECK(cudaMemsetAsync(dtrace, 0, ntrace * 8, dev.stream));
            if (mode & kClaim) CHECK(cudaMemsetAsync(dclaims, 0, mats * sizeof(int), dev.stream));
            CHECK(cudaEventRecord(e0, dev.stream));
            CHECK(cudaLaunchKernelEx(&cfg, kernel, p));
            CHECK(cudaEventRecord(e1, dev.stream));
            CHECK(cudaEventSynchronize(e1));
            CHECK(cudaGetLastError());
            float ms = 0;
            CHECK(cudaEventElapsedTime(&ms, e0, e1));
            if (rep > 0) best = std::min(best, ms);
        }
        int stuck = 0;
        CHECK(cudaMemcpy(&stuck, dstuck, 4, cudaMemcpyDeviceToHost));
        const float us = best * 1e3f;
        const bool base = mode == (stream ? kStream : 0);
        if (base) base_us = us;
        char check[128] = "not checked";
        if ((mode & (kStage | kWait)) == (kStage | kWait) && !stuck) {
            // the last launch's outputs (streamed: CTAs 0 and grid - 1) against a host staging of the outputs before
            std::vector<unsigned long long> w(nwords);
            CHECK(cudaMemcpy(w.data(), dw, nwords * 8, cudaMemcpyDeviceToHost));
            std::vector<std::vector<uint8_t>> mine;
            const std::vector<int> checked = stream ? std::vector<int>{0, grid - 1} : std::vector<int>{};
            for (int b : checked) {
                mine.emplace_back(p.stream_stride);
                CHECK(cudaMemcpy(mine.back().data(), dstream + b * p.stream_stride, p.stream_stride, cudaMemcpyDeviceToHost));
            }
            std::vector<float> h = h0, y(p.stride), yprev(p.stride);
            double worst = 0;
            int stale = 0, base3 = 0, base8 = 0;
            size_t piece = 0;
            for (int g = 0; g < mats; ++g) {
                const int mi = g % kMats, groups = (p.rows[mi] + kR - 1) / kR;
                for (int i = 0; i < p.stride; ++i) {
                    const unsigned long long word = w[static_cast<size_t>(g) * p.stride + i];
                    const unsigned bits = static_cast<unsigned>(word);
                    std::memcpy(&y[i], &bits, 4);
                    if (i < grid * p.rows[mi] && static_cast<unsigned>(word >> 32) != p.epoch) ++stale;
                }
                const HostStaged st = host_stage(g, g > 0 ? yprev.data() : nullptr, h);
                std::vector<double> want;  // [checked CTA][row], and the matmul's largest output
                double scale = 0;
                if (stream) {
                    for (size_t c = 0; c < checked.size(); ++c)
                        for (int row = 0; row < p.rows[mi]; ++row) {
                            const Piece& pc = pieces[piece + (row / kR) * parts_of(mi)];
                            want.push_back(piece_row_dot(mine[c].data() + pc.off, mi, row % kR, st));
                            scale = std::max(scale, std::fabs(want.back()));
                        }
                    for (size_t c = 0; c < checked.size(); ++c)
                        for (int row = 0; row < p.rows[mi]; ++row)
                            worst = std::max(worst, std::fabs(y[checked[c] * p.rows[mi] + row] - want[c * p.rows[mi] + row]) / scale);
                    piece += static_cast<size_t>(groups) * parts_of(mi);
                } else {
                    const RingRows& rr = mi == 3 ? r8 : r3;
                    int& base_group = mi == 3 ? base8 : base3;
                    for (int j = 0; j < rr.n; ++j) {
                        want.push_back(row_dot(rr, j, st.q.data(), st.s.data(), st.z.data()) * st.rscale);
                        scale = std::max(scale, std::fabs(want.back()));
                    }
                    for (int b = 0; b < grid; ++b)
                        for (int row = 0; row < p.rows[mi]; ++row)
                            worst = std::max(worst, std::fabs(y[b * p.rows[mi] + row] -
                                                              want[((base_group + row / kR) % (rr.n / kR)) * kR + row % kR]) / scale);
                    base_group += groups;
                }
                std::swap(y, yprev);
            }
            std::snprintf(check, sizeof check, "largest error %.2g of a matmul's largest output%s%s%s", worst,
                          stream ? " (CTAs 0 and last)" : "", stale ? ", STALE words" : "", worst > 1e-3 ? "  WRONG" : "");
        }
        std::printf("  mode %2d: %8.1f us for %d matmuls", mode, us, mats);
        if (stream) std::printf(" (%.2f TB/s of weights)", weight_bytes / (us * 1e-6) / 1e12);
        if (!base && mode != (kStream | kNoCompute)) std::printf(" (%+.2f us a matmul over mode %d)", (us - base_us) / mats, stream ? kStream : 0);
        if (stuck) std::printf("  STUCK: %s %d\n", stuck >= kStuckStaged ? "staged buffer of matmul" : stuck >= kStuckFull ? "full slot, piece" : stuck >= kStuckFree ? "free slot, piece" : "words of matmul", stuck % kStuckFree - (stuck < kStuckFree));
        else std::printf("  %s\n", check);
        if (stuck) break;
        if (mode & kTrace) trace_report(dtrace, mats, grid);
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(di3);
    cudaFree(di8);
    cudaFree(dh0);
    cudaFree(dstuck);
    cudaFree(dw);
    cudaFree(dstream);
    cudaFree(dpieces);
    cudaFree(dtrace);
    cudaFree(dclaims);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const BenchDevice dev = bench_device();
    std::printf("%s, %d SMs; a Phi-3-mini token's 128 Q4_0 matmuls, the dependency in place (modes: 0 rows in shared "
                "memory, compute only; +2 staging, +1 waits; 4 rows streamed from HBM, +8 no compute)\n",
                dev.props.name, dev.props.multiProcessorCount);
    std::vector<int> cs;
    bool stream = false;
    for (int i = 1; i < argc; ++i) {
        if (std::string(argv[i]) == "stream") stream = true;
        else cs.push_back(std::atoi(argv[i]));
    }
    if (cs.empty()) cs = {1, 2, 4, 8};
    for (int C : cs) {
        if (C != 1 && C != 2 && C != 4 && C != 8) {
            std::fprintf(stderr, "C must be 1, 2, 4 or 8\n");
            return 1;
        }
        if (stream) run(dev, C, true, C == 1 ? stream_chain<1> : C == 2 ? stream_chain<2> : C == 4 ? stream_chain<4> : stream_chain<8>);
        else run(dev, C, false, C == 1 ? dep_chain<1> : C == 2 ? dep_chain<2> : C == 4 ? dep_chain<4> : dep_chain<8>);
    }
    return 0;
}
