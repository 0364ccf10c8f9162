// Decode matmuls: y = epilogue(norm(x) . W^T + bias) for up to
// kMatvecMaxTokens tokens, in one kernel per matmul.
//
// Each CTA first stages the activations in shared memory (normalized when the
// block's input norm is fused here; for quantized weights also rounded to
// 8 bits per 32 elements, as llama.cpp and our CPU decode do), then its warps
// stream weight rows: a warp owns two rows (for SwiGLU, a gate row and its up
// row), each lane a strided set of 32-element units, so a warp's loads of a
// row are contiguous. Quantized units are dotted with dp4a against the 8-bit
// activations; float weights with f32 FMAs. Weights of a CTA's first rows are
// prefetched into L2 before it waits for the kernel before it (PDL).
#include <algorithm>
#include <type_traits>

#include "backend/cuda/attention_tile.cuh"
#include "backend/cuda/formats.cuh"
#include "backend/cuda/kernels.h"

namespace phi::cuda {
namespace {

// 256 threads and at most 128 registers each, so two CTAs fit an SM whatever
// the format: Q8_0 and the K-quants took up to 165 registers, one CTA per SM,
// and ran up to 30% slower (tools/matvec_bench.cu)
constexpr int kMatvecThreads = 256, kMatvecMinBlocks = 2;

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
    // kAttnR > 0 (decode qkv): the CTA that completes a KV head's q, k and v
    // rows runs that head's attention (attend_completed_heads)
    AttnParams attn;
    int* head_rows = nullptr;  // per KV head, rows written so far in this launch (zero between launches)
    int attn_warps = 0;
};

__device__ __forceinline__ float gelu_tanh(float v) {
    // 0.5 v (1 + tanh(u)) = v * sigmoid(2u): no cancellation for v < 0
    const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
    return v / (1.0f + expf(-2.0f * u));
}
__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

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

__device__ NormStats row_stats(const float* x, int K, int kind, float eps, float2* red) {
    NormStats st;
    if (kind == static_cast<int>(NormKind::none)) return st;
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
    const float2 t = block_sum2(s1, s2, red);
    const float m1 = t.x / static_cast<float>(K);
    if (kind == static_cast<int>(NormKind::layer)) {
        st.mean = x0 + m1;
        st.inv = 1.0f / sqrtf(fmaxf(t.y / static_cast<float>(K) - m1 * m1, 0.0f) + eps);
    } else {
        st.inv = 1.0f / sqrtf(t.y / static_cast<float>(K) + eps);
    }
    return st;
}

// Elements k..k+3 of the row, normalized.
// The norm's weights and bias where staging reads them: shared memory
// (norm_into_smem) or global. Passed on their own rather than as fields of a
// MatvecParams copy: pointers in a copy of the kernel's parameters were
// compiled as global addresses (a shared one there faulted).
struct NormVecs {
    const float* w = nullptr;
    const float* b = nullptr;
};

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

// Token t's activations as 8-bit codes per 32 elements (K % 32 == 0): each
// thread takes 4 elements at a time, the 8 threads of a 32-element block find
// its scale together (quant::Q8_0 arithmetic: d = amax / 127, q = round(x / d)),
// and threads 0 and 4 of the block store the code sums of its two halves.
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
    reinterpret_cast<int*>(xq + t * p.K)[c] =
        (q0 & 0xFF) | ((q1 & 0xFF) << 8) | ((q2 & 0xFF) << 16) | (static_cast<int>(q3 & 0xFF) << 24);
    const int b = c / 8;
    if (lane % 8 == 0) xd[t * nblk + b] = d;
    if (lane % 4 == 0) xs[(t * nblk + b) * 2 + (lane % 8) / 4] = s;
}

// float4s of the row a thread holds in registers when staging in one pass
constexpr int kHeld = 8;

// The statistics of a row held in registers (v, kHeld float4s per thread,
// padded with x0), summed relative to x0 as row_stats does.
__device__ __forceinline__ NormStats held_stats(const MatvecParams& p, const float4 (&v)[kHeld], float x0, float2* red) {
    NormStats st;
    if (p.norm == static_cast<int>(NormKind::none)) return st;
    float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
    for (int i = 0; i < kHeld; ++i) {
        const float a = v[i].x - x0, b = v[i].y - x0, d = v[i].z - x0, e = v[i].w - x0;
        s1 += (a + b) + (d + e);
        s2 += (a * a + b * b) + (d * d + e * e);
    }
    const float2 tot = block_sum2(s1, s2, red);
    const float m1 = tot.x / static_cast<float>(p.K);
    if (p.norm == static_cast<int>(NormKind::layer)) {
        st.mean = x0 + m1;
        st.inv = 1.0f / sqrtf(fmaxf(tot.y / static_cast<float>(p.K) - m1 * m1, 0.0f) + p.eps);
    } else {
        st.inv = 1.0f / sqrtf(tot.y / static_cast<float>(p.K) + p.eps);
    }
    return st;
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
            quantize4(p, t, c, in, in ? normed4(p, nv, v[i], 4 * c, st) : make_float4(0.0f, 0.0f, 0.0f, 0.0f), xq, xs, xd);
        }
        return;
    }
    const NormStats st = row_stats(xt, p.K, p.norm, p.eps, red);
    for (int base = base0; base < n4; base += blockDim.x) {
        const int c = base + threadIdx.x % kWarp;
        const bool in = c < n4;
        quantize4(p, t, c, in, in ? normed4(p, nv, x4[c], 4 * c, st) : make_float4(0.0f, 0.0f, 0.0f, 0.0f), xq, xs, xd);
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

// A unit decoded for dot products (codes without kZero where the format has one).
template <class F>
__device__ __forceinline__ void unpack_for_dot(const typename F::Raw& r, int sub, Unit& un) {
    if constexpr (F::kZero != 0) {
        F::unpack_codes(r, sub, un);
    } else {
        F::unpack(r, sub, un);
    }
}

// acc plus the dot of a unit (from unpack_for_dot) with token t's 8-bit
// activations of unit uu (scales xd, code sums per half xs): exact integer
// sums, then the unit's scales and offsets.
template <class F>
__device__ __forceinline__ float acc_unit_q8(float acc, const Unit& un, const int8_t* xq, const int* xs,
                                             const float* xd, int K, int nblk, int t, int uu) {
    const int4* a = reinterpret_cast<const int4*>(xq + t * K + uu * 32);
    const int4 a0 = a[0], a1 = a[1];
    int s0 = __dp4a(un.q[0], a0.x, 0);
    s0 = __dp4a(un.q[1], a0.y, s0);
    s0 = __dp4a(un.q[2], a0.z, s0);
    s0 = __dp4a(un.q[3], a0.w, s0);
    int s1 = __dp4a(un.q[4], a1.x, 0);
    s1 = __dp4a(un.q[5], a1.y, s1);
    s1 = __dp4a(un.q[6], a1.z, s1);
    s1 = __dp4a(un.q[7], a1.w, s1);
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
        return acc + xd[t * nblk + uu] * (un.d[0] * static_cast<float>(s0) + un.d[1] * static_cast<float>(s1) +
                                          un.m[0] * static_cast<float>(hs.x) + un.m[1] * static_cast<float>(hs.y));
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
size_t norm_bytes(const MatmulJob& j) {
    return j.norm.kind == NormKind::none || j.W.ne0 % 4 != 0 ? 0 : j.W.ne0 * sizeof(float) * (j.norm.b ? 2 : 1);
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
    if (p.norm == static_cast<int>(NormKind::none) || p.K % 4 != 0) return {p.nw, p.nb};
    for (int c = threadIdx.x; c < p.K / 4; c += blockDim.x) {
        cp_async16(dst + 4 * c, p.nw + 4 * c);
        if (p.nb) cp_async16(dst + p.K + 4 * c, p.nb + 4 * c);
    }
    cp_async_commit();
    return {dst, p.nb ? dst + p.K : nullptr};
}
__device__ __forceinline__ int norm_smem_floats(const MatvecParams& p) {
    return p.norm == static_cast<int>(NormKind::none) || p.K % 4 != 0 ? 0 : p.K * (p.nb ? 2 : 1);
}

// L2 prefetch of this warp's first task's weight bytes (runs before pdl_wait).
__device__ __forceinline__ void prefetch_rows(const uint8_t* a, const uint8_t* b, int64_t bytes) {
    for (int64_t o = static_cast<int64_t>(threadIdx.x % kWarp) * 128; o < bytes; o += kWarp * 128) {
        prefetch_l2(a + o);
        prefetch_l2(b + o);
    }
}

// ---- Decode qkv with its attention
//
// A one-token step's qkv projection writes [q heads | k heads | v heads]; the
// attention of KV head g needs only its rows (its group's q heads, its k and
// v). Each CTA counts the rows it wrote per KV head; once all its stores are
// out (fence, barrier), it adds the counts to the launch's per-head totals,
// and the CTA whose addition completes a head runs that head's attention
// (the input step included) with its first attn_warps warps, in the shared
// memory staging used. No attention launch, no kernel boundary between the
// projection and attention, and a head starts as soon as its rows are done.

constexpr int kMaxKvHeads = 64;

__device__ __forceinline__ int kv_head_of_row(const AttnParams& a, int r) {
    const int nq = a.n_head * a.hd, nk = a.n_head_kv * a.hd;
    if (r < nq) return r / a.hd / (a.n_head / a.n_head_kv);
    return (r < nq + nk ? r - nq : r - nq - nk) / a.hd;
}
// The rows of task `task` this CTA wrote, counted per KV head (lane 0 of the writer).
__device__ __forceinline__ void count_rows(const MatvecParams& p, int task, int* rows) {
    int r0, r1;
    bool has1;
    task_rows(p, task, r0, r1, has1);
    atomicAdd(&rows[kv_head_of_row(p.attn, r0)], 1);
    if (has1) atomicAdd(&rows[kv_head_of_row(p.attn, r1)], 1);
}
// Every thread of the CTA, after its last store of the projection.
template <int kAttnR>
__device__ void attend_completed_heads(const MatvecParams& p, uint8_t* smem, int* rows, int* done) {
    const AttnParams& a = p.attn;
    __threadfence();  // this thread's q/k/v stores, before the counts that publish them
    __syncthreads();
    const int g = threadIdx.x;
    if (g < a.n_head_kv) {
        const int c = rows[g];
        bool last = false;
        if (c > 0) {
            const int total = (a.n_head / a.n_head_kv + 2) * a.hd;
            const int before = atomicAdd(&p.head_rows[g], c);
            last = before + c == total;
            if (last) p.head_rows[g] = 0;  // every row is counted: ready for the next launch
        }
        done[g] = last;
    }
    __syncthreads();
    const int warp = threadIdx.x / kWarp;
    for (int h = 0; h < a.n_head_kv; ++h) {
        if (!done[h]) continue;
        __threadfence();  // the other CTAs' rows of head h, counted before ours completed it
        if (warp < p.attn_warps) attention_tile<__half, 8, true, kAttnR, true>(a, smem, h, 0, warp, p.attn_warps);
        __syncthreads();  // (its shared memory, before the next head's)
    }
}

// Quantized weights: a warp per task. kMaxTok: tokens the accumulators are
// sized for (1: decode's own build, lean in registers).
template <class F, int kMaxTok, int kAttnR = 0>
__global__ void __launch_bounds__(kMatvecThreads, kMatvecMinBlocks) matvec_quant(MatvecParams p) {
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ float2 red[32];
    __shared__ int head_rows[kAttnR ? kMaxKvHeads : 1], head_done[kAttnR ? kMaxKvHeads : 1];
    if constexpr (kAttnR > 0)
        if (threadIdx.x < kMaxKvHeads) head_rows[threadIdx.x] = 0;  // (staging's barriers order it)
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, nw = blockDim.x / kWarp;
    const int nblk = p.K / 32;
    const int units = static_cast<int>(p.w.nb) * F::kUnits;  // per row (= 32-element blocks)
    constexpr int U = F::kBits <= 32 ? 4 : 2;  // units in flight per row and lane
    int task = blockIdx.x * nw + warp;
    int r[2];
    bool has1;
    // Weights never change: this warp's first units go into registers (and the
    // rest of its first rows into L2), its rows' bias and the norm's weights
    // load, all before waiting for the kernel before.
    typename F::Raw raw[U][2];
    TaskIn in;
    bool preloaded = task < p.tasks;
    if (task < p.tasks) {
        task_rows(p, task, r[0], r[1], has1);
#pragma unroll
        for (int j = 0; j < U; ++j) {
            const int uu = lane + j * kWarp;
            if (uu < units) {
                raw[j][0] = load_unit<F>(p.w, r[0], uu);
                raw[j][1] = load_unit<F>(p.w, r[1], uu);
            }
        }
        load_bias(p, task, in);
        prefetch_rows(p.w.bits + r[0] * p.w.nb * F::kBits, p.w.bits + r[1] * p.w.nb * F::kBits, p.w.nb * F::kBits);
    }
    const NormVecs nv = norm_into_smem(p, reinterpret_cast<float*>(smem));
    pdl_wait();
    pdl_launch_dependents();
    if (task < p.tasks) load_added(p, task, in);

    uint8_t* xs0 = smem + norm_smem_floats(p) * sizeof(float);
    int8_t* xq = reinterpret_cast<int8_t*>(xs0);                 // [n][K] 8-bit codes
    int* xs = reinterpret_cast<int*>(xs0 + p.n * p.K);           // [n][nblk][2] their sums per 16
    float* xd = reinterpret_cast<float*>(xs + 2 * p.n * nblk);   // [n][nblk] scales
    cp_async_wait<0>();
    for (int t = 0; t < p.n; ++t) stage_q8(p, nv, t, xq, xs, xd, red);
    __syncthreads();

    for (bool first = true; task < p.tasks; task += gridDim.x * nw, first = false) {
        task_rows(p, task, r[0], r[1], has1);
        if (!first) {
            in = TaskIn{};
            load_bias(p, task, in);
            load_added(p, task, in);
        }
        float acc[2][kMaxTok];
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int t = 0; t < kMaxTok; ++t) acc[i][t] = 0.0f;
        for (int u0 = lane; u0 < units; u0 += kWarp * U) {
            if (!preloaded) {
#pragma unroll
                for (int j = 0; j < U; ++j) {
                    const int uu = u0 + j * kWarp;
                    if (uu < units) {
                        raw[j][0] = load_unit<F>(p.w, r[0], uu);
                        raw[j][1] = load_unit<F>(p.w, r[1], uu);
                    }
                }
            }
            preloaded = false;
#pragma unroll
            for (int j = 0; j < U; ++j) {
                const int uu = u0 + j * kWarp;
                if (uu >= units) break;
#pragma unroll
                for (int i = 0; i < 2; ++i) {
                    Unit un;
                    unpack_for_dot<F>(raw[j][i], uu % F::kUnits, un);
#pragma unroll
                    for (int t = 0; t < kMaxTok; ++t) {
                        if (t >= p.n) break;
                        acc[i][t] = acc_unit_q8<F>(acc[i][t], un, xq, xs, xd, p.K, nblk, t, uu);
                    }
                }
            }
        }
        preloaded = false;  // (a lane past the row's units loaded nothing)
#pragma unroll
        for (int t = 0; t < kMaxTok; ++t) {
            if (t >= p.n) break;
            const float v0 = warp_sum(acc[0][t]), v1 = warp_sum(acc[1][t]);
            if (lane == t) write_out(p, task, t, v0, v1, in);
        }
        if constexpr (kAttnR > 0)
            if (lane == 0) count_rows(p, task, head_rows);
    }
    if constexpr (kAttnR > 0) attend_completed_heads<kAttnR>(p, smem, head_rows, head_done);
}

// ---- Float weights: even streams of steps
//
// A task's rows (two rows, or a gate row and its up row) are cut into *steps*
// of 32 16-byte vectors (single elements where rows are not 16-byte
// multiples), one per lane. CTA c takes the tasks [tb, te) of an even split
// of all tasks over the grid, and its warps split the CTA's steps evenly,
// each warp a contiguous run that may begin or end inside a task, so every SM
// streams the same number of bytes however few rows the matrix has (the
// 3072-row matrices of Phi-3-mini left part of the GPU idle as a warp per
// task). A warp keeps kDepth steps' loads in flight (a step is consumed, then
// its registers load the step kDepth ahead); its first kDepth steps are
// loaded before the PDL wait. A task split between warps is summed in shared
// memory, in warp order, by the warp that holds its first segment: the sums
// depend on the grid, which does not depend on the number of tokens.
// Quantized weights stay with matvec_quant: for them this kernel measured
// slower (its per-step bookkeeping costs more than the balance gains when
// each 32-unit step is dense arithmetic).

constexpr int kMaxWarps = 16;

template <class T, int kVec>
struct FloatSteps {
    using Raw = typename std::conditional<kVec == 1, float, uint4>::type;
    __device__ static int units(const MatvecParams& p) { return p.K / kVec; }
    __device__ static Raw load(const MatvecParams& p, int row, int u) {
        const uint8_t* r = p.wf + static_cast<int64_t>(row) * p.row_bytes;
        if constexpr (kVec == 1) {
            return FloatFmt<T>::get(r, u);
        } else {
            return ld_u4(r + static_cast<int64_t>(u) * 16);
        }
    }
    template <int kMaxTok>
    __device__ static void accumulate(const MatvecParams& p, const float* xf, const Raw& r, int u, float (&acc)[kMaxTok]) {
#pragma unroll
        for (int t = 0; t < kMaxTok; ++t) {
            if (t >= p.n) break;
            if constexpr (kVec == 1) {
                acc[t] += r * xf[t * p.K + u];
            } else {
                acc[t] = acc_vec<T>(acc[t], r, xf + t * p.K + u * kVec);
            }
        }
    }
};

// This CTA's first task, and this warp's steps [sb, se) counted from it.
struct StepSplit {
    int tb = 0, sb = 0, se = 0, n = 0;  // n: the CTA's steps
};
__device__ __forceinline__ int split_at(int n, int i, int parts) {
    return static_cast<int>(static_cast<int64_t>(n) * i / parts);
}
__device__ __forceinline__ StepSplit split_steps(int tasks, int G, int warp, int nw) {
    StepSplit s;
    s.tb = split_at(tasks, blockIdx.x, gridDim.x);
    s.n = (split_at(tasks, blockIdx.x + 1, gridDim.x) - s.tb) * G;
    s.sb = split_at(s.n, warp, nw);
    s.se = split_at(s.n, warp + 1, nw);
    return s;
}

template <class S, int kMaxTok, int kDepth, int kAttnR = 0>
__global__ void __launch_bounds__(kMatvecThreads, kMatvecMinBlocks) matvec_steps(MatvecParams p) {
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ float2 red[32];
    __shared__ float part[kMaxWarps][2][2][kMaxTok];  // [warp][first, last task][row][token]: split tasks
    __shared__ int head_rows[kAttnR ? kMaxKvHeads : 1], head_done[kAttnR ? kMaxKvHeads : 1];
    if constexpr (kAttnR > 0)
        if (threadIdx.x < kMaxKvHeads) head_rows[threadIdx.x] = 0;  // (staging's barriers order it)
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, nw = blockDim.x / kWarp;
    const int units = S::units(p), G = (units + kWarp - 1) / kWarp;
    const StepSplit sp = split_steps(p.tasks, G, warp, nw);
    const int nsteps = sp.se - sp.sb;
    typename S::Raw raw[kDepth][2];
    int lt = sp.sb / G, lg = sp.sb % G;  // the next step to load: task (from tb), step in it
    auto load_step = [&](typename S::Raw(&r)[2]) {
        const int u = lg * kWarp + lane;
        if (u < units) {
            int r0, r1;
            bool has1;
            task_rows(p, sp.tb + lt, r0, r1, has1);
            r[0] = S::load(p, r0, u);
            r[1] = S::load(p, r1, u);
        }
        if (++lg == G) {
            lg = 0;
            ++lt;
        }
    };
    // weights never change: the first steps, the first task's bias and the
    // norm's weights load before waiting for the kernel before
#pragma unroll
    for (int j = 0; j < kDepth; ++j)
        if (j < nsteps) load_step(raw[j]);
    const int first_task = sp.sb / G;
    int ct = first_task, cg = sp.sb % G;  // the step being consumed
    TaskIn in;  // of the task this warp writes (whole, or as the one that combines it)
    if (nsteps > 0 && cg == 0) load_bias(p, sp.tb + ct, in);
    const NormVecs nv = norm_into_smem(p, reinterpret_cast<float*>(smem));
    pdl_wait();
    pdl_launch_dependents();
    if (nsteps > 0 && cg == 0) load_added(p, sp.tb + ct, in);
    float* xf = reinterpret_cast<float*>(smem) + norm_smem_floats(p);  // [n][K]
    cp_async_wait<0>();
    for (int t = 0; t < p.n; ++t) stage_f32(p, nv, t, xf, red);
    __syncthreads();

    bool from_start = cg == 0;  // the current segment began at its task's first step
    float acc[2][kMaxTok];
#pragma unroll
    for (int t = 0; t < kMaxTok; ++t) acc[0][t] = acc[1][t] = 0.0f;
    for (int s0 = 0; s0 < nsteps; s0 += kDepth) {
#pragma unroll
        for (int j = 0; j < kDepth; ++j) {
            const int s = s0 + j;
            if (s >= nsteps) break;
            if (cg == 0 && s > 0) {
                in = TaskIn{};
                load_bias(p, sp.tb + ct, in);
                load_added(p, sp.tb + ct, in);
            }
            const int u = cg * kWarp + lane;
            if (u < units) {
                S::template accumulate<kMaxTok>(p, xf, raw[j][0], u, acc[0]);
                S::template accumulate<kMaxTok>(p, xf, raw[j][1], u, acc[1]);
            }
            if (s + kDepth < nsteps) load_step(raw[j]);
            if (cg == G - 1 || s == nsteps - 1) {
                // a segment ends: a whole task is stored, part of one kept for the combine
                const bool whole = from_start && cg == G - 1;
                const int slot = ct == first_task ? 0 : 1;
#pragma unroll
                for (int t = 0; t < kMaxTok; ++t) {
                    if (t >= p.n) break;
                    const float v0 = warp_sum(acc[0][t]), v1 = warp_sum(acc[1][t]);
                    acc[0][t] = acc[1][t] = 0.0f;
                    if (lane != t) continue;
                    if (whole) {
                        write_out(p, sp.tb + ct, t, v0, v1, in);
                        if constexpr (kAttnR > 0)
                            if (t == 0) count_rows(p, sp.tb + ct, head_rows);
                    } else {
                        part[warp][slot][0][t] = v0;
                        part[warp][slot][1][t] = v1;
                    }
                }
                from_start = true;
            }
            if (++cg == G) {
                cg = 0;
                ++ct;
            }
        }
    }
    __syncthreads();
    // a task split between warps: the warp with its first segment adds the others in order
    const int last_task = (sp.se - 1) / G, end = (last_task + 1) * G;
    if (nsteps > 0 && max(sp.sb, last_task * G) == last_task * G && sp.se != end && lane < p.n) {
        const int t = lane;
        const int slot = last_task == first_task ? 0 : 1;
        float v0 = part[warp][slot][0][t], v1 = part[warp][slot][1][t];
        for (int w = warp + 1; w < nw; ++w) {
            const int wb = split_at(sp.n, w, nw);
            if (wb >= end) break;
            if (wb == split_at(sp.n, w + 1, nw)) continue;  // a warp without steps
            v0 += part[w][0][0][t];
            v1 += part[w][0][1][t];
        }
        write_out(p, sp.tb + last_task, t, v0, v1, in);
        if constexpr (kAttnR > 0)
            if (t == 0) count_rows(p, sp.tb + last_task, head_rows);
    }
    if constexpr (kAttnR > 0) attend_completed_heads<kAttnR>(p, smem, head_rows, head_done);
}

constexpr size_t kSmemLimit = 200 * 1024;

// matvec_quant: one wave (as many CTAs as fit, each stages the activations once), or fewer
template <class Kernel>
bool run_wave(Kernel kernel, const MatvecParams& p, size_t smem, const Launch& l, int sm_count,
              const MatvecConfig& cfg) {
    if (smem > kSmemLimit) return false;
    if (smem > 40 * 1024)  // (the static shared memory counts against the default 48 KB too)
        PHI_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    const int warps = std::max(1, std::min(kMaxWarps, cfg.warps));
    int fit = 0;
    PHI_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, kernel, warps * kWarp, smem));
    const int ctas = std::max(1, std::min(ceil_div(p.tasks, warps), sm_count * std::max(1, std::min(fit, cfg.ctas_per_sm))));
    launch(kernel, dim3(ctas), dim3(warps * kWarp), smem, l, p);
    return true;
}

// matvec_steps: a grid that does not depend on the number of tokens (nor on
// what fits at once), so a task's sums do not either
template <class Kernel>
bool run_fixed(Kernel kernel, const MatvecParams& p, size_t smem, const Launch& l, int sm_count,
               const MatvecConfig& cfg) {
    if (smem > kSmemLimit) return false;
    if (smem > 40 * 1024)
        PHI_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    const int warps = std::max(1, std::min(kMaxWarps, cfg.warps));
    const int ctas = std::max(1, std::min(p.tasks, sm_count * std::max(1, std::min(kMatvecMinBlocks, cfg.ctas_per_sm))));
    launch(kernel, dim3(ctas), dim3(warps * kWarp), smem, l, p);
    return true;
}

template <class F>
void set_planar(MatvecParams& p, const Tensor& W) {
    p.w.nb = W.ne0 / F::kBlock;
    p.w.bits = static_cast<const uint8_t*>(W.data);
    p.w.rest = p.w.bits + W.ne1 * p.w.nb * F::kBits;
}

template <class F>
bool run_quant(MatvecParams p, const MatmulJob& j, const Launch& l, int sm, const MatvecConfig& cfg) {
    set_planar<F>(p, j.W);
    if (p.n == 1) return run_wave(matvec_quant<F, 1>, p, staged_bytes(j), l, sm, cfg);
    return run_wave(matvec_quant<F, kMatvecMaxTokens>, p, staged_bytes(j), l, sm, cfg);
}

template <class T>
bool run_float(MatvecParams p, const MatmulJob& j, const Launch& l, int sm, const MatvecConfig& cfg) {
    p.wf = static_cast<const uint8_t*>(j.W.data);
    p.row_bytes = static_cast<int64_t>(j.W.row_bytes());
    const size_t smem = staged_bytes(j);
    constexpr int kVec = 16 / sizeof(T);
    if (p.row_bytes % 16 == 0 && p.K % kVec == 0) {
        using S = FloatSteps<T, kVec>;
        if (p.n == 1) return run_fixed(matvec_steps<S, 1, 4>, p, smem, l, sm, cfg);
        return run_fixed(matvec_steps<S, kMatvecMaxTokens, 4>, p, smem, l, sm, cfg);
    }
    return run_fixed(matvec_steps<FloatSteps<T, 1>, kMatvecMaxTokens, 4>, p, smem, l, sm, cfg);
}

// The decode qkv projection with its heads' attention (kAttnR rows per tile).
// Only kAttnR = 1 (no GQA) is built: the eight-row tiles of GQA need more
// registers than the projection leaves (hundreds of bytes of spills), so GQA
// models keep the attention kernel.
template <int kAttnR>
bool run_with_attention(MatvecParams p, const MatmulJob& j, size_t smem, const Launch& l, int sm,
                        const MatvecConfig& cfg) {
    switch (j.W.type) {
        case DType::F32:
        case DType::F16:
        case DType::BF16: {
            p.wf = static_cast<const uint8_t*>(j.W.data);
            p.row_bytes = static_cast<int64_t>(j.W.row_bytes());
            const int vec = j.W.type == DType::F32 ? 4 : 8;  // elements per 16 bytes
            if (p.row_bytes % 16 != 0 || p.K % vec != 0) return false;
            if (j.W.type == DType::F32) return run_fixed(matvec_steps<FloatSteps<float, 4>, 1, 4, kAttnR>, p, smem, l, sm, cfg);
            if (j.W.type == DType::F16) return run_fixed(matvec_steps<FloatSteps<__half, 8>, 1, 4, kAttnR>, p, smem, l, sm, cfg);
            return run_fixed(matvec_steps<FloatSteps<__nv_bfloat16, 8>, 1, 4, kAttnR>, p, smem, l, sm, cfg);
        }
#define PHI_QUANT_CASE(T, F)  \
    case DType::T:            \
        set_planar<F>(p, j.W); \
        return run_wave(matvec_quant<F, 1, kAttnR>, p, smem, l, sm, cfg);
        PHI_QUANT_CASE(Q4_0, FmtQ4_0)
        PHI_QUANT_CASE(Q4_1, FmtQ4_1)
        PHI_QUANT_CASE(Q5_0, FmtQ5_0)
        PHI_QUANT_CASE(Q5_1, FmtQ5_1)
        PHI_QUANT_CASE(Q8_0, FmtQ8_0)
        PHI_QUANT_CASE(IQ4_NL, FmtIQ4_NL)
        PHI_QUANT_CASE(Q2_K, FmtQ2_K)
        PHI_QUANT_CASE(Q3_K, FmtQ3_K)
        PHI_QUANT_CASE(Q4_K, FmtQ4_K)
        PHI_QUANT_CASE(Q5_K, FmtQ5_K)
        PHI_QUANT_CASE(Q6_K, FmtQ6_K)
        PHI_QUANT_CASE(IQ4_XS, FmtIQ4_XS)
#undef PHI_QUANT_CASE
        default: return false;
    }
}

} // namespace

bool matvec_attention(const MatmulJob& j, const FusedInput& in, const KVCache& cache, const AttentionParams& a,
                      const AttentionPlan& plan, int* head_rows, const int* pos0, float* out, const Launch& l,
                      int sm_count, const MatvecConfig& cfg) {
    const int hd = a.head_dim, group = a.n_head_kv > 0 ? a.n_head / a.n_head_kv : 0;
    const int64_t width = static_cast<int64_t>(a.n_head + 2 * a.n_head_kv) * hd;
    if (j.n != 1 || j.ep != Epilogue::store || !matvec_takes(j) || cache.type != DType::F16 || hd % 8 != 0 ||
        hd > kMaxHead || group != 1 || a.n_head_kv > kMaxKvHeads || plan.splits != 1 ||
        j.W.ne1 != width || in.rows.q != j.y || in.rows.k != j.y + static_cast<int64_t>(a.n_head) * hd ||
        in.rows.v != in.rows.k + static_cast<int64_t>(a.n_head_kv) * hd || in.cache.k != cache.k)
        return false;
    MatvecParams p = matvec_params(j);
    p.attn = attn_params(j.y, width, 0, 1, cache, a, a.n_head_kv, 1, nullptr, nullptr, pos0, out, &in);
    p.head_rows = head_rows;
    p.attn_warps = std::max(1, std::min(plan.warps, 4));
    const size_t smem = std::max(staged_bytes(j), p.attn_warps * attention_smem<__half>(hd));
    return run_with_attention<1>(p, j, smem, l, sm_count, cfg);
}

bool aligned16(const void* a, const void* b, const void* c) {
    return ((reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b) | reinterpret_cast<uintptr_t>(c)) & 15) == 0;
}

bool matvec_takes(const MatmulJob& j) {
    return j.n <= kMatvecMaxTokens && staged_bytes(j) <= kSmemLimit && aligned16(j.x, j.norm.w, j.norm.b);
}

bool matvec(const MatmulJob& j, const Launch& l, int sm_count, const MatvecConfig& cfg) {
    if (!matvec_takes(j)) return false;
    const MatvecParams p = matvec_params(j);
    const int sm = sm_count;
    const MatvecConfig& c = cfg;
    switch (j.W.type) {
        case DType::F32: return run_float<float>(p, j, l, sm, c);
        case DType::F16: return run_float<__half>(p, j, l, sm, c);
        case DType::BF16: return run_float<__nv_bfloat16>(p, j, l, sm, c);
        case DType::Q4_0: return run_quant<FmtQ4_0>(p, j, l, sm, c);
        case DType::Q4_1: return run_quant<FmtQ4_1>(p, j, l, sm, c);
        case DType::Q5_0: return run_quant<FmtQ5_0>(p, j, l, sm, c);
        case DType::Q5_1: return run_quant<FmtQ5_1>(p, j, l, sm, c);
        case DType::Q8_0: return run_quant<FmtQ8_0>(p, j, l, sm, c);
        case DType::IQ4_NL: return run_quant<FmtIQ4_NL>(p, j, l, sm, c);
        case DType::Q2_K: return run_quant<FmtQ2_K>(p, j, l, sm, c);
        case DType::Q3_K: return run_quant<FmtQ3_K>(p, j, l, sm, c);
        case DType::Q4_K: return run_quant<FmtQ4_K>(p, j, l, sm, c);
        case DType::Q5_K: return run_quant<FmtQ5_K>(p, j, l, sm, c);
        case DType::Q6_K: return run_quant<FmtQ6_K>(p, j, l, sm, c);
        case DType::IQ4_XS: return run_quant<FmtIQ4_XS>(p, j, l, sm, c);
        default: fail(ErrorKind::unsupported, "no CUDA kernel for tensor type ", dtype_name(j.W.type));
    }
}

} // namespace phi::cuda
