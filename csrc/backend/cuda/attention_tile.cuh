// Attention as a device function, the body of the attention kernels
// (attention.cu), kept apart so that a kernel doing more (a fused decode
// layer) can run a tile of it: the input step
// (QK-LayerNorm, rotary, cache write) of a one-token step, and causal
// attention over the KV cache (GQA, sliding window) for one tile of query rows.
//
// A tile's rows are the (token, query head) pairs that share a KV head, so GQA
// reads each key once for the whole group; each warp takes a run of 32-key
// chunks, whose key and value rows are copied into shared memory together
// (cp.async, all in flight at once; with two chunk buffers the next chunk's
// copies are in flight while one is used); then each lane owns a key for the scores
// and a slice of the head for the weighted sum of values (online softmax,
// f32). The warps of a tile combine in shared memory; key splits over several
// CTAs leave partial results for the last one to finish. Positions come from
// device memory (*pos0), so a recorded step replays at any position.
#pragma once
#include <cmath>

#include "backend/cuda/kernels.h"
#include "backend/cuda/kv_formats.cuh"

namespace phi::cuda {
namespace {

constexpr int kRows = 8;      // query rows per warp
constexpr int kMaxHead = 256;  // head_dim limit (acc registers, shared q)

struct InputParams {
    float* q = nullptr;
    float* k = nullptr;
    const float* v = nullptr;
    int64_t q_stride = 0, kv_stride = 0;
    int n_head = 0, n_head_kv = 0, hd = 0;
    QKNorm qk;
    int n_rot = 0;
    const float* inv_freq = nullptr;
    float mscale = 1.0f;
    void* kc = nullptr;
    void* vc = nullptr;
    KvFormat kv = KvFormat::f16;
    const int* pos0 = nullptr;
    int pos = 0;  // added to *pos0
    // the input kernel only: q, k, v read from a product not yet through its
    // epilogue (src_scale per token, src_bias per column; k and v at k_off and
    // v_off of a src row), not from q, k, v
    const float* src = nullptr;
    const float* src_scale = nullptr;
    const float* src_bias = nullptr;
    int64_t src_stride = 0, k_off = 0, v_off = 0;
};

// Per-head LayerNorm of buf[0, hd) (one warp; buf in shared memory).
__device__ __forceinline__ void head_layernorm(float* buf, int hd, const float* w, const float* b, float eps) {
    const int lane = threadIdx.x % kWarp;
    float s = 0.0f;
    for (int i = lane; i < hd; i += kWarp) s += buf[i];
    const float mean = warp_sum(s) / static_cast<float>(hd);
    s = 0.0f;
    for (int i = lane; i < hd; i += kWarp) s += (buf[i] - mean) * (buf[i] - mean);
    const float inv = 1.0f / sqrtf(warp_sum(s) / static_cast<float>(hd) + eps);
    __syncwarp();
    for (int i = lane; i < hd; i += kWarp) buf[i] = (buf[i] - mean) * inv * w[i] + (b ? b[i] : 0.0f);
    __syncwarp();
}

// The rotary cos and sin (times mscale) of this lane's dimensions i = lane + 32 k
// of the rotated half at position pos: they depend on nothing the step computes.
constexpr int kRotPerLane = kMaxHead / 2 / kWarp;
struct RotaryAngles {
    float c[kRotPerLane], s[kRotPerLane];
};
// This lane's inverse frequencies (constant: a kernel may load them before it
// reads the step's position, so the two round trips to memory overlap).
struct RotaryFreqs {
    float f[kRotPerLane];
};
__device__ __forceinline__ RotaryFreqs rotary_freqs(const InputParams& p) {
    RotaryFreqs r;
#pragma unroll
    for (int k = 0; k < kRotPerLane; ++k) {
        const int i = threadIdx.x % kWarp + k * kWarp;
        r.f[k] = i < p.n_rot / 2 ? __ldg(p.inv_freq + i) : 0.0f;
    }
    return r;
}
__device__ __forceinline__ RotaryAngles rotary_angles(const InputParams& p, const RotaryFreqs& fr, int pos) {
    RotaryAngles a;
#pragma unroll
    for (int k = 0; k < kRotPerLane; ++k) {
        const int i = threadIdx.x % kWarp + k * kWarp;
        a.c[k] = a.s[k] = 0.0f;
        if (i >= p.n_rot / 2) continue;
        sincosf(static_cast<float>(pos) * fr.f[k], &a.s[k], &a.c[k]);
        a.c[k] *= p.mscale;
        a.s[k] *= p.mscale;
    }
    return a;
}

// NeoX rotary of the first n_rot dimensions of buf (one warp).
__device__ __forceinline__ void head_rotary(float* buf, int n_rot, const RotaryAngles& a) {
    const int half = n_rot / 2;
#pragma unroll
    for (int k = 0; k < kRotPerLane; ++k) {
        const int i = threadIdx.x % kWarp + k * kWarp;
        if (i >= half) break;
        const float x = buf[i], y = buf[i + half];
        buf[i] = x * a.c[k] - y * a.s[k];
        buf[i + half] = y * a.c[k] + x * a.s[k];
    }
    __syncwarp();
}

struct AttnParams {
    const float* q = nullptr;
    int64_t q_stride = 0;
    int t0 = 0, n_q = 0;
    const void* kc = nullptr;
    const void* vc = nullptr;
    int n_head = 0, n_head_kv = 0, hd = 0;
    float scale = 1.0f;
    int window = 0;
    const int* pos0 = nullptr;
    int pos = 0;  // added to *pos0
    float* out = nullptr;
    int tiles = 0, splits = 1;  // tiles: of all KV heads together
    float* partial = nullptr;
    int* counters = nullptr;
    unsigned long long* words = nullptr;  // the decode kernel's partials as marked words (or, null, through partial)
    int stages = 1, q_rows = kRows;  // key chunks of a warp in shared memory, query rows of a tile (AttentionPlan)
    int block_keys = 0;              // the decode kernel: keys of a row's block (AttentionPlan)
    InputParams in;  // kFused: the input step of the step's one token, done here
    unsigned long long* trace = nullptr;  // measuring only (PHICPP_CUDA_ATTN_TRACE): 8 times a CTA
    int noop = 0;  // measuring only (PHICPP_CUDA_ATTN_NOOP): 1 an empty kernel of the same shape, 2 without its shared memory
};

template <class T>
__device__ __forceinline__ float ld_elem(const T* p, int64_t i);
template <>
__device__ __forceinline__ float ld_elem<float>(const float* p, int64_t i) { return p[i]; }
template <>
__device__ __forceinline__ float ld_elem<__half>(const __half* p, int64_t i) { return __half2float(p[i]); }

// Shared memory of one warp: `stages` chunks' key and value rows (32 keys,
// padded rows of ld elements), the tile's q_rows queries, (fused input step)
// the new key and value, and for a quantized cache the chunk's raw key and
// value rows (stage_row bytes each) before they are dequantized.
__host__ __device__ inline size_t attention_smem(int hd, int elem_bytes, int stage_row, int stages, int q_rows) {
    const int ld = hd + 16 / elem_bytes;
    return (stages * 2 * kWarp * ld * elem_bytes + (q_rows + 2) * hd * sizeof(float) + 2 * kWarp * stage_row + 15) /
           16 * 16;
}
template <class T, KvFormat F>
__host__ __device__ inline size_t attention_smem(const AttnParams& p) {
    return attention_smem(p.hd, static_cast<int>(sizeof(T)), kv_stage_row(F, p.hd), p.stages, p.q_rows);
}

template <class T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }

// One warp copies n floats from src to dst (shared memory) and the two runs
// of m floats a0 -> b0 and a1 -> b1 beside them, kBatch values a lane at a
// time with all of a batch's loads in flight before the first store (the
// first batch holds the two short runs too).
__device__ __forceinline__ void copy_to_shared(const float* src, float* dst, int n, const float* a0, float* b0,
                                               const float* a1, float* b1, int m) {
    constexpr int kBatch = kMaxHead / kWarp;
    const int lane = threadIdx.x % kWarp;
    for (int base = 0; base < n; base += kBatch * kWarp) {
        float x[kBatch], y0[kBatch], y1[kBatch];
#pragma unroll
        for (int i = 0; i < kBatch; ++i) {
            const int e = base + lane + i * kWarp, f = lane + i * kWarp;
            x[i] = e < n ? src[e] : 0.0f;
            y0[i] = base == 0 && f < m ? a0[f] : 0.0f;
            y1[i] = base == 0 && f < m ? a1[f] : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < kBatch; ++i) {
            const int e = base + lane + i * kWarp, f = lane + i * kWarp;
            if (e < n) dst[e] = x[i];
            if (base == 0 && f < m) {
                b0[f] = y0[i];
                b1[f] = y1[i];
            }
        }
    }
}

// q . k for the warp's rows against one key row kr (in shared memory); kVec
// elements per 16-byte read when rows are 16-byte multiples.
template <class T, int kVec, int kR>
__device__ __forceinline__ void scores(const T* kr, const float* qs, int hd, int nrows, float (&s)[kR]) {
#pragma unroll
    for (int r = 0; r < kR; ++r) s[r] = 0.0f;
#pragma unroll 4
    for (int d = 0; d < hd; d += kVec) {
        float kv[kVec];
        if constexpr (kVec > 1) {
            const uint4 raw = *reinterpret_cast<const uint4*>(kr + d);
            const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
            for (int i = 0; i < kVec; ++i) kv[i] = ld_elem<T>(e, i);
        } else {
            kv[0] = ld_elem<T>(kr, d);
        }
#pragma unroll
        for (int r = 0; r < kR; ++r) {
            if (r >= nrows) break;
            // two chains of products, not one of hd: the row's sum is latency-bound
            float a = 0.0f, b = 0.0f;
#pragma unroll
            for (int i = 0; i < kVec; i += 2) {
                a += qs[r * hd + d + i] * kv[i];
                if (i + 1 < kVec) b += qs[r * hd + d + i + 1] * kv[i + 1];
            }
            s[r] += a + b;
        }
    }
}

// A warp's online-softmax state (m, l, acc) of its rows, row r at dst + r * stride:
// m, l, then the head's hd sums.
template <int kR>
__device__ __forceinline__ void put_partial(float* dst, int stride, int nrows, int hd, const float (&m)[kR],
                                            const float (&l)[kR], const float (&acc)[kR][kMaxHead / kWarp]) {
    const int lane = threadIdx.x % kWarp, nd = (hd + kWarp - 1) / kWarp;
    for (int r = 0; r < nrows; ++r) {
        if (lane == 0) {
            dst[r * stride] = m[r];
            dst[r * stride + 1] = l[r];
        }
#pragma unroll
        for (int i = 0; i < kMaxHead / kWarp; ++i) {
            const int d = lane + kWarp * i;
            if (i < nd && d < hd) dst[r * stride + 2 + d] = acc[r][i];
        }
    }
}

// A barrier for warps [0, n) of the CTA only (barrier 1; __syncthreads is 0).
__device__ __forceinline__ void bar_sync_warps(int n) {
    asm volatile("bar.sync 1, %0;" ::"r"(n * kWarp) : "memory");
}

__device__ __forceinline__ unsigned long long global_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
// Measuring only: time point k of this CTA (its first thread).
__device__ __forceinline__ void trace_point(const AttnParams& p, int k) {
    if (p.trace && threadIdx.x == 0) p.trace[(blockIdx.y * gridDim.x + blockIdx.x) * 8 + k] = global_ns();
}

// kR: the rows a warp holds in registers (kRows, or 1 where a tile has one
// row: a one-token step without GQA). F: the cache's format; T its elements,
// or for Q8_0/Q4_0 blocks float, the rows' type in shared memory (the blocks'
// values exactly, as the CPU reads them).
// kFused (one token): the input step too. Each warp normalizes and rotates
// its own copies of the token's q heads and of its key; the warp whose keys
// include the token's position writes the key and value into the cache (and
// takes them from shared memory rather than reading them back).
// block, split: the tile (block of the attention kernel) and key split;
// warps [0, n_warps) of the CTA take part (the others must not call).
template <class T, int kVec, bool kFused, int kR, KvFormat F>
__device__ void attention_tile(const AttnParams& p, uint8_t* smem_all, int block, int split, int warp, int n_warps) {
    const size_t warp_smem = attention_smem<T, F>(p);
    uint8_t* smem = smem_all + warp * warp_smem;  // this warp's part
    const int ld = p.hd + 16 / static_cast<int>(sizeof(T));  // padding keeps 16-byte rows apart in the banks
    // [stages] chunks of [32][ld] key rows then [32][ld] value rows; ks, vs: the chunk in use
    T* const rows = reinterpret_cast<T*>(smem);
    T* ks = rows;
    T* vs = ks + kWarp * ld;
    float* qs = reinterpret_cast<float*>(rows + p.stages * 2 * kWarp * ld);  // [q_rows][hd] the queries, pre-scaled
    float* cur_k = qs + p.q_rows * p.hd;                                     // [hd] fused: the token's key
    float* cur_v = cur_k + p.hd;                                 // [hd] and value
    uint8_t* stage = reinterpret_cast<uint8_t*>(cur_v + p.hd);   // [2][32][kv_stage_row] quantized: raw rows
    if constexpr (!kFused) {
        pdl_wait();
        pdl_launch_dependents();
    }
    // kFused: until pdl_wait below, only what the kernel before (the qkv
    // projection) does not write: the step's position (set before the step's
    // first kernel), the cache rows of earlier tokens, the rotary angles
    const int lane = threadIdx.x % kWarp;
    RotaryFreqs freqs;
    if constexpr (kFused) freqs = rotary_freqs(p.in);  // in flight with the position's load below
    const int tiles_per_head = p.tiles / p.n_head_kv;
    const int kvh = block / tiles_per_head, tile = block % tiles_per_head;
    const int group = p.n_head / p.n_head_kv;
    const int rows_total = p.n_q * group;
    const int rho0 = tile * kRows;
    const int nrows = min(kRows, rows_total - rho0);
    const int pos_base = *p.pos0 + p.pos + p.t0;
    const int64_t kvw = static_cast<int64_t>(p.n_head_kv) * p.hd;
    const int nd = (p.hd + kWarp - 1) / kWarp;  // head slice per lane

    const int min_pos = pos_base + rho0 / group, max_pos = pos_base + (rho0 + nrows - 1) / group;
    const int lo = p.window > 0 ? max(0, min_pos - p.window + 1) : 0, hi = max_pos + 1;
    const int chunk = ((hi - lo + p.splits - 1) / p.splits + kWarp - 1) / kWarp * kWarp;
    // the CTA's keys (its split), then this warp's 32-key chunks of them
    const int c_begin = lo + split * chunk, c_end = min(hi, c_begin + chunk);
    const int n_chunks = max(0, (c_end - c_begin + kWarp - 1) / kWarp);
    const int k_begin = c_begin + kWarp * (n_chunks * warp / n_warps);
    const int k_end = min(c_end, c_begin + kWarp * (n_chunks * (warp + 1) / n_warps));

    float m[kR], l[kR], acc[kR][kMaxHead / kWarp];
#pragma unroll
    for (int r = 0; r < kR; ++r) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < kMaxHead / kWarp; ++i) acc[r][i] = 0.0f;
    }
    const T* K = static_cast<const T*>(p.kc) + kvh * p.hd;
    const T* V = static_cast<const T*>(p.vc) + kvh * p.hd;
    // the chunk's key and value rows into shared memory, every load in flight at once
    const int cur_pos = pos_base;  // kFused: the token's position
    T* Kw = static_cast<T*>(const_cast<void*>(p.kc)) + kvh * p.hd;
    T* Vw = static_cast<T*>(const_cast<void*>(p.vc)) + kvh * p.hd;
    // kFused: elements [d, d + n) of the token's key and value, into shared row j of
    // chunk buffer buf and the cache
    auto put_current = [&](int buf, int j, int d, int n) {
        T* kd = rows + buf * 2 * kWarp * ld;
        for (int e = 0; e < n; ++e) {
            const T kk = from_f32<T>(cur_k[d + e]), vv = from_f32<T>(cur_v[d + e]);
            kd[j * ld + d + e] = kk;
            kd[(kWarp + j) * ld + d + e] = vv;
            Kw[cur_pos * kvw + d + e] = kk;
            Vw[cur_pos * kvw + d + e] = vv;
        }
    };
    // a quantized cache: a row of position pos is n_head_kv heads of hd / 32 blocks
    constexpr bool kQuant = kv_quantized(F);
    const int64_t q_row = kQuant ? p.n_head_kv * kv_head_bytes(F, p.hd) : 0;
    const uint8_t* Kq = static_cast<const uint8_t*>(p.kc) + (kQuant ? kvh * kv_head_bytes(F, p.hd) : 0);
    const uint8_t* Vq = static_cast<const uint8_t*>(p.vc) + (kQuant ? kvh * kv_head_bytes(F, p.hd) : 0);
    // kFused, quantized (the whole warp): the token's key and value as blocks
    // into the cache, and what they hold into shared row j
    auto put_current_q = [&](int j) {
        if constexpr (kQuant) {
            uint8_t* kd = const_cast<uint8_t*>(Kq) + cur_pos * q_row;
            uint8_t* vd = const_cast<uint8_t*>(Vq) + cur_pos * q_row;
            for (int b = 0; b < p.hd / kWarp; ++b) {
                const int i = b * kWarp + lane;
                ks[j * ld + i] = from_f32<T>(kv_store_block<F>(kd + b * kv_block_bytes(F), cur_k[i]));
                vs[j * ld + i] = from_f32<T>(kv_store_block<F>(vd + b * kv_block_bytes(F), cur_v[i]));
            }
        }
    };
    // quantized: a chunk's rows into shared memory as f32 (T is float). Where the
    // cache's rows divide into pieces (kv_piece), their bytes are first copied raw
    // by cp.async (start: every request in flight at once) and dequantized from
    // shared memory after the wait (finish); otherwise finish loads them from
    // global memory. The token's own row (fused) is put by put_current_q.
    const int qg = kQuant ? kv_piece(q_row) : 0;
    const int q_mis = kQuant && qg ? static_cast<int>((kvh * kv_head_bytes(F, p.hd)) % qg) : 0;
    auto start_chunk_q = [&](int kb, int nk) {
        if constexpr (kQuant) {
            if (qg == 0) return;
            __syncwarp();  // every lane has read the chunk before from the staging rows
            const int pieces = (q_mis + static_cast<int>(kv_head_bytes(F, p.hd)) + qg - 1) / qg;
            for (int c = lane; c < 2 * nk * pieces; c += kWarp) {
                const int which = c / (nk * pieces), j = c % (nk * pieces) / pieces, piece = c % pieces;
                if (kFused && kb + j == cur_pos) continue;  // written by this step
                const uint8_t* src = (which ? Vq : Kq) + (kb + j) * q_row - q_mis + piece * qg;
                cp_async_g(stage + (which * kWarp + j) * kv_stage_row(F, p.hd) + piece * qg, src, qg);
            }
        }
    };
    auto finish_chunk_q = [&](int kb, int nk, bool current) {
        if constexpr (kQuant) {
            if (qg) {
                cp_async_commit();
                cp_async_wait<0>();
                __syncwarp();
            }
            // a half-warp per block (two values a lane), kBatch pairs of blocks of keys
            // and of values loaded before any is stored: the stores to shared memory
            // would otherwise order every load after the one before
            constexpr int kBatch = 8;
            const int nb = p.hd / kWarp, units = nk * nb, half = lane / 16, i2 = lane % 16;
            int j = half / nb, b = half % nb;  // this lane's block: unit u = 2 step + half
            for (int u0 = 0; u0 < units; u0 += 2 * kBatch) {
                float2 kx[kBatch], vx[kBatch];
                int jj = j, bb = b;
#pragma unroll
                for (int i = 0; i < kBatch; ++i) {
                    if (u0 + 2 * i + half < units) {
                        const int at = bb * kv_block_bytes(F);
                        const uint8_t* kr = qg ? stage + jj * kv_stage_row(F, p.hd) + q_mis + at
                                               : Kq + (kb + jj) * q_row + at;
                        const uint8_t* vr = qg ? stage + (kWarp + jj) * kv_stage_row(F, p.hd) + q_mis + at
                                               : Vq + (kb + jj) * q_row + at;
                        kx[i] = kv_load_pair<F>(kr, i2);
                        vx[i] = kv_load_pair<F>(vr, i2);
                    }
                    for (bb += 2; bb >= nb; bb -= nb) ++jj;
                }
#pragma unroll
                for (int i = 0; i < kBatch; ++i) {
                    // (the token's own row, fused: its bytes were not copied; put_current_q puts it)
                    if (u0 + 2 * i + half < units && !(kFused && kb + j == cur_pos)) {
                        *reinterpret_cast<float2*>(ks + j * ld + b * kWarp + 2 * i2) = kx[i];
                        *reinterpret_cast<float2*>(vs + j * ld + b * kWarp + 2 * i2) = vx[i];
                    }
                    for (b += 2; b >= nb; b -= nb) ++j;
                }
            }
            if (kFused && current && cur_pos >= kb && cur_pos < kb + nk) put_current_q(cur_pos - kb);
        }
    };
    // the rows of keys [kb, kb + nk) into chunk buffer buf, as one committed group
    // (fused: the token's own row is put by put_current once it is computed;
    // `current` says whether it is yet)
    auto issue_chunk = [&](int buf, int kb, int nk, bool current) {
        T* kd = rows + buf * 2 * kWarp * ld;
        const int per_row = p.hd / kVec;  // 16-byte pieces
        for (int c = lane; c < nk * per_row; c += kWarp) {
            const int j = c / per_row, d = (c % per_row) * kVec;
            if (kFused && kb + j == cur_pos) {
                if (current) put_current(buf, j, d, kVec);
                continue;
            }
            cp_async16(kd + j * ld + d, K + (kb + j) * kvw + d);
            cp_async16(kd + (kWarp + j) * ld + d, V + (kb + j) * kvw + d);
        }
        cp_async_commit();  // wait_group counts committed groups only
    };
    if constexpr (kQuant) {
        if (k_begin < k_end) start_chunk_q(k_begin, min(kWarp, k_end - k_begin));
    } else if constexpr (kVec > 1) {
        if (k_begin < k_end) issue_chunk(0, k_begin, min(kWarp, k_end - k_begin), false);
    }
    // the queries, pre-scaled, while the first chunk is in flight
    if constexpr (kFused) {
        const InputParams& in = p.in;
        const RotaryAngles angles = rotary_angles(in, freqs, cur_pos);
        trace_point(p, 1);
        pdl_wait();
        pdl_launch_dependents();
        trace_point(p, 2);
        // the token's key, value and query rows (the tile's rows are consecutive
        // heads: one run of nrows * hd floats), every load of a batch in flight
        // before any is stored: a loop that stores each value as it arrives
        // waits out one round trip to L2 per 32 elements
        copy_to_shared(in.q + (kvh * group + rho0) * p.hd, qs, nrows * p.hd, in.k + kvh * p.hd, cur_k,
                       in.v + kvh * p.hd, cur_v, p.hd);
        __syncwarp();
        for (int r = -1; r < nrows; ++r) {
            float* vec = r < 0 ? cur_k : qs + r * p.hd;
            if (in.qk.q_w)
                head_layernorm(vec, p.hd, r < 0 ? in.qk.k_w : in.qk.q_w, r < 0 ? in.qk.k_b : in.qk.q_b, in.qk.eps);
            head_rotary(vec, in.n_rot, angles);
        }
        for (int r = 0; r < nrows; ++r)
            for (int d = lane; d < p.hd; d += kWarp) qs[r * p.hd + d] *= p.scale;
        // the token's own row, if the first chunk (issued before) holds it
        if (kVec > 1 && cur_pos >= k_begin && cur_pos < min(k_end, k_begin + kWarp)) {
            if constexpr (kQuant) {
                __syncwarp();  // cur_k, cur_v complete
                put_current_q(cur_pos - k_begin);
            } else {
                for (int d = lane * kVec; d < p.hd; d += kWarp * kVec) put_current(0, cur_pos - k_begin, d, kVec);
            }
        }
    } else {
        for (int r = 0; r < nrows; ++r) {
            const int rho = rho0 + r, t = rho / group, h = kvh * group + rho % group;
            const float* qr = p.q + t * p.q_stride + h * p.hd;
            for (int d = lane; d < p.hd; d += kWarp) qs[r * p.hd + d] = qr[d] * p.scale;
        }
    }
    __syncwarp();
    trace_point(p, 3);
    for (int kb = k_begin, ci = 0; kb < k_end; kb += kWarp, ++ci) {
        const int nk = min(kWarp, k_end - kb);
        if constexpr (kQuant) {
            finish_chunk_q(kb, nk, kb != k_begin);  // (the first chunk's own row is put above)
            // the next chunk's bytes in flight while this one is used
            if (kb + kWarp < k_end) start_chunk_q(kb + kWarp, min(kWarp, k_end - kb - kWarp));
        } else if constexpr (kVec > 1) {
            const int buf = p.stages > 1 ? ci & 1 : 0;
            ks = rows + buf * 2 * kWarp * ld;
            vs = ks + kWarp * ld;
            if (p.stages > 1) {
                // the next chunk's rows in flight while this one is used (its buffer's
                // last reader, chunk ci - 1, is done: the __syncwarp at the loop's end)
                if (kb + kWarp < k_end) {
                    issue_chunk(buf ^ 1, kb + kWarp, min(kWarp, k_end - kb - kWarp), true);
                    cp_async_wait<1>();
                } else {
                    cp_async_wait<0>();
                }
            } else {
                if (kb != k_begin) issue_chunk(0, kb, nk, true);
                cp_async_wait<0>();
            }
        } else {
            for (int c = lane; c < nk * p.hd; c += kWarp) {
                const int j = c / p.hd, d = c % p.hd;
                if (kFused && kb + j == cur_pos) {
                    put_current(0, j, d, 1);
                    continue;
                }
                ks[j * ld + d] = K[(kb + j) * kvw + d];
                vs[j * ld + d] = V[(kb + j) * kvw + d];
            }
        }
        __syncwarp();
        const int key = kb + lane;
        float s[kR];
        if (lane < nk) scores<T, kVec, kR>(ks + lane * ld, qs, p.hd, nrows, s);
        float pr[kR];
#pragma unroll
        for (int r = 0; r < kR; ++r) {
            pr[r] = 0.0f;
            if (r >= nrows) break;
            const int pos = pos_base + (rho0 + r) / group;
            const bool ok = lane < nk && key <= pos && (p.window <= 0 || key > pos - p.window);
            const float sc = ok ? s[r] : -INFINITY;
            const float m_new = fmaxf(m[r], warp_max(sc));
            if (m_new == -INFINITY) continue;  // no key of this row yet
            const float corr = expf(m[r] - m_new);
            pr[r] = ok ? expf(sc - m_new) : 0.0f;
            l[r] = l[r] * corr + warp_sum(pr[r]);
            m[r] = m_new;
#pragma unroll
            for (int i = 0; i < kMaxHead / kWarp; ++i) acc[r][i] *= corr;
        }
        // the weighted sum of the values, read back by head slice
        for (int j = 0; j < nk; ++j) {
            float vv[kMaxHead / kWarp];
#pragma unroll
            for (int i = 0; i < kMaxHead / kWarp; ++i) {
                const int d = lane + kWarp * i;
                vv[i] = i < nd && d < p.hd ? ld_elem<T>(vs + j * ld, d) : 0.0f;
            }
#pragma unroll
            for (int r = 0; r < kR; ++r) {
                if (r >= nrows) break;
                const float pj = __shfl_sync(0xffffffffu, pr[r], j);
#pragma unroll
                for (int i = 0; i < kMaxHead / kWarp; ++i) acc[r][i] += pj * vv[i];
            }
        }
        __syncwarp();  // before the next chunk's rows overwrite ks, vs
    }

    trace_point(p, 4);
    if (n_warps > 1) {
        // the CTA's warps combine in shared memory: each puts (m, l, acc) of its
        // rows where its key rows were, warp 0 takes the sum
        __syncwarp();
        const int stride = p.hd + 2;
        put_partial(reinterpret_cast<float*>(rows), stride, nrows, p.hd, m, l, acc);
        bar_sync_warps(n_warps);
        if (warp != 0) return;
        for (int r = 0; r < nrows; ++r) {
            float mx = -INFINITY;
            for (int w = 0; w < n_warps; ++w)
                mx = fmaxf(mx, reinterpret_cast<const float*>(smem_all + w * warp_smem)[r * stride]);
            float L = 0.0f, o[kMaxHead / kWarp];
#pragma unroll
            for (int i = 0; i < kMaxHead / kWarp; ++i) o[i] = 0.0f;
            for (int w = 0; w < n_warps; ++w) {
                const float* part = reinterpret_cast<const float*>(smem_all + w * warp_smem) + r * stride;
                const float wt = part[0] == -INFINITY ? 0.0f : expf(part[0] - mx);
                L += wt * part[1];
#pragma unroll
                for (int i = 0; i < kMaxHead / kWarp; ++i) {
                    const int d = lane + kWarp * i;
                    if (i < nd && d < p.hd) o[i] += wt * part[2 + d];
                }
            }
            m[r] = mx;
            l[r] = L;
#pragma unroll
            for (int i = 0; i < kMaxHead / kWarp; ++i) acc[r][i] = o[i];
        }
    }

    auto out_row = [&](int r) {
        const int rho = rho0 + r, t = rho / group, h = kvh * group + rho % group;
        return p.out + static_cast<int64_t>(t) * p.n_head * p.hd + h * p.hd;
    };
    trace_point(p, 5);
    if (p.splits == 1) {
        for (int r = 0; r < nrows; ++r) {
            const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
            float* o = out_row(r);
#pragma unroll
            for (int i = 0; i < kMaxHead / kWarp; ++i) {
                const int d = lane + kWarp * i;
                if (i < nd && d < p.hd) o[d] = acc[r][i] * inv;
            }
        }
        trace_point(p, 6);
        return;
    }
    // this split's (m, l, acc) per row, then the last split of the tile combines
    const int stride = p.hd + 2;
    put_partial(p.partial + (static_cast<int64_t>(block) * p.splits + split) * kRows * stride, stride, nrows,
                p.hd, m, l, acc);
    __threadfence();
    __syncwarp();  // every lane's partial is out before the ticket is drawn
    int ticket = 0;
    if (lane == 0) ticket = atomicAdd(&p.counters[block], 1);
    ticket = __shfl_sync(0xffffffffu, ticket, 0);
    trace_point(p, 6);
    if (ticket != p.splits - 1) return;
    __threadfence();
    // lane s reads the (m, l) of splits s, s + 32...; every partial sum is loaded before any is used
    const float* base = p.partial + static_cast<int64_t>(block) * p.splits * kRows * stride;
    for (int r = 0; r < nrows; ++r) {
        auto m_of = [&](int sp) { return __ldcg(base + (sp * kRows + r) * stride); };
        float mx = -INFINITY;
        for (int sp = lane; sp < p.splits; sp += kWarp) mx = fmaxf(mx, m_of(sp));
        mx = warp_max(mx);
        float L = 0.0f;
        for (int sp = lane; sp < p.splits; sp += kWarp) {
            const float ms = m_of(sp);
            L += (ms == -INFINITY ? 0.0f : expf(ms - mx)) * __ldcg(base + (sp * kRows + r) * stride + 1);
        }
        L = warp_sum(L);
        float o[kMaxHead / kWarp];
#pragma unroll
        for (int i = 0; i < kMaxHead / kWarp; ++i) o[i] = 0.0f;
        for (int s0 = 0; s0 < p.splits; s0 += kWarp) {
            const float ms = s0 + lane < p.splits ? m_of(s0 + lane) : -INFINITY;
            const float w = ms == -INFINITY ? 0.0f : expf(ms - mx);
            const int n = min(kWarp, p.splits - s0);
#pragma unroll 4
            for (int k = 0; k < n; ++k) {
                const float ws = __shfl_sync(0xffffffffu, w, k);
                const float* ps = base + ((s0 + k) * kRows + r) * stride + 2;
#pragma unroll
                for (int i = 0; i < kMaxHead / kWarp; ++i) {
                    const int d = lane + kWarp * i;
                    if (i < nd && d < p.hd) o[i] += ws * __ldcg(ps + d);
                }
            }
        }
        const float inv = L > 0.0f ? 1.0f / L : 0.0f;
        float* dst = out_row(r);
#pragma unroll
        for (int i = 0; i < kMaxHead / kWarp; ++i) {
            const int d = lane + kWarp * i;
            if (i < nd && d < p.hd) dst[d] = o[i] * inv;
        }
    }
    if (lane == 0) p.counters[block] = 0;  // ready for the next launch
    trace_point(p, 7);
}

} // namespace
} // namespace phi::cuda
