// What every decode matmul kernel (matvec.cu) shares: its parameters, staging
// the activations in shared memory (the fused input norm, rounding to 8 bits
// per 32 elements for quantized weights), the dot products of a quantized unit
// or a 16-byte float vector with them, and the epilogue of a task's rows, with
// what it reads loaded early.
#pragma once
#include <type_traits>

#include "backend/cuda/formats.cuh"
#include "backend/cuda/kernels.h"

namespace phi::cuda {
namespace {

// At most 128 registers a thread, so 16 warps fit an SM whatever the format:
// Q8_0 and the K-quants took up to 165 registers, fewer warps per SM, and ran
// up to 30% slower (tools/matvec_bench.cu). Float weights: two CTAs of 8 warps
// per SM. Quantized weights: one CTA of 16 warps, so half as many CTAs stage
// the activations (the same warps in flight; the matmul chain measured 4%
// faster for Q4_0, 3% for Q8_0, the K = 8192 `down` matmuls up to 15%).
constexpr int kMatvecThreads = 256, kMatvecMinBlocks = 2;
constexpr int kQuantThreads = 512, kQuantMinBlocks = 1;

struct MatvecParams {
    PlanarView w;                 // quantized weights
    const uint8_t* wf = nullptr;  // float weights, rows of row_bytes
    int64_t row_bytes = 0;
    int K = 0, M = 0, n = 0, ldy = 0;
    const float* x = nullptr;
    const float* bias = nullptr;
    float* y = nullptr;
    int norm = 0;  // NormKind
    const float* nw = nullptr;
    const float* nb = nullptr;
    float eps = 0.0f;
    int ep = 0;  // Epilogue
    int tasks = 0;
};

// Sums of two values over the block; every thread gets both.
__device__ __forceinline__ float2 block_sum2(float a, float b, float2* red) {
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
    a = warp_sum(a);
    b = warp_sum(b);
    __syncthreads();  // red may still be read from the previous call
    if (lane == 0) red[warp] = make_float2(a, b);
    __syncthreads();
    const float2 v = lane < nw ? red[lane] : make_float2(0.0f, 0.0f);
    return make_float2(warp_sum(v.x), warp_sum(v.y));
}

// The activation row's norm as y = (x - mean) * inv * w (+ b): mean and inv
// from one pass over x (sums of x - x[0] and of its square, so a large mean
// does not cancel). The loads of a pass are issued together, several per thread.
struct NormStats {
    float mean = 0.0f, inv = 1.0f;
};

// mean and inv from the block's sums of x - x0 and of its square (tot).
__device__ __forceinline__ NormStats stats_from_sums(int kind, int K, float eps, float x0, float2 tot) {
    NormStats st;
    const float m1 = tot.x / static_cast<float>(K);
    if (kind == static_cast<int>(NormKind::layer)) {
        st.mean = x0 + m1;
        st.inv = 1.0f / sqrtf(fmaxf(tot.y / static_cast<float>(K) - m1 * m1, 0.0f) + eps);
    } else {
        st.inv = 1.0f / sqrtf(tot.y / static_cast<float>(K) + eps);
    }
    return st;
}

__device__ NormStats row_stats(const float* x, int K, int kind, float eps, float2* red) {
    if (kind == static_cast<int>(NormKind::none)) return NormStats{};
    const float x0 = kind == static_cast<int>(NormKind::layer) ? x[0] : 0.0f;
    float s1 = 0.0f, s2 = 0.0f;
    if (K % 4 == 0) {
        const float4* x4 = reinterpret_cast<const float4*>(x);
#pragma unroll 4
        for (int c = threadIdx.x; c < K / 4; c += blockDim.x) {
            const float4 v = x4[c];
            const float a = v.x - x0, b = v.y - x0, d = v.z - x0, e = v.w - x0;
            s1 += (a + b) + (d + e);
            s2 += (a * a + b * b) + (d * d + e * e);
        }
    } else {
        for (int k = threadIdx.x; k < K; k += blockDim.x) {
            const float a = x[k] - x0;
            s1 += a;
            s2 += a * a;
        }
    }
    return stats_from_sums(kind, K, eps, x0, block_sum2(s1, s2, red));
}

// The norm's weights and bias where staging reads them: shared memory
// (norm_into_smem) or global. Passed on their own rather than as fields of a
// MatvecParams copy: pointers in a copy of the kernel's parameters were
// compiled as global addresses (a shared one there faulted).
struct NormVecs {
    const float* w = nullptr;
    const float* b = nullptr;
};

// Elements k..k+3 of the row, normalized.
__device__ __forceinline__ float4 normed4(const MatvecParams& p, const NormVecs& nv, float4 v, int k, const NormStats& st) {
    if (p.norm == static_cast<int>(NormKind::none)) return v;
    const float4 w = *reinterpret_cast<const float4*>(nv.w + k);
    float4 b = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (p.norm == static_cast<int>(NormKind::layer) && nv.b) b = *reinterpret_cast<const float4*>(nv.b + k);
    return make_float4((v.x - st.mean) * st.inv * w.x + b.x, (v.y - st.mean) * st.inv * w.y + b.y,
                       (v.z - st.mean) * st.inv * w.z + b.z, (v.w - st.mean) * st.inv * w.w + b.w);
}
__device__ __forceinline__ float normed1(const MatvecParams& p, const NormVecs& nv, float v, int k, const NormStats& st) {
    if (p.norm == static_cast<int>(NormKind::none)) return v;
    const float b = p.norm == static_cast<int>(NormKind::layer) && nv.b ? nv.b[k] : 0.0f;
    return (v - st.mean) * st.inv * nv.w[k] + b;
}

// Where unit b (32 elements) of a row's staged activations goes when a lane
// reads kGroup consecutive units of a weight row at a time: unit s of every
// group in one run, so that lanes reading their groups' unit s read 32-byte
// steps apart (as with kGroup = 1) rather than 32 * kGroup (bank conflicts).
template <int kGroup>
__device__ __forceinline__ int unit_slot(int b, int nblk) {
    return kGroup == 1 ? b : (b % kGroup) * (nblk / kGroup) + b / kGroup;
}

// Token t's activations as 8-bit codes per 32 elements (K % 32 == 0): each
// thread takes 4 elements at a time, the 8 threads of a 32-element block find
// its scale together (quant::Q8_0 arithmetic: d = amax / 127, q = round(x / d)),
// and threads 0 and 4 of the block store the code sums of its two halves.
// Units are stored at unit_slot<kGroup>.
template <int kGroup>
__device__ __forceinline__ void quantize4(const MatvecParams& p, int t, int c, bool in, float4 v, int8_t* xq, int* xs,
                                          float* xd) {
    const int lane = threadIdx.x % kWarp, nblk = p.K / 32;
    float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
    for (int o = 4; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float d = amax / 127.0f;
    const float id = d > 0.0f ? 1.0f / d : 0.0f;
    const int q0 = __float2int_rn(v.x * id), q1 = __float2int_rn(v.y * id);
    const int q2 = __float2int_rn(v.z * id), q3 = __float2int_rn(v.w * id);
    int s = q0 + q1 + q2 + q3;
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    if (!in) return;
    const int b = unit_slot<kGroup>(c / 8, nblk);
    // (kGroup 1: c itself, spelled out: the general index, equal, compiled to
    // other code, which spilled more registers in the Q8_0 and Q3_K kernels)
    reinterpret_cast<int*>(xq + t * p.K)[kGroup == 1 ? c : 8 * b + c % 8] =
        (q0 & 0xFF) | ((q1 & 0xFF) << 8) | ((q2 & 0xFF) << 16) | (static_cast<int>(q3 & 0xFF) << 24);
    if (lane % 8 == 0) xd[t * nblk + b] = d;
    if (lane % 4 == 0) xs[(t * nblk + b) * 2 + (lane % 8) / 4] = s;
}

// float4s of the row a thread holds in registers when staging in one pass
constexpr int kHeld = 8;

// The statistics of a row held in registers (v, kHeld float4s per thread,
// padded with x0), summed relative to x0 as row_stats does.
__device__ __forceinline__ NormStats held_stats(const MatvecParams& p, const float4 (&v)[kHeld], float x0, float2* red) {
    if (p.norm == static_cast<int>(NormKind::none)) return NormStats{};
    float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
    for (int i = 0; i < kHeld; ++i) {
        const float a = v[i].x - x0, b = v[i].y - x0, d = v[i].z - x0, e = v[i].w - x0;
        s1 += (a + b) + (d + e);
        s2 += (a * a + b * b) + (d * d + e * e);
    }
    return stats_from_sums(p.norm, p.K, p.eps, x0, block_sum2(s1, s2, red));
}


// Row xt (K % 4 == 0, K / 4 <= kHeld * blockDim.x) into registers, padded with
// its first element for LayerNorm (which then adds nothing), and its statistics.
__device__ __forceinline__ NormStats held_row(const MatvecParams& p, const float* xt, float4 (&v)[kHeld], float2* red) {
    const float4* x4 = reinterpret_cast<const float4*>(xt);
    const int n4 = p.K / 4;
    const float x0 = p.norm == static_cast<int>(NormKind::layer) ? xt[0] : 0.0f;
#pragma unroll
    for (int i = 0; i < kHeld; ++i) {
        const int c = threadIdx.x + i * blockDim.x;
        v[i] = c < n4 ? x4[c] : make_float4(x0, x0, x0, x0);
    }
    return held_stats(p, v, x0, red);
}

template <int kGroup>
__device__ void stage_q8(const MatvecParams& p, const NormVecs& nv, int t, int8_t* xq, int* xs, float* xd, float2* red) {
    const float* xt = p.x + static_cast<int64_t>(t) * p.K;
    const float4* x4 = reinterpret_cast<const float4*>(xt);
    const int n4 = p.K / 4;
    // warp-uniform trip counts (the shuffles need the whole warp); the 8 lanes
    // of a block are all in range or all out (K / 4 is a multiple of 8)
    const int base0 = threadIdx.x - threadIdx.x % kWarp;
    if (n4 <= kHeld * static_cast<int>(blockDim.x)) {
        // one pass over x: held in registers while the statistics are summed
        float4 v[kHeld];
        const NormStats st = held_row(p, xt, v, red);
#pragma unroll
        for (int i = 0; i < kHeld; ++i) {
            if (base0 + i * static_cast<int>(blockDim.x) >= n4) break;
            const int c = threadIdx.x + i * blockDim.x;
            const bool in = c < n4;
            quantize4<kGroup>(p, t, c, in, in ? normed4(p, nv, v[i], 4 * c, st) : make_float4(0.0f, 0.0f, 0.0f, 0.0f), xq, xs, xd);
        }
        return;
    }
    const NormStats st = row_stats(xt, p.K, p.norm, p.eps, red);
    for (int base = base0; base < n4; base += blockDim.x) {
        const int c = base + threadIdx.x % kWarp;
        const bool in = c < n4;
        quantize4<kGroup>(p, t, c, in, in ? normed4(p, nv, x4[c], 4 * c, st) : make_float4(0.0f, 0.0f, 0.0f, 0.0f), xq, xs, xd);
    }
}

// Token t's activations as f32, normalized.
__device__ void stage_f32(const MatvecParams& p, const NormVecs& nv, int t, float* xf, float2* red) {
    const float* xt = p.x + static_cast<int64_t>(t) * p.K;
    float* dst = xf + static_cast<int64_t>(t) * p.K;
    const int n4 = p.K / 4;
    if (p.K % 4 == 0 && n4 <= kHeld * static_cast<int>(blockDim.x)) {
        float4 v[kHeld];
        const NormStats st = held_row(p, xt, v, red);
#pragma unroll
        for (int i = 0; i < kHeld; ++i) {
            const int c = threadIdx.x + i * blockDim.x;
            if (c < n4) reinterpret_cast<float4*>(dst)[c] = normed4(p, nv, v[i], 4 * c, st);
        }
        return;
    }
    const NormStats st = row_stats(xt, p.K, p.norm, p.eps, red);
    if (p.K % 4 == 0) {
        const float4* x4 = reinterpret_cast<const float4*>(xt);
#pragma unroll 4
        for (int c = threadIdx.x; c < n4; c += blockDim.x)
            reinterpret_cast<float4*>(dst)[c] = normed4(p, nv, x4[c], 4 * c, st);
    } else {
        for (int k = threadIdx.x; k < p.K; k += blockDim.x) dst[k] = normed1(p, nv, xt[k], k, st);
    }
}

// A unit decoded for dot products: unpack_codes where the format has one
// (formats.cuh, FmtDefaults), else unpack.
template <class F, class = void>
struct HasUnpackCodes : std::false_type {};
template <class F>
struct HasUnpackCodes<F, std::void_t<decltype(&F::unpack_codes)>> : std::true_type {};
template <class F>
__device__ __forceinline__ void unpack_for_dot(const typename F::Raw& r, int sub, Unit& un) {
    if constexpr (HasUnpackCodes<F>::value) {
        F::unpack_codes(r, sub, un);
    } else {
        static_assert(F::kZero == 0 && !F::kUnsignedCodes, "these describe unpack_codes");
        F::unpack(r, sub, un);
    }
}

// How matvec_quant reads a format: kGroup consecutive units of a block per
// load (units that share code or scale bytes: Q4_K and Q5_K pairs share their
// 32 bytes of nibbles, Q6_K's four units of a 128-element half share 96 bytes),
// kInFlight groups per row and lane. A lane then loads the shared bytes once,
// and with the same registers holds more units in flight (the K-quant matvecs
// were latency-bound with two). unpack's u is the unit within its block, u %
// kGroup == s (s known at compile time in the unrolled loops).
template <class F>
struct QuantRead {
    // Q8_0 (32 bytes of codes a unit): 3, which leaves it without spilled
    // registers (4 spilled ~100 bytes: matmul chain 1417 -> 1262 us); 16-byte
    // units: 4 (6 measured slower, 930 -> 961)
    static constexpr int kGroup = 1, kInFlight = F::kBits <= 16 ? 4 : F::kBits <= 32 ? 3 : 2;
    static constexpr bool kPipe = false;  // matvec_quant_pipe: measured no faster (matvec.cu)
    using Raw = typename F::Raw;
    __device__ static Raw load(const PlanarView& w, int64_t row, int group) { return load_unit<F>(w, row, group); }
    __device__ static void unpack(const Raw& r, int, int u, Unit& un) { unpack_for_dot<F>(r, u, un); }
};
// Q4_K and Q5_K: a unit's Raw already holds its pair's codes. Measured
// (tools/matvec_bench.cu, H200, the 128 matmuls of a Phi-3-mini token): Q4_K
// 1304 -> 1275 us with two pairs in flight (one: 1282); Q5_K 1650 -> 1523 with
// one (two spilled registers: 1744); then with scale_min_k4 a word at a time
// Q4_K 1178, Q5_K 1420.
template <class F, int kLoads, int kG = 2>
struct QuantReadGroups {  // kG units whose Raw is one and the same
    static constexpr int kGroup = kG, kInFlight = kLoads;
    static constexpr bool kPipe = kLoads % 2 == 0;  // matvec_quant_pipe (Q4_K: chain 1177 -> 1037 us)
    using Raw = typename F::Raw;
    __device__ static Raw load(const PlanarView& w, int64_t row, int group) { return load_unit<F>(w, row, kG * group); }
    __device__ static void unpack(const Raw& r, int, int u, Unit& un) { unpack_for_dot<F>(r, u, un); }
};
template <>
struct QuantRead<FmtQ4_K> : QuantReadGroups<FmtQ4_K, 2> {};
template <>
struct QuantRead<FmtQ5_K> : QuantReadGroups<FmtQ5_K, 1> {};
// Q3_K: a unit's Raw holds its half-block's codes and high bits and every
// scale, so four units share one load (it had loaded 78 bytes for each unit).
template <>
struct QuantRead<FmtQ3_K> : QuantReadGroups<FmtQ3_K, 1, 4> {};
// Q2_K: units 4k..4k+3 of a block are the four 2-bit planes of the same 32
// bytes of codes, so they share one load (each unit had loaded those bytes on
// its own), with their four pairs of scale bytes and the block's d and dmin.
// H100, the 128 matmuls of a Phi-3-mini token: 1154 -> 977 us (one load in
// flight instead of two: 1006).
template <>
struct QuantRead<FmtQ2_K> {
    static constexpr int kGroup = 4, kInFlight = 2;
    static constexpr bool kPipe = false;
    struct Raw {
        uint4 a, b;
        uint32_t sc[2];  // units 4k..4k+3: two bytes (scale | min << 4, one per half) each
        uint32_t dd;
    };
    __device__ static Raw load(const PlanarView& w, int64_t row, int group) {
        const int64_t b = row * w.nb + group / 2;
        const int k = group % 2;
        const uint8_t* q = w.bits + b * FmtQ2_K::kBits + 32 * k;
        const uint8_t* rest = w.rest + b * FmtQ2_K::kRest;  // (4-byte aligned: runs of 20)
        return {ld_u4(q), ld_u4(q + 16), {ld_u32(rest + 8 * k), ld_u32(rest + 8 * k + 4)}, ld_u32(rest + 16)};
    }
    __device__ static void unpack(const Raw& r, int s, int u, Unit& un) {
        // FmtQ2_K::load's bytes for unit u (u % 4 == s): the same codes, scale pair u
        const FmtQ2_K::Raw one{r.a, r.b, static_cast<uint16_t>(r.sc[s / 2] >> (16 * (s % 2))), r.dd};
        unpack_for_dot<FmtQ2_K>(one, u, un);
    }
};
// Q6_K: 1643 -> 1486 us.
template <>
struct QuantRead<FmtQ6_K> {
    static constexpr int kGroup = 4, kInFlight = 1;
    static constexpr bool kPipe = false;
    // units 4k..4k+3 of a block: ql[64k ..+64], qh[32k ..+32], their 4 scales, d
    struct Raw {
        uint4 l[4], h[2];
        uint16_t sc[4];
        uint16_t d;
    };
    __device__ static Raw load(const PlanarView& w, int64_t row, int group) {
        const int64_t b = row * w.nb + group / 2;
        const int k = group % 2;
        const uint8_t* bits = w.bits + b * FmtQ6_K::kBits;
        const uint8_t* rest = w.rest + b * FmtQ6_K::kRest;  // (2-byte aligned)
        const uint8_t* ql = bits + 64 * k;
        const uint8_t* qh = bits + 128 + 32 * k;
        Raw r;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            r.l[i] = ld_u4(ql + 16 * i);
            r.sc[i] = ld_u16(rest + 8 * k + 2 * i);
        }
        r.h[0] = ld_u4(qh);
        r.h[1] = ld_u4(qh + 16);
        r.d = ld_u16(rest + 16);
        return r;
    }
    __device__ static void unpack(const Raw& r, int s, int u, Unit& un) {
        // FmtQ6_K::load's bytes for unit u: ql + 32 (u % 2), qh, scale u
        const FmtQ6_K::Raw one{r.l[2 * (s % 2)], r.l[2 * (s % 2) + 1], r.h[0], r.h[1], r.sc[s], r.d};
        unpack_for_dot<FmtQ6_K>(one, u, un);
    }
};

// acc plus the dot of a unit (from unpack_for_dot) with token t's 8-bit
// activations staged at slot uu (scales xd, code sums per half xs): exact
// integer sums, then the unit's scales and offsets.
template <class F>
__device__ __forceinline__ float acc_unit_q8(float acc, const Unit& un, const int8_t* xq, const int* xs,
                                             const float* xd, int K, int nblk, int t, int uu) {
    const int4* a = reinterpret_cast<const int4*>(xq + t * K + uu * 32);
    const int4 a0 = a[0], a1 = a[1];
    const auto dot4 = [](int w, int x, int c) { return F::kUnsignedCodes ? dp4a_us(w, x, c) : __dp4a(w, x, c); };
    int s0 = dot4(un.q[0], a0.x, 0);
    s0 = dot4(un.q[1], a0.y, s0);
    s0 = dot4(un.q[2], a0.z, s0);
    s0 = dot4(un.q[3], a0.w, s0);
    int s1 = dot4(un.q[4], a1.x, 0);
    s1 = dot4(un.q[5], a1.y, s1);
    s1 = dot4(un.q[6], a1.z, s1);
    s1 = dot4(un.q[7], a1.w, s1);
    const int2 hs = reinterpret_cast<const int2*>(xs)[t * nblk + uu];
    if constexpr (F::kOneScale) {
        // one scale and offset for the unit: one product each
        const int sa = hs.x + hs.y;
        int s = s0 + s1;
        if constexpr (F::kZero != 0) s -= F::kZero * sa;
        float v = un.d[0] * static_cast<float>(s);
        if constexpr (F::kOffset) v += un.m[0] * static_cast<float>(sa);
        return acc + xd[t * nblk + uu] * v;
    } else {
        // a scale and offset per half (kZero subtracted per half: the same integers as signed codes give)
        if constexpr (F::kZero != 0) {
            s0 -= F::kZero * hs.x;
            s1 -= F::kZero * hs.y;
        }
        float v = un.d[0] * static_cast<float>(s0) + un.d[1] * static_cast<float>(s1);
        if constexpr (F::kOffset) {
            v = v + un.m[0] * static_cast<float>(hs.x);
            v = v + un.m[1] * static_cast<float>(hs.y);
        }
        return acc + xd[t * nblk + uu] * v;
    }
}

// acc plus the dot of 16 bytes of float weights (16 / sizeof(T) elements) with xv.
template <class T>
__device__ __forceinline__ float acc_vec(float acc, const uint4& raw, const float* xv) {
    constexpr int kVec = 16 / sizeof(T);
    float w[kVec];
    const uint8_t* rb = reinterpret_cast<const uint8_t*>(&raw);
#pragma unroll
    for (int e = 0; e < kVec; ++e) w[e] = FloatFmt<T>::get(rb, e);
    float s = 0.0f;
#pragma unroll
    for (int e = 0; e < kVec; e += 4) {
        const float4 x4 = *reinterpret_cast<const float4*>(xv + e);
        s += w[e] * x4.x + w[e + 1] * x4.y + w[e + 2] * x4.z + w[e + 3] * x4.w;
    }
    return acc + s;
}

// Shared memory of a matvec: the norm's weights (norm_into_smem), then the
// staged activations of n tokens.
// Floats of the norm's weights (and bias) in shared memory: none without a
// norm, or where K is no multiple of 4 (16-byte copies; staging then reads
// them from global memory).
__host__ __device__ inline int64_t norm_smem_floats(int norm, bool has_bias, int64_t K) {
    return norm == static_cast<int>(NormKind::none) || K % 4 != 0 ? 0 : K * (has_bias ? 2 : 1);
}
size_t norm_bytes(const MatmulJob& j) {
    return sizeof(float) * norm_smem_floats(static_cast<int>(j.norm.kind), j.norm.b != nullptr, j.W.ne0);
}
size_t staged_bytes(const MatmulJob& j) {
    const DType type = j.W.type;
    const int64_t K = j.W.ne0;
    const bool is_float = type == DType::F32 || type == DType::F16 || type == DType::BF16;
    return norm_bytes(j) +
           (is_float ? static_cast<size_t>(j.n) * K * sizeof(float) : static_cast<size_t>(j.n) * (K + K / 32 * 12));
}

MatvecParams matvec_params(const MatmulJob& j) {
    MatvecParams p;
    p.K = static_cast<int>(j.W.ne0);
    p.M = static_cast<int>(j.W.ne1);
    p.n = j.n;
    p.x = j.x;
    p.y = j.y;
    p.bias = j.bias;
    p.norm = static_cast<int>(j.norm.kind);
    p.nw = j.norm.w;
    p.nb = j.norm.b;
    p.eps = j.norm.eps;
    p.ep = static_cast<int>(j.ep);
    p.ldy = j.ep == Epilogue::swiglu ? p.M / 2 : p.M;
    p.tasks = j.ep == Epilogue::swiglu ? p.M / 2 : (p.M + 1) / 2;
    return p;
}

constexpr size_t kSmemLimit = 200 * 1024;

// False when smem is more than a matvec may take; else lets kernel have it.
template <class Kernel>
bool allow_smem(Kernel kernel, size_t smem) {
    if (smem > kSmemLimit) return false;
    if (smem > 40 * 1024)  // (the static shared memory counts against the default 48 KB too)
        PHI_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    return true;
}

// Whether token t is past the launch's tokens. A kMaxTok = 1 build has
// exactly one, and testing n there left a branch between the two rows' dot
// products (and loaded the activations twice): the Q4_0 matmul chain was 11%
// slower with it (docs/CUDA.md).
template <int kMaxTok>
__device__ __forceinline__ bool past_tokens(const MatvecParams& p, int t) {
    return kMaxTok > 1 && t >= p.n;
}

// The rows of task `task`: two consecutive rows, or gate row o and up row o + M/2.
__device__ __forceinline__ void task_rows(const MatvecParams& p, int task, int& r0, int& r1, bool& has1) {
    if (p.ep == static_cast<int>(Epilogue::swiglu)) {
        r0 = task;
        r1 = task + p.M / 2;
        has1 = true;
    } else {
        r0 = 2 * task;
        has1 = r0 + 1 < p.M;
        r1 = has1 ? r0 + 1 : r0;
    }
}

// What a task's epilogue reads besides its sums: the bias of its rows
// (constant: loadable before the PDL wait) and, for Epilogue::add, the values
// of y it adds to (token `lane`'s). Loaded when the task starts, so that these
// round trips to memory overlap its dot products instead of following them.
struct TaskIn {
    float b[2] = {0.0f, 0.0f};
    float y[2] = {0.0f, 0.0f};
};
__device__ __forceinline__ void load_bias(const MatvecParams& p, int task, TaskIn& in) {
    if (!p.bias) return;
    int r0, r1;
    bool has1;
    task_rows(p, task, r0, r1, has1);
    in.b[0] = __ldg(p.bias + r0);
    in.b[1] = __ldg(p.bias + r1);
}
// (after the PDL wait: earlier kernels write y)
__device__ __forceinline__ void load_added(const MatvecParams& p, int task, TaskIn& in) {
    const int lane = threadIdx.x % kWarp;
    if (p.ep != static_cast<int>(Epilogue::add) || lane >= p.n) return;
    int r0, r1;
    bool has1;
    task_rows(p, task, r0, r1, has1);
    const float* y = p.y + static_cast<int64_t>(lane) * p.ldy;
    in.y[0] = y[r0];
    in.y[1] = y[r1];
}

// The outputs of task `task` for token t = lane (v0, v1: its rows' sums).
__device__ __forceinline__ void write_out(const MatvecParams& p, int task, int t, float v0, float v1, const TaskIn& in) {
    int r0, r1;
    bool has1;
    task_rows(p, task, r0, r1, has1);
    float* y = p.y + static_cast<int64_t>(t) * p.ldy;
    v0 += in.b[0];
    v1 += in.b[1];
    switch (p.ep) {
        case static_cast<int>(Epilogue::swiglu): y[task] = silu(v0) * v1; return;
        case static_cast<int>(Epilogue::add):
            y[r0] = in.y[0] + v0;
            if (has1) y[r1] = in.y[1] + v1;
            return;
        case static_cast<int>(Epilogue::gelu):
            y[r0] = gelu_tanh(v0);
            if (has1) y[r1] = gelu_tanh(v1);
            return;
        default:
            y[r0] = v0;
            if (has1) y[r1] = v1;
    }
}

// The norm's weights (and LayerNorm's bias) into shared memory at dst, copies
// issued before the PDL wait: they never change, and read after the row's
// statistics they would cost one more round trip to memory after the wait.
// Returns where staging reads them (there, once cp_async_wait and a barrier
// have passed: staging has one before it normalizes).
__device__ __forceinline__ NormVecs norm_into_smem(const MatvecParams& p, float* dst) {
    if (norm_smem_floats(p.norm, p.nb != nullptr, p.K) == 0) return {p.nw, p.nb};
    for (int c = threadIdx.x; c < p.K / 4; c += blockDim.x) {
        cp_async16(dst + 4 * c, p.nw + 4 * c);
        if (p.nb) cp_async16(dst + p.K + 4 * c, p.nb + 4 * c);
    }
    cp_async_commit();
    return {dst, p.nb ? dst + p.K : nullptr};
}
__device__ __forceinline__ int norm_smem_floats(const MatvecParams& p) {
    return static_cast<int>(norm_smem_floats(p.norm, p.nb != nullptr, p.K));
}

// L2 prefetch of this warp's first task's weight bytes (runs before pdl_wait).
__device__ __forceinline__ void prefetch_rows(const uint8_t* a, const uint8_t* b, int64_t bytes) {
    for (int64_t o = static_cast<int64_t>(threadIdx.x % kWarp) * 128; o < bytes; o += kWarp * 128) {
        prefetch_l2(a + o);
        prefetch_l2(b + o);
    }
}

} // namespace
} // namespace phi::cuda
