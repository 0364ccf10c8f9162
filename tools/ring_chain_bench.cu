// Can one persistent kernel keep HBM busy across the decode matmuls' data
// dependencies? tools/prefetch_chain_bench.cu showed that a chain of one
// kernel per matmul cannot read Phi-3-mini Q4_0's matmul bytes faster than
// ~670 us a token (63% of peak), whatever the kernel does. This models the
// other design: one resident CTA per SM for the whole chain, its weight bytes
// streamed into a ring of shared-memory slots by one thread (TMA bulk copies,
// an mbarrier per slot) that never waits on the data dependency, so the next
// matmul's weights arrive while the CTA waits for the previous one's outputs.
//
// The chain is the 128 matmuls of a Phi-3-mini Q4_0 token with their real
// arithmetic: qkv (RMS-normalized input), wo, gate_up (normalized), down, x32,
// each reading the outputs of the one before (the first K of them), with
// distinct weights (2.04 GB; nothing stays in L2). The 15 computing warps of
// a CTA wait on a grid-wide counter, stage the input rounded to 8 bits a
// 32-element unit in shared memory, then take the CTA's rows chunk by chunk
// from the ring (dp4a against the nibbles), and bump the counter when their
// rows are written. The outputs of the first and last layers are checked
// against a host reference. Attention, residuals and norm weights are left
// out: this asks what the weight stream alone can reach. Parts of the work
// can be left out (Mode) to see what each costs; docs/CUDA.md has the figures.
//
//   ring_chain_bench [SLOTS ...]      ring slots of 13.5 KB (default 15; a slot is warp slot % 15's)
//   RING_MODES=7,0,...                Mode bits to run, comma-separated (default 7: all)
//   RING_PRODUCERS=bc                 b: TMA bulk copies, c: cp.async from a warp (default both)
//   RING_SLOT_DIV=2                   slots of 13.5 KB / 2 (a matmul's last chunk shorter)
//   RING_FORMAT=q8_0                  Q8_0 weights (flag-word modes only; default Q4_0)
// tools/ring_bench.sh runs the modes that matter in one device call.
// Built here and carried to the device:
//   nvcc -std=c++17 -O2 -arch=sm_90a -Icsrc tools/ring_chain_bench.cu -o .bench/ring_chain_bench
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
#include "mbarrier.cuh"

namespace ring_bench {

constexpr int kThreads = 512, kConsumers = 15;  // warp 0 streams the weights, warps 1..15 compute
constexpr int kMaxK = 8192, kMaxUnits = kMaxK / 32;
constexpr int kStageRounds = (kMaxUnits + kConsumers - 1) / kConsumers;
constexpr int kRowsAtOnce = 4;  // rows a warp computes together (kBatched)
constexpr int kSlotBytes = 13824;  // 8 rows of K = 3072 (1728 bytes), 3 of K = 8192 (4608); RING_SLOT_DIV divides it
constexpr int kMaxSlots = 64;
constexpr int kGroupsPerThread = (kMaxK / 8 + kConsumers * 32 - 1) / (kConsumers * 32);  // kFlags staging

// One Q4_0 matmul of the chain, y = W x (x RMS-normalized first when norm).
struct Mat {
    const uint8_t* nib;  // Q4_0: M x K/2, byte j of a 32-element block holds element j (low nibble) and j + 16;
                         // Q8_0 (RING_FORMAT=q8_0): M x K signed codes
    const __half* d;     // M x K/32 block scales
    const float* x;      // K inputs
    float* y;            // M outputs
    const uint64_t* x_words;  // kFlags: the same K inputs as (epoch << 32 | float bits)
    uint64_t* y_words;        // kFlags: the outputs again, so published
    int M, K, norm;
    int code_bytes;           // a row's codes: K/2 (Q4_0) or K (Q8_0)
    float* att;               // kAttnHop, qkv only: the stand-in attention's outputs (wo's input)
    uint64_t* att_words;
};

struct Params {
    const Mat* mats;
    int n_mats, slots;
    unsigned* done;  // CTAs done with matmul j: j * gridDim.x .. ; zeroed before each launch
    int mode;        // what the computing warps do (kFull: all), to see what costs
    int slot_bytes;  // kSlotBytes / RING_SLOT_DIV
    const unsigned* epoch;  // kFlags: this launch's number, bumped by a kernel before it
    unsigned* stuck;        // set when a wait gave up (Patience: a bug, or a mode that publishes nothing)
};
// Bits of Params::mode: wait for the matmul before, stage the input, compute
// the rows; kNoStream: the ring is never (re)filled and nobody waits on it
// (what the computing warps cost alone); kWarpChunks: a chunk's rows all go to
// one warp (the warp that owns the chunk's slot, slot % 15), which alone
// waits for it and frees it (else the rows of every chunk are spread over the
// warps); kBatched: chunks as kWarpChunks, staged a thread per unit,
// kRowsAtOnce rows computed together (first run 2026-12-05: docs/CUDA.md).
// kFlags (with kBatched): no grid-wide counter. Every output is
// also published as one 64-bit word, the launch's epoch beside the value,
// written by a single store; staging polls the words
// it reads until each carries the epoch (the words are their own flags, as in
// NCCL's LL protocol), so there is no fence, no barrier between CTAs, and the
// wait and the staging's L2 round trip are one and the same.
enum Mode {
    kWait = 1,
    kStage = 2,
    kRows = 4,
    kFull = 7,
    kNoStream = 8,
    kWarpChunks = 16,
    kBatched = 32,
    kFlags = 64,
    kAttnHop = 128,
    kGroups = 256
};
// kGroups (with kBatched or kFlags): the rows of every chunk go to the warps
// kRowsAtOnce at a time, group g of the chain to warp g % 15, so that all 15
// warps compute whatever the chunk sizes (with whole chunks a warp, a
// matmul's share of 3-16 chunks kept 3-15 warps busy, each on ~8 rows); every
// warp waits for every chunk in order and frees it (15 arrivals a use).
// kAttnHop (with kFlags, so not yet measured): the step
// from qkv to wo goes through a stand-in for attention, so that the chain has
// a decode step's five dependent stages a layer, not four: the CTA that owns
// head h (32 of the 132) polls the head's q, k and v words, writes
// v * sigmoid(q . k / sqrt(96)) as the head's 96 outputs, published, and wo
// stages those. It models the extra hop's latency, not attention's reads of
// the cache (small at short context).
constexpr int kHeads = 32, kHeadDim = 96;

// A bench must not hang its device call: every wait gives up after ~1 s (and
// sets *stuck), or soon after another wait has given up, and the run prints
// STUCK. (The 2026-12-05 run of a ring bug hung five 150 s timeouts.)
struct Patience {
    long long start = 0;
    unsigned tries = 0;
    // The first wait to give up leaves what it waited for in stuck[1..6]:
    // kind (1 ring slot free, 2 ring slot full, 3 grid counter, 4 staged
    // words, 5 attention words), CTA, thread, a, b, c (kind-specific).
    __device__ bool over(unsigned* stuck, unsigned kind, unsigned a = 0, unsigned b = 0, unsigned c = 0) {
        if (tries++ == 0) start = clock64();
        if (tries % 256 != 0) return false;
        if (*static_cast<volatile unsigned*>(stuck)) return true;
        if (clock64() - start < 2000000000LL) return false;
        if (atomicExch(stuck, 1u) == 0) {
            stuck[1] = kind, stuck[2] = blockIdx.x, stuck[3] = threadIdx.x;
            stuck[4] = a, stuck[5] = b, stuck[6] = c;
        }
        return true;
    }
};
// (kind, use: for Patience's record, with the parity waited for)
__device__ __forceinline__ void mbar_wait(uint64_t* b, unsigned parity, unsigned* stuck, unsigned kind, unsigned use) {
    for (Patience wait; !mbar_try_wait(b, parity);)
        if (wait.over(stuck, kind, use, parity)) break;
}
__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void red_release(unsigned* p, unsigned v) {
    asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ ulonglong2 ld_relaxed_words(const uint64_t* p) {  // two words, each read whole
    ulonglong2 v;
    asm volatile("ld.relaxed.gpu.global.v2.u64 {%0, %1}, [%2];" : "=l"(v.x), "=l"(v.y) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void st_relaxed_word(uint64_t* p, uint64_t v) {
    asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ uint64_t published(float v, unsigned epoch) {
    return static_cast<uint64_t>(epoch) << 32 | __float_as_uint(v);
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_u32(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void consumers_sync() { asm volatile("bar.sync 1, %0;" ::"n"(kConsumers * 32) : "memory"); }

// The CTA's rows of a matmul and how they fill slots.
struct Share {
    int r0, rows, per_slot, chunks;
    __device__ Share(const Mat& m, int p_slot_bytes) {
        r0 = static_cast<int>(static_cast<long long>(m.M) * blockIdx.x / gridDim.x);
        rows = static_cast<int>(static_cast<long long>(m.M) * (blockIdx.x + 1) / gridDim.x) - r0;
        per_slot = max(1, p_slot_bytes / (m.code_bytes + m.K / 16));
        chunks = (rows + per_slot - 1) / per_slot;
    }
};

struct Smem {
    uint64_t full[kMaxSlots], empty[kMaxSlots];
    int8_t lo[kMaxK / 2], hi[kMaxK / 2];  // a unit's elements 0..15 and 16..31, 16 bytes a unit in each
    float scale[kMaxUnits];
    int sum[kMaxUnits];  // of a unit's 8-bit codes
    float red[kConsumers];
};

// The input of m, normalized if asked, as 8-bit codes and a scale per unit:
// warp w rounds units w, w + 15, ..., a value a lane.
__device__ void stage(const Mat& m, Smem& s, int cw, int lane) {
    const int units = m.K / 32;
    float v[kStageRounds];
    float ss = 0.0f;
#pragma unroll
    for (int r = 0; r < kStageRounds; ++r) {
        const int u = cw + r * kConsumers;
        v[r] = u < units ? __ldcg(m.x + u * 32 + lane) : 0.0f;
        ss += v[r] * v[r];
    }
    float inv = 1.0f;
    if (m.norm) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        if (lane == 0) s.red[cw] = ss;
        consumers_sync();
        float t = 0.0f;
        for (int i = 0; i < kConsumers; ++i) t += s.red[i];
        inv = rsqrtf(t / m.K + 1e-6f);
    }
#pragma unroll
    for (int r = 0; r < kStageRounds; ++r) {
        const int u = cw + r * kConsumers;
        if (u >= units) break;
        const float x = v[r] * inv;
        float a = fabsf(x);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
        const float d = a / 127.0f;
        const int q = d > 0.0f ? __float2int_rn(x / d) : 0;
        (lane < 16 ? s.lo : s.hi)[u * 16 + lane % 16] = static_cast<int8_t>(q);
        const int qs = __reduce_add_sync(0xffffffffu, q);
        if (lane == 0) {
            s.scale[u] = d;
            s.sum[u] = qs;
        }
    }
}

// A Q4_0 unit's 32 codes (0..15: its 16 bytes of nibbles, w) against the
// staged 8-bit codes of elements 0..15 (a) and 16..31 (b).
__device__ __forceinline__ int dot_codes(uint4 w, int4 a, int4 b) {
    int t = __dp4a(static_cast<int>(w.x & 0x0F0F0F0Fu), a.x, 0);
    t = __dp4a(static_cast<int>(w.y & 0x0F0F0F0Fu), a.y, t);
    t = __dp4a(static_cast<int>(w.z & 0x0F0F0F0Fu), a.z, t);
    t = __dp4a(static_cast<int>(w.w & 0x0F0F0F0Fu), a.w, t);
    t = __dp4a(static_cast<int>((w.x >> 4) & 0x0F0F0F0Fu), b.x, t);
    t = __dp4a(static_cast<int>((w.y >> 4) & 0x0F0F0F0Fu), b.y, t);
    t = __dp4a(static_cast<int>((w.z >> 4) & 0x0F0F0F0Fu), b.z, t);
    return __dp4a(static_cast<int>((w.w >> 4) & 0x0F0F0F0Fu), b.w, t);
}

// One row from its slot: nibbles (K/2 bytes) and block scales; lane l takes
// units l, l + 32, ...
__device__ __forceinline__ float row_dot(const uint8_t* nib, const __half* d, const Smem& s, int units, int lane) {
    float acc = 0.0f;
    for (int u = lane; u < units; u += 32) {
        const uint4 w = *reinterpret_cast<const uint4*>(nib + u * 16);
        const int4 a = *reinterpret_cast<const int4*>(s.lo + u * 16);
        const int4 b = *reinterpret_cast<const int4*>(s.hi + u * 16);
        const int t = dot_codes(w, a, b);
        acc += __half2float(d[u]) * s.scale[u] * static_cast<float>(t - 8 * s.sum[u]);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    return acc;
}

// 1 / RMS of the K inputs from each computing thread's sum of squares (thread
// t of the 480): a warp sum, then one exchange between the warps.
__device__ float inverse_rms(float ss, int K, Smem& s, int t, int lane) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (lane == 0) s.red[t / 32] = ss;
    consumers_sync();
    float sum = 0.0f;
    for (int i = 0; i < kConsumers; ++i) sum += s.red[i];
    return rsqrtf(sum / K + 1e-6f);
}

// kBatched's staging: the same rounding, but
// thread t of the computing warps rounds unit t alone (its 32 values read as
// 8 float4), so no shuffles sit in the way; the norm's sum is the one
// exchange between warps.
__device__ void stage_by_unit(const Mat& m, Smem& s, int t, int lane) {
    const int units = m.K / 32;
    const bool mine = t < units;
    float4 v[8];
    float ss = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        v[i] = mine ? __ldcg(reinterpret_cast<const float4*>(m.x) + t * 8 + i) : make_float4(0, 0, 0, 0);
        ss += v[i].x * v[i].x + v[i].y * v[i].y + v[i].z * v[i].z + v[i].w * v[i].w;
    }
    const float inv = m.norm ? inverse_rms(ss, m.K, s, t, lane) : 1.0f;
    if (!mine) return;
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        v[i].x *= inv, v[i].y *= inv, v[i].z *= inv, v[i].w *= inv;
        amax = fmaxf(amax, fmaxf(fmaxf(fabsf(v[i].x), fabsf(v[i].y)), fmaxf(fabsf(v[i].z), fabsf(v[i].w))));
    }
    const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;  // (the shipped matvecs' rounding)
    int q[8], sum = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int a = __float2int_rn(v[i].x * id), b = __float2int_rn(v[i].y * id);
        const int c = __float2int_rn(v[i].z * id), d = __float2int_rn(v[i].w * id);
        sum += a + b + c + d;
        q[i] = (a & 0xFF) | (b & 0xFF) << 8 | (c & 0xFF) << 16 | (d & 0xFF) << 24;
    }
    *reinterpret_cast<int4*>(s.lo + t * 16) = make_int4(q[0], q[1], q[2], q[3]);
    *reinterpret_cast<int4*>(s.hi + t * 16) = make_int4(q[4], q[5], q[6], q[7]);
    s.scale[t] = d;
    s.sum[t] = sum;
}

// kFlags' staging: thread t takes the groups of 8 inputs t, t + 480, ...
// (a quarter of a unit each; the four threads of a unit are adjacent lanes),
// reads their words with all loads in flight, polls until each group carries
// this launch's epoch, then the unit is rounded as stage_by_unit rounds it,
// its maximum and code sum shared over the four lanes.
__device__ void stage_flags(const Mat& m, Smem& s, int t, int lane, unsigned epoch, unsigned* stuck) {
    const int groups = m.K / 8;
    ulonglong2 w[kGroupsPerThread][4];
#pragma unroll
    for (int i = 0; i < kGroupsPerThread; ++i) {
        const int g = t + i * kConsumers * 32;
#pragma unroll
        for (int h = 0; h < 4; ++h)
            w[i][h] = g < groups ? ld_relaxed_words(m.x_words + g * 8 + h * 2) : make_ulonglong2(0, 0);
    }
    float v[kGroupsPerThread][8];
    float ss = 0.0f;
#pragma unroll
    for (int i = 0; i < kGroupsPerThread; ++i) {
        const int g = t + i * kConsumers * 32;
        if (g < groups) {
            for (Patience wait;;) {
                bool ready = true;
#pragma unroll
                for (int h = 0; h < 4; ++h)
                    ready &= static_cast<unsigned>(w[i][h].x >> 32) == epoch &&
                             static_cast<unsigned>(w[i][h].y >> 32) == epoch;
                if (ready || wait.over(stuck, 4, g, static_cast<unsigned>(w[i][0].x >> 32), epoch)) break;
#pragma unroll
                for (int h = 0; h < 4; ++h) w[i][h] = ld_relaxed_words(m.x_words + g * 8 + h * 2);
            }
        }
#pragma unroll
        for (int h = 0; h < 4; ++h) {
            v[i][2 * h] = __uint_as_float(static_cast<unsigned>(w[i][h].x));
            v[i][2 * h + 1] = __uint_as_float(static_cast<unsigned>(w[i][h].y));
            ss += v[i][2 * h] * v[i][2 * h] + v[i][2 * h + 1] * v[i][2 * h + 1];
        }
    }
    const float inv = m.norm ? inverse_rms(ss, m.K, s, t, lane) : 1.0f;
#pragma unroll
    for (int i = 0; i < kGroupsPerThread; ++i) {
        const int g = t + i * kConsumers * 32;
        if (i * kConsumers * 32 >= groups) break;  // (the whole CTA's last round; shuffles below need every lane)
        float amax = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) amax = fmaxf(amax, fabsf(v[i][e] *= inv));
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
        const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        int q[2] = {0, 0}, sum = 0;
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            const int c = __float2int_rn(v[i][e] * id);
            sum += c;
            q[e / 4] |= (c & 0xFF) << (8 * (e % 4));
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        if (g < groups) {
            const int u = g / 4, quarter = g % 4;
            int8_t* dst = (quarter < 2 ? s.lo : s.hi) + u * 16 + 8 * (quarter % 2);
            *reinterpret_cast<int2*>(dst) = make_int2(q[0], q[1]);
            if (quarter == 0) {
                s.scale[u] = d;
                s.sum[u] = sum;
            }
        }
    }
}

// kAttnHop's stand-in for head h, by one warp: lane l holds dims l, l + 32, l + 64.
__device__ void attention_hop(const Mat& m, int h, int lane, unsigned epoch, unsigned* stuck) {
    float q[3], k[3], v[3];
#pragma unroll
    for (int i = 0; i < 3; ++i) {
        const int d = h * kHeadDim + lane + 32 * i;
        const uint64_t* src[3] = {m.y_words + d, m.y_words + kHeads * kHeadDim + d,
                                  m.y_words + 2 * kHeads * kHeadDim + d};
        float* dst[3] = {&q[i], &k[i], &v[i]};
#pragma unroll
        for (int j = 0; j < 3; ++j) {
            uint64_t w;
            asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(w) : "l"(src[j]) : "memory");
            for (Patience wait; static_cast<unsigned>(w >> 32) != epoch;) {
                if (wait.over(stuck, 5, d, static_cast<unsigned>(w >> 32), epoch)) break;
                asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(w) : "l"(src[j]) : "memory");
            }
            *dst[j] = __uint_as_float(static_cast<unsigned>(w));
        }
    }
    float qk = q[0] * k[0] + q[1] * k[1] + q[2] * k[2];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) qk += __shfl_xor_sync(0xffffffffu, qk, o);
    const float g = 1.0f / (1.0f + __expf(-qk * rsqrtf(static_cast<float>(kHeadDim))));
#pragma unroll
    for (int i = 0; i < 3; ++i) {
        const int d = h * kHeadDim + lane + 32 * i;
        m.att[d] = v[i] * g;
        st_relaxed_word(m.att_words + d, published(v[i] * g, epoch));
    }
}

// kR rows of a slot at once (the staged input read once for all of them):
// row r's nibbles at nib + r * K/2, its block scales at d + r * units; rows
// past n repeat the last one (their sums are not stored).
template <int kR, bool kQ8 = false>
__device__ __forceinline__ void rows_dot(const uint8_t* nib, const __half* d, int n, int units, const Smem& s, int lane,
                                         float (&out)[kR]) {
    constexpr int kUnitBytes = kQ8 ? 32 : 16;
    const uint8_t* w_row[kR];
    const __half* d_row[kR];
#pragma unroll
    for (int r = 0; r < kR; ++r) {
        const int rr = min(r, n - 1);
        w_row[r] = nib + rr * units * kUnitBytes;
        d_row[r] = d + rr * units;
        out[r] = 0.0f;
    }
    for (int u = lane; u < units; u += 32) {
        const int4 a = *reinterpret_cast<const int4*>(s.lo + u * 16);
        const int4 b = *reinterpret_cast<const int4*>(s.hi + u * 16);
        const float sa = s.scale[u];
        const int zero = 8 * s.sum[u];
#pragma unroll
        for (int r = 0; r < kR; ++r) {
            if (kQ8) {  // 32 signed codes: no nibbles to unpack, no offset
                const uint4 w0 = *reinterpret_cast<const uint4*>(w_row[r] + u * 32);
                const uint4 w1 = *reinterpret_cast<const uint4*>(w_row[r] + u * 32 + 16);
                int t = __dp4a(static_cast<int>(w0.x), a.x, 0);
                t = __dp4a(static_cast<int>(w0.y), a.y, t);
                t = __dp4a(static_cast<int>(w0.z), a.z, t);
                t = __dp4a(static_cast<int>(w0.w), a.w, t);
                t = __dp4a(static_cast<int>(w1.x), b.x, t);
                t = __dp4a(static_cast<int>(w1.y), b.y, t);
                t = __dp4a(static_cast<int>(w1.z), b.z, t);
                t = __dp4a(static_cast<int>(w1.w), b.w, t);
                out[r] += __half2float(d_row[r][u]) * sa * static_cast<float>(t);
            } else {
                const uint4 w = *reinterpret_cast<const uint4*>(w_row[r] + u * 16);
                const int t = dot_codes(w, a, b);
                out[r] += __half2float(d_row[r][u]) * sa * static_cast<float>(t - zero);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < kR; ++r)
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) out[r] += __shfl_xor_sync(0xffffffffu, out[r], o);
}

// kBulk: one thread streams each chunk with two TMA bulk copies; else the 32
// lanes of warp 0 with 16-byte cp.async copies that arrive on the slot's barrier.
// kBatched: stage_by_unit and rows_dot<kRowsAtOnce> on whole chunks a warp.
template <bool kBulk, bool kBatch, bool kFlagWords, bool kQ8 = false>
__global__ void __launch_bounds__(kThreads, 1) chain_kernel(Params p) {
    extern __shared__ __align__(128) uint8_t smem_all[];
    Smem& s = *reinterpret_cast<Smem*>(smem_all);
    uint8_t* ring = smem_all + (sizeof(Smem) + 127) / 128 * 128;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (threadIdx.x == 0) {
        for (int i = 0; i < p.slots; ++i) {
            mbar_init(&s.full[i], kBulk ? 1 : 32);
            mbar_init(&s.empty[i], ((kBatch && !(p.mode & kGroups)) || (p.mode & kWarpChunks)) ? 1 : kConsumers);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (warp == 0) {  // the stream: every chunk of every matmul, as slots come free
        if ((kBulk && lane != 0) || (p.mode & kNoStream)) return;
        unsigned it = 0;
        for (int j = 0; j < p.n_mats; ++j) {
            const Mat m = p.mats[j];
            const Share sh(m, p.slot_bytes);
            const int nb = m.code_bytes, db = m.K / 16;
            for (int c = 0; c < sh.chunks; ++c, ++it) {
                const int slot = it % p.slots, use = it / p.slots;
                if (use > 0) mbar_wait(&s.empty[slot], (use - 1) & 1, p.stuck, 1, it);
                const int row = sh.r0 + c * sh.per_slot, n = min(sh.per_slot, sh.rows - c * sh.per_slot);
                uint8_t* dst = ring + slot * p.slot_bytes;
                const uint8_t* nib = m.nib + static_cast<size_t>(row) * nb;
                const uint8_t* dsc = reinterpret_cast<const uint8_t*>(m.d) + static_cast<size_t>(row) * db;
                if (kBulk) {
                    mbar_expect_tx(&s.full[slot], n * (nb + db));
                    bulk_copy(dst, nib, n * nb, &s.full[slot]);
                    bulk_copy(dst + n * nb, dsc, n * db, &s.full[slot]);
                } else {
                    for (int o = lane * 16; o < n * nb; o += 32 * 16) cp_async16(dst + o, nib + o);
                    for (int o = lane * 16; o < n * db; o += 32 * 16) cp_async16(dst + n * nb + o, dsc + o);
                    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem_u32(&s.full[slot]))
                                 : "memory");
                }
            }
        }
        return;
    }
    const int cw = warp - 1;
    const unsigned epoch = kFlagWords ? *p.epoch : 0;
    unsigned it = 0, group = 0;
    for (int j = 0; j < p.n_mats; ++j) {
        const Mat m = p.mats[j];
        const Share sh(m, p.slot_bytes);
        if (j > 0 && (p.mode & kWait) && !kFlagWords) {  // the matmul before done everywhere
            if (cw == 0 && lane == 0)
                for (Patience wait; ld_acquire(p.done) < static_cast<unsigned>(j) * gridDim.x && !wait.over(p.stuck, 3, j);) {
                }
            consumers_sync();
        }
        if ((p.mode & kStage) && kFlagWords) stage_flags(m, s, threadIdx.x - 32, lane, epoch, p.stuck);
        if ((p.mode & kStage) && kBatch && !kFlagWords) stage_by_unit(m, s, threadIdx.x - 32, lane);
        if ((p.mode & kStage) && !kBatch) stage(m, s, cw, lane);
        consumers_sync();
        const int nb = m.code_bytes, units = m.K / 32;
        for (int c = 0; c < sh.chunks; ++c, ++it) {
            // Whole chunks a warp, or every chunk's rows spread over the warps.
            // A slot belongs to one warp (slot % 15): a parity wait can only
            // tell the use it waits for from the one before, so the warp that
            // waits for a slot's use must itself have seen the use before it.
            // Chunks dealt round the warps by chunk number broke that (a warp
            // two uses ahead of a slot took stale bytes and freed the slot
            // early; the ring then hung), and slots < 15 leave warps idle.
            const bool groups = kBatch && (p.mode & kGroups);
            const bool whole = (kBatch && !groups) || (p.mode & kWarpChunks);
            const int slot = it % p.slots;
            if (whole && slot % kConsumers != cw) continue;
            const int n = min(sh.per_slot, sh.rows - c * sh.per_slot);
            const uint8_t* base = ring + slot * p.slot_bytes;
            const __half* scales = reinterpret_cast<const __half*>(base + n * nb);
            const bool stream = !(p.mode & kNoStream);
            // (rows spread: every warp waits, rows or not, so that none arrives on a slot's next use early)
            if (stream) mbar_wait(&s.full[slot], (it / p.slots) & 1, p.stuck, 2, it);
            for (int r = 0; r < n && (p.mode & kRows) && kBatch; r += kRowsAtOnce) {
                if (groups && group++ % kConsumers != static_cast<unsigned>(cw)) continue;
                float y[kRowsAtOnce];
                rows_dot<kRowsAtOnce, kQ8>(base + r * nb, scales + r * units, n - r, units, s, lane, y);
#pragma unroll
                for (int i = 0; i < kRowsAtOnce; ++i)
                    if (lane == i && r + i < n) {
                        const int row = sh.r0 + c * sh.per_slot + r + i;
                        m.y[row] = y[i];
                        if (kFlagWords) st_relaxed_word(m.y_words + row, published(y[i], epoch));
                    }
            }
            if (kFlagWords && !(p.mode & kRows))  // publish anyway, or the next matmul's staging waits for ever
                for (int r = lane; r < n; r += 32)
                    st_relaxed_word(m.y_words + sh.r0 + c * sh.per_slot + r, published(0.0f, epoch));
            for (int r = 0; r < n && (p.mode & kRows) && !kBatch; ++r) {
                if (!whole && (c * sh.per_slot + r) % kConsumers != cw) continue;
                const float y = row_dot(base + r * nb, scales + r * units, s, units, lane);
                if (lane == 0) m.y[sh.r0 + c * sh.per_slot + r] = y;
            }
            __syncwarp();
            if (lane == 0 && stream) mbar_arrive(&s.empty[slot]);
        }
        consumers_sync();  // every row of j written (and the staged input free again)
        if (cw == 0 && lane == 0 && !kFlagWords) red_release(p.done, 1);
        if (kFlagWords && (p.mode & kAttnHop) && m.att) {  // this CTA's heads, a warp each
            const int h0 = kHeads * blockIdx.x / gridDim.x, h1 = kHeads * (blockIdx.x + 1) / gridDim.x;
            for (int h = h0 + cw; h < h1; h += kConsumers) attention_hop(m, h, lane, epoch, p.stuck);
        }
    }
}

__global__ void fill_bytes(uint8_t* p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        p[i] = static_cast<uint8_t>(bench_hash(i, seed));
}
// Before each launch: a new epoch, and the chain's input published with it.
__global__ void next_epoch(unsigned* epoch) { ++*epoch; }
__global__ void publish_input(const float* x, uint64_t* words, int n, const unsigned* epoch) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        words[i] = published(x[i], *epoch);
}
__global__ void fill_input(float* x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] = sinf(0.37f * i);
}
// Scales that keep a row's output about as large as its input, given the
// codes' standard deviation (Q4_0's codes - 8: 4.61; Q8_0's: 73.9).
__global__ void fill_scales(__half* d, size_t n, int K, float code_std, uint32_t seed) {
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const uint32_t h = bench_hash(i, seed);
        d[i] = __float2half((0.5f + (h & 0xFFFF) / 65536.0f) / (code_std * sqrtf(static_cast<float>(K))));
    }
}

// Host reference of one matmul from the same inputs: the same 8-bit rounding
// of the (normalized) input, then exact sums. Returns the largest error
// relative to the row's sum of |w x|.
double check(const Mat& m) {
    const size_t nb = static_cast<size_t>(m.M) * m.code_bytes, nd = static_cast<size_t>(m.M) * m.K / 32;
    const bool q8 = m.code_bytes == m.K;
    std::vector<uint8_t> nib(nb);
    std::vector<__half> d(nd);
    std::vector<float> x(m.K), y(m.M);
    CHECK(cudaMemcpy(nib.data(), m.nib, nb, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(d.data(), m.d, nd * sizeof(__half), cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(x.data(), m.x, m.K * sizeof(float), cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(y.data(), m.y, m.M * sizeof(float), cudaMemcpyDeviceToHost));
    float inv = 1.0f;
    if (m.norm) {
        double ss = 0;
        for (float v : x) ss += static_cast<double>(v) * v;
        inv = static_cast<float>(1.0 / std::sqrt(ss / m.K + 1e-6));
    }
    std::vector<float> xq(m.K);
    for (int u = 0; u < m.K / 32; ++u) {
        float a = 0;
        for (int e = 0; e < 32; ++e) a = std::max(a, std::fabs(x[u * 32 + e] * inv));
        const float dx = a / 127.0f;
        for (int e = 0; e < 32; ++e) xq[u * 32 + e] = dx > 0 ? dx * std::nearbyint(x[u * 32 + e] * inv / dx) : 0.0f;
    }
    double worst = 0;
    for (int r = 0; r < m.M; ++r) {
        double sum = 0, mag = 0;
        for (int k = 0; k < m.K; ++k) {
            const int b = k / 32, e = k % 32;
            const uint8_t byte = q8 ? nib[static_cast<size_t>(r) * m.K + b * 32 + e]
                                    : nib[static_cast<size_t>(r) * m.K / 2 + b * 16 + e % 16];
            const int code = q8 ? static_cast<int8_t>(byte) : (e < 16 ? byte & 0xF : byte >> 4) - 8;
            const double w = static_cast<double>(__half2float(d[static_cast<size_t>(r) * m.K / 32 + b])) * code;
            sum += w * xq[k];
            mag += std::fabs(w * xq[k]);
        }
        worst = std::max(worst, std::fabs(sum - y[r]) / std::max(mag, 1e-30));
    }
    return worst;
}

// kAttnHop's stand-in from the same qkv outputs; the largest error relative
// to the output's magnitude (|v|).
double check_attention(const Mat& m) {
    std::vector<float> y(3 * kHeads * kHeadDim), att(kHeads * kHeadDim);
    CHECK(cudaMemcpy(y.data(), m.y, y.size() * sizeof(float), cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(att.data(), m.att, att.size() * sizeof(float), cudaMemcpyDeviceToHost));
    double worst = 0;
    for (int h = 0; h < kHeads; ++h) {
        double qk = 0;
        for (int d = 0; d < kHeadDim; ++d)
            qk += static_cast<double>(y[h * kHeadDim + d]) * y[kHeads * kHeadDim + h * kHeadDim + d];
        const double g = 1.0 / (1.0 + std::exp(-qk / std::sqrt(static_cast<double>(kHeadDim))));
        for (int d = 0; d < kHeadDim; ++d) {
            const double v = y[2 * kHeads * kHeadDim + h * kHeadDim + d];
            worst = std::max(worst, std::fabs(v * g - att[h * kHeadDim + d]) / std::max(std::fabs(v), 1e-30));
        }
    }
    return worst;
}

}  // namespace ring_bench

using namespace ring_bench;

int main(int argc, char** argv) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // (a timed-out run still shows its lines)
    const BenchDevice dev = bench_device();
    const int sm = dev.props.multiProcessorCount;
    cudaStream_t st = dev.stream;
    const int shapes[4][3] = {{9216, 3072, 1}, {3072, 3072, 0}, {16384, 3072, 1}, {3072, 8192, 0}};  // M, K, norm
    const char* fmt_env = std::getenv("RING_FORMAT");  // q4_0 (default) or q8_0 (flag-word kernel only)
    const bool q8 = fmt_env && std::string(fmt_env) == "q8_0";
    std::vector<Mat> mats;
    float* x0;
    uint64_t* x0_words;
    CHECK(cudaMalloc(&x0, kMaxK * sizeof(float)));
    CHECK(cudaMalloc(&x0_words, kMaxK * sizeof(uint64_t)));
    fill_input<<<32, 256>>>(x0, kMaxK);
    double total = 0;
    const float* x = x0;
    const uint64_t* x_words = x0_words;
    for (int i = 0; i < 128; ++i) {
        const int M = shapes[i % 4][0], K = shapes[i % 4][1];
        Mat m{};
        uint8_t* nib;
        __half* d;
        float* y;
        uint64_t* y_words;
        CHECK(cudaMalloc(&y_words, M * sizeof(uint64_t)));
        CHECK(cudaMemset(y_words, 0, M * sizeof(uint64_t)));
        const int code_bytes = q8 ? K : K / 2;
        CHECK(cudaMalloc(&nib, static_cast<size_t>(M) * code_bytes));
        CHECK(cudaMalloc(&d, static_cast<size_t>(M) * K / 32 * sizeof(__half)));
        CHECK(cudaMalloc(&y, M * sizeof(float)));
        fill_bytes<<<1024, 256>>>(nib, static_cast<size_t>(M) * code_bytes, 1000 + i);
        fill_scales<<<256, 256>>>(d, static_cast<size_t>(M) * K / 32, K, q8 ? 73.9f : 4.61f, 2000 + i);
        m.nib = nib;
        m.d = d;
        m.x = x;
        m.y = y;
        m.x_words = x_words;
        m.y_words = y_words;
        m.M = M;
        m.K = K;
        m.code_bytes = code_bytes;
        m.norm = shapes[i % 4][2];
        if (i % 4 == 0) {  // qkv: the stand-in attention's outputs
            CHECK(cudaMalloc(&m.att, kHeads * kHeadDim * sizeof(float)));
            CHECK(cudaMalloc(&m.att_words, kHeads * kHeadDim * sizeof(uint64_t)));
            CHECK(cudaMemset(m.att_words, 0, kHeads * kHeadDim * sizeof(uint64_t)));
        }
        mats.push_back(m);
        x = y;
        x_words = y_words;
        total += static_cast<double>(M) * (code_bytes + K / 16);
    }
    std::vector<Mat> mats_attn = mats;  // kAttnHop: wo reads the stand-in attention, not qkv's first outputs
    for (size_t i = 0; i + 1 < mats.size(); i += 4) {
        mats_attn[i + 1].x = mats[i].att;
        mats_attn[i + 1].x_words = mats[i].att_words;
    }
    Mat *dmats, *dmats_attn;
    CHECK(cudaMalloc(&dmats, mats.size() * sizeof(Mat)));
    CHECK(cudaMemcpy(dmats, mats.data(), mats.size() * sizeof(Mat), cudaMemcpyHostToDevice));
    CHECK(cudaMalloc(&dmats_attn, mats.size() * sizeof(Mat)));
    CHECK(cudaMemcpy(dmats_attn, mats_attn.data(), mats.size() * sizeof(Mat), cudaMemcpyHostToDevice));
    unsigned *done, *epoch, *stuck;
    CHECK(cudaMalloc(&done, sizeof(unsigned)));
    CHECK(cudaMalloc(&stuck, 8 * sizeof(unsigned)));
    CHECK(cudaMemset(stuck, 0, 8 * sizeof(unsigned)));
    CHECK(cudaMalloc(&epoch, sizeof(unsigned)));
    CHECK(cudaMemset(epoch, 0, sizeof(unsigned)));
    CHECK(cudaDeviceSynchronize());

    std::vector<int> slot_counts;
    for (int i = 1; i < argc; ++i) slot_counts.push_back(std::atoi(argv[i]));
    if (slot_counts.empty()) slot_counts = {15};
    std::vector<int> modes;  // RING_MODES: Mode bits, comma-separated; default 7 (all)
    for (const char* e = std::getenv("RING_MODES"); e && *e;) {
        char* end;
        modes.push_back(static_cast<int>(std::strtol(e, &end, 10)));
        e = *end ? end + 1 : end;
    }
    if (modes.empty()) modes = {kFull};
    const char* prod_env = std::getenv("RING_PRODUCERS");  // b: bulk copies, c: cp.async; default both
    const std::string producers = prod_env ? prod_env : "bc";
    const char* div_env = std::getenv("RING_SLOT_DIV");  // smaller slots (a shorter last chunk a matmul)
    const int slot_bytes = kSlotBytes / std::max(1, div_env ? std::atoi(div_env) : 1) / 16 * 16;
    std::printf("persistent %s chain: 128 matmuls, %.2f GB, %d CTAs of %d threads\n", q8 ? "Q8_0" : "Q4_0",
                total / 1e9, sm, kThreads);
    for (int rep = 0; rep < 2; ++rep)
        for (char pc : producers)
            for (int mode : modes)
                for (int slots : slot_counts) {
                    const bool bulk = pc == 'b';
                    const bool batched = mode & (kBatched | kFlags), flags = mode & kFlags;
                    if ((flags && !bulk) || (q8 && !flags)) continue;  // (built with the bulk copies; Q8_0: flag words)
                    auto kernel = flags ? (q8 ? chain_kernel<true, true, true, true> : chain_kernel<true, true, true>)
                                  : bulk ? (batched ? chain_kernel<true, true, false> : chain_kernel<true, false, false>)
                                         : (batched ? chain_kernel<false, true, false> : chain_kernel<false, false, false>);
                    const size_t smem = (sizeof(Smem) + 127) / 128 * 128 + static_cast<size_t>(slots) * slot_bytes;
                    CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(smem)));
                    int per_sm = 0;
                    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
                    if (per_sm < 1 || slots > kMaxSlots) {
                        std::printf("  %d slots: does not fit\n", slots);
                        continue;
                    }
                    int row_bytes = 0;  // (a chunk is at least one row: a row larger than a slot overran it)
                    for (const Mat& m : mats) row_bytes = std::max(row_bytes, m.code_bytes + m.K / 16);
                    if (row_bytes > slot_bytes) {
                        std::printf("  slots of %d bytes: a row of %d does not fit\n", slot_bytes, row_bytes);
                        continue;
                    }
                    const bool attn = (mode & kAttnHop) && flags;
                    const Params p{attn ? dmats_attn : dmats, static_cast<int>(mats.size()), slots, done, mode, slot_bytes, epoch, stuck};
                    const double us = captured_us(st, 10, [&] {
                        CHECK(cudaMemsetAsync(done, 0, sizeof(unsigned), st));
                        if (flags) {
                            next_epoch<<<1, 1, 0, st>>>(epoch);
                            publish_input<<<8, 256, 0, st>>>(x0, x0_words, kMaxK, epoch);
                        }
                        kernel<<<sm, kThreads, smem, st>>>(p);
                    });
                    CHECK(cudaStreamSynchronize(st));
                    const bool verify = rep == 0 && (mode & kStage) && (mode & kRows) && (mode & (kWait | kFlags)) &&
                                        !(mode & kNoStream);
                    double err = 0;
                    if (verify)
                        for (int i : {0, 1, 2, 3, 124, 125, 126, 127}) {
                            err = std::max(err, check(attn ? mats_attn[i] : mats[i]));
                            if (attn && i % 4 == 0) err = std::max(err, check_attention(mats[i]));
                        }
                    char what[96];
                    std::snprintf(what, sizeof what, "%s%s%s%s%s%s%s", attn ? "attn-hop " : "", flags ? "flags " : "", mode & kWait ? "wait " : "",
                                  mode & kStage ? "stage " : "", mode & kRows ? "rows " : "",
                                  mode & kNoStream ? "no-stream " : "", mode & kWarpChunks ? "warp-chunks" : mode & kGroups ? "groups" : mode & kBatched ? "batched" : "");
                    std::printf("  %-8s %-32s ring %2d x %.1f KB  %8.1f us  %5.2f TB/s (%2.0f%% of 4.8)",
                                bulk ? "bulk" : "cp.async", mode ? what : "stream only", slots, slot_bytes / 1024.0, us,
                                total / us / 1e6, 100 * total / us / 1e6 / 4.8);
                    if (verify) std::printf("  max error %.1e of sum |w x|%s", err, err < 1e-3 ? "" : "  WRONG");
                    unsigned gave_up[8] = {};
                    CHECK(cudaMemcpy(gave_up, stuck, sizeof gave_up, cudaMemcpyDeviceToHost));
                    if (gave_up[0]) {
                        std::printf("  STUCK (a wait gave up: kind %u, CTA %u, thread %u, %u %#x %#x)", gave_up[1],
                                    gave_up[2], gave_up[3], gave_up[4], gave_up[5], gave_up[6]);
                    }
                    CHECK(cudaMemset(stuck, 0, sizeof gave_up));
                    std::printf("\n");
                }
    return 0;
}
