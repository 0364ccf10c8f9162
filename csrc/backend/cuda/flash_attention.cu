// Prefill attention on tensor cores: one fused flash-attention kernel
// (causal, GQA, sliding window) over an f16, Q8_0 or Q4_0 KV cache, with no
// n x n score matrix in memory.
//
// A CTA takes 64 query tokens of one head (four warps of 16 rows each) and
// walks the keys its rows can see in blocks of 64: each block's key and value
// rows are copied into shared memory (cp.async, the next block in flight while
// this one is used). Per block a warp computes its 16 x 64 scores S = Q K^T
// with mma.sync, masks them, updates its online softmax (in log2 units: the
// queries carry scale * log2(e)), and adds P V to its 16 x head_dim output,
// P entering the second MMA straight from the registers the first one
// produced. The tiles with the most keys start first.
//
// A Q8_0 or Q4_0 cache (kv_formats.cuh): each block of 64 keys comes in raw
// (cp.async in pieces where the rows divide into them, the next block in
// flight) and is dequantized into one f16 stage of key and value rows, which
// the MMAs then read as they read an f16 cache.
//
// Precision: the queries and the probabilities meet the MMA as f16 (the keys
// and values are f16 already, or rounded to f16 from their blocks); scores,
// softmax and sums are f32. That is the
// rounding llama.cpp's flash attention has, not f32 arithmetic: the backend
// takes this kernel for batches of tokens only, never for exact or
// row-invariant work.
#include <cmath>

#include "backend/cuda/kernels.h"
#include "backend/cuda/kv_formats.cuh"
#include "backend/cuda/mma.cuh"

namespace phi::cuda {
namespace {

constexpr int kFlashRows = 64;  // query tokens per CTA
constexpr int kFlashKeys = 64;  // keys per block
constexpr int kFlashThreads = 128;

struct FlashParams {
    const float* q = nullptr;
    int64_t q_stride = 0;
    const void* kc = nullptr;
    const void* vc = nullptr;
    float* out = nullptr;
    int n_q = 0, n_head = 0, n_head_kv = 0;
    float q_scale = 1.0f;  // softmax scale * log2(e)
    int window = 0;
    const int* pos0 = nullptr;
    int pos = 0;  // token t sits at *pos0 + pos + t
};

// f16: two stages of key and value rows; quantized: one, and two stages of raw rows
template <KvFormat F>
constexpr size_t flash_smem(int hd) {
    const size_t rows = size_t{2} * kFlashKeys * (hd + 8) * sizeof(__half);  // a stage of key and value rows
    return kv_quantized(F) ? rows + size_t{2} * 2 * kFlashKeys * kv_stage_row(F, hd) : 2 * rows;
}

template <int HD, KvFormat F>
__global__ void __launch_bounds__(kFlashThreads) flash_attention_kernel(FlashParams p) {
    constexpr int LD = HD + 8;  // padded rows: 16-byte aligned, an odd number of 16-byte units (ldmatrix conflict-free)
    constexpr int KSTEPS = HD / 16, NTILES = HD / 8;
    constexpr bool kQuant = kv_quantized(F);
    constexpr int kStages = kQuant ? 1 : 2;  // of f16 rows
    extern __shared__ __align__(16) uint8_t smem[];
    __half* ks = reinterpret_cast<__half*>(smem);  // [kStages][kFlashKeys][LD]
    __half* vs = ks + kStages * kFlashKeys * LD;   // [kStages][kFlashKeys][LD]
    uint8_t* raw = reinterpret_cast<uint8_t*>(vs + kStages * kFlashKeys * LD);  // quantized: [2][2][kFlashKeys][SROW]
    pdl_wait();
    pdl_launch_dependents();
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, g = lane / 4, t4 = lane % 4;
    const int tile = gridDim.x - 1 - blockIdx.x;  // the longest key ranges first
    const int h = blockIdx.y, kvh = h / (p.n_head / p.n_head_kv);
    const int pos_base = *p.pos0 + p.pos;
    const int q0 = tile * kFlashRows;
    // the CTA's keys [lo, hi); this warp's rows [w0, w1] and their keys [wlo, whi)
    const int hi = pos_base + min(p.n_q, q0 + kFlashRows);
    const int lo = p.window > 0 ? max(0, pos_base + q0 - p.window + 1) : 0;
    const int w0 = q0 + warp * 16, w1 = min(w0 + 15, p.n_q - 1);
    const bool has_rows = w0 < p.n_q;
    const int whi = pos_base + w1 + 1;
    const int wlo = p.window > 0 ? max(0, pos_base + w0 - p.window + 1) : 0;
    const int row_a = w0 + g, row_b = w0 + g + 8;  // this thread's two rows
    const int pos_a = pos_base + row_a, pos_b = pos_base + row_b;

    const int64_t kvw = static_cast<int64_t>(p.n_head_kv) * HD;
    const __half* K = static_cast<const __half*>(p.kc) + kvh * HD;
    const __half* V = static_cast<const __half*>(p.vc) + kvh * HD;
    const int kb0 = lo / kFlashKeys * kFlashKeys;
    const int n_blocks = (hi - kb0 + kFlashKeys - 1) / kFlashKeys;
    // a quantized cache: rows of n_head_kv slices of HD / 32 blocks, copied in pieces of qg bytes (0: read directly)
    constexpr int SLICE = kQuant ? static_cast<int>(kv_head_bytes(F, HD)) : 0, SROW = kv_stage_row(F, HD);
    const int64_t q_row = int64_t{p.n_head_kv} * SLICE;
    const int qg = kQuant ? kv_piece(q_row) : 0;
    const int q_mis = qg ? static_cast<int>(int64_t{kvh} * SLICE % qg) : 0;
    const uint8_t* Kq = static_cast<const uint8_t*>(p.kc) + int64_t{kvh} * SLICE;
    const uint8_t* Vq = static_cast<const uint8_t*>(p.vc) + int64_t{kvh} * SLICE;
    auto issue_quant = [&](int kb, int stage) {
        if constexpr (kQuant) {
            if (qg) {
                const int pieces = (q_mis + SLICE + qg - 1) / qg;
                for (int c = threadIdx.x; c < 2 * kFlashKeys * pieces; c += kFlashThreads) {
                    const int which = c / (kFlashKeys * pieces), j = c / pieces % kFlashKeys, piece = c % pieces;
                    const int key = kb + j;
                    if (key >= hi) continue;
                    cp_async_g(raw + ((stage * 2 + which) * kFlashKeys + j) * SROW + piece * qg,
                               (which ? Vq : Kq) + key * q_row - q_mis + piece * qg, qg);
                }
            }
        }
        cp_async_commit();
    };
    // the block's raw rows (stage) into the f16 rows, a 32-value block per warp step (rows past the last key: zeros)
    auto dequantize = [&](int kb, int stage) {
        if constexpr (kQuant) {
            // a half-warp per block (two values a lane: unit u = 2 pair + half, over K's then V's
            // blocks; pairs dealt to the warps in turn), kBatch pairs loaded before any is stored
            // (stores to shared memory would order each load after the one before)
            constexpr int NB = HD / 32, kPairs = kFlashKeys * NB, kWarps = kFlashThreads / kWarp, kBatch = 8;
            static_assert(kPairs % (kWarps * kBatch) == 0, "whole batches");
            const int half = lane / 16, i2 = lane % 16;
            for (int p0 = warp; p0 < kPairs; p0 += kWarps * kBatch) {
                float2 x[kBatch];
#pragma unroll
                for (int i = 0; i < kBatch; ++i) {
                    const int u = 2 * (p0 + i * kWarps) + half;
                    const int which = u / (kFlashKeys * NB), j = u / NB % kFlashKeys, b = u % NB, key = kb + j;
                    x[i] = make_float2(0.0f, 0.0f);
                    if (key < hi) {
                        const uint8_t* src = qg ? raw + ((stage * 2 + which) * kFlashKeys + j) * SROW + q_mis
                                                : (which ? Vq : Kq) + key * q_row;
                        x[i] = kv_load_pair<F>(src + b * kv_block_bytes(F), i2);
                    }
                }
#pragma unroll
                for (int i = 0; i < kBatch; ++i) {
                    const int u = 2 * (p0 + i * kWarps) + half;
                    const int which = u / (kFlashKeys * NB), j = u / NB % kFlashKeys, b = u % NB;
                    *reinterpret_cast<__half2*>((which ? vs : ks) + j * LD + b * kWarp + 2 * i2) =
                        __floats2half2_rn(x[i].x, x[i].y);
                }
            }
            __syncthreads();
        }
    };
    auto issue = [&](int kb, int stage) {
        if constexpr (kQuant) {
            issue_quant(kb, stage);
            return;
        }
        constexpr int kPieces = HD / 8;  // 16-byte pieces of a row
        __half* kd = ks + stage * kFlashKeys * LD;
        __half* vd = vs + stage * kFlashKeys * LD;
        for (int c = threadIdx.x; c < kFlashKeys * kPieces; c += kFlashThreads) {
            const int j = c / kPieces, d = (c % kPieces) * 8, key = kb + j;
            const bool in = key < hi;  // rows past the last key: zeros (a value row must not be NaN)
            const int64_t off = static_cast<int64_t>(in ? key : 0) * kvw + d;
            cp_async16(kd + j * LD + d, K + off, in ? 16 : 0);
            cp_async16(vd + j * LD + d, V + off, in ? 16 : 0);
        }
        cp_async_commit();
    };
    issue(kb0, 0);

    // the queries as A fragments, scaled, while the first block is in flight
    uint32_t qf[KSTEPS][4];
    {
        const float* qa = p.q + static_cast<int64_t>(min(row_a, p.n_q - 1)) * p.q_stride + h * HD;
        const float* qb = p.q + static_cast<int64_t>(min(row_b, p.n_q - 1)) * p.q_stride + h * HD;
        const float s = p.q_scale;
#pragma unroll
        for (int k = 0; k < KSTEPS; ++k) {
            const int c = k * 16 + 2 * t4;
            const float2 a0 = *reinterpret_cast<const float2*>(qa + c);
            const float2 a1 = *reinterpret_cast<const float2*>(qb + c);
            const float2 a2 = *reinterpret_cast<const float2*>(qa + c + 8);
            const float2 a3 = *reinterpret_cast<const float2*>(qb + c + 8);
            qf[k][0] = pack_half2(a0.x * s, a0.y * s);
            qf[k][1] = pack_half2(a1.x * s, a1.y * s);
            qf[k][2] = pack_half2(a2.x * s, a2.y * s);
            qf[k][3] = pack_half2(a3.x * s, a3.y * s);
        }
    }

    float o[NTILES][4];
#pragma unroll
    for (int n = 0; n < NTILES; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;  // l: this thread's share of the row sum
    const int mi = lane / 8, mr = lane % 8;  // ldmatrix: the matrix and row this lane addresses

    for (int b = 0; b < n_blocks; ++b) {
        const int kb = kb0 + b * kFlashKeys, stage = b & 1;
        if (b + 1 < n_blocks) {
            issue(kb + kFlashKeys, stage ^ 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        dequantize(kb, stage);
        if (has_rows && kb < whi && kb + kFlashKeys > wlo) {
            const __half* kt = ks + (kQuant ? 0 : stage) * kFlashKeys * LD;
            const __half* vt = vs + (kQuant ? 0 : stage) * kFlashKeys * LD;
            // S = Q K^T (16 x 64): one ldmatrix gives two key tiles' B fragments for a k-step
            float s[8][4];
#pragma unroll
            for (int j = 0; j < 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
            for (int k = 0; k < KSTEPS; ++k) {
#pragma unroll
                for (int j = 0; j < 8; j += 2) {
                    uint32_t bf[4];
                    ldmatrix_x4(bf, kt + ((j + (mi >> 1)) * 8 + mr) * LD + k * 16 + (mi & 1) * 8);
                    mma16816(s[j], qf[k], bf[0], bf[1]);
                    mma16816(s[j + 1], qf[k], bf[2], bf[3]);
                }
            }
            // causal and window masks, where the block reaches past a row's position or before its window
            const bool mask = kb + kFlashKeys > pos_base + w0 + 1 || (p.window > 0 && kb < pos_base + w1 - p.window + 1);
            if (mask) {
#pragma unroll
                for (int j = 0; j < 8; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int key = kb + j * 8 + 2 * t4 + (e & 1), pos = e < 2 ? pos_a : pos_b;
                        if (key > pos || (p.window > 0 && key <= pos - p.window)) s[j][e] = -INFINITY;
                    }
            }
            // online softmax: the rows' maxima over the quad of lanes that hold them
            float mx_a = m_a, mx_b = m_b;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                mx_a = fmaxf(mx_a, fmaxf(s[j][0], s[j][1]));
                mx_b = fmaxf(mx_b, fmaxf(s[j][2], s[j][3]));
            }
#pragma unroll
            for (int off = 1; off < 4; off <<= 1) {
                mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, off));
                mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, off));
            }
            // a row with no key yet keeps zeros (exp2(-inf) = 0, never -inf - -inf)
            const float base_a = mx_a == -INFINITY ? 0.0f : mx_a, base_b = mx_b == -INFINITY ? 0.0f : mx_b;
            const float corr_a = exp2f(m_a - base_a), corr_b = exp2f(m_b - base_b);
            m_a = mx_a;
            m_b = mx_b;
            l_a *= corr_a;
            l_b *= corr_b;
#pragma unroll
            for (int n = 0; n < NTILES; ++n) {
                o[n][0] *= corr_a;
                o[n][1] *= corr_a;
                o[n][2] *= corr_b;
                o[n][3] *= corr_b;
            }
            // P as the A fragments of the second product: key tiles 2kk and 2kk+1 make k-step kk
            uint32_t pf[4][4];
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const float p0 = exp2f(s[j][0] - base_a), p1 = exp2f(s[j][1] - base_a);
                const float p2 = exp2f(s[j][2] - base_b), p3 = exp2f(s[j][3] - base_b);
                l_a += p0 + p1;
                l_b += p2 + p3;
                pf[j / 2][(j & 1) * 2] = pack_half2(p0, p1);
                pf[j / 2][(j & 1) * 2 + 1] = pack_half2(p2, p3);
            }
            // O += P V: transposed ldmatrix of the value rows gives two head tiles' B fragments
#pragma unroll
            for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
                for (int n = 0; n < NTILES; n += 2) {
                    uint32_t bf[4];
                    ldmatrix_x4_trans(bf, vt + (kk * 16 + (mi & 1) * 8 + mr) * LD + n * 8 + (mi >> 1) * 8);
                    mma16816(o[n], pf[kk], bf[0], bf[1]);
                    mma16816(o[n + 1], pf[kk], bf[2], bf[3]);
                }
            }
        }
        __syncthreads();  // before the next issue overwrites this stage
    }

    if (!has_rows) return;
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
        l_a += __shfl_xor_sync(0xffffffffu, l_a, off);
        l_b += __shfl_xor_sync(0xffffffffu, l_b, off);
    }
    const float inv_a = l_a > 0.0f ? 1.0f / l_a : 0.0f, inv_b = l_b > 0.0f ? 1.0f / l_b : 0.0f;
    const int64_t ld_out = static_cast<int64_t>(p.n_head) * HD;
    float* oa = p.out + row_a * ld_out + h * HD + 2 * t4;
    float* ob = p.out + row_b * ld_out + h * HD + 2 * t4;
#pragma unroll
    for (int n = 0; n < NTILES; ++n) {
        if (row_a < p.n_q) *reinterpret_cast<float2*>(oa + n * 8) = make_float2(o[n][0] * inv_a, o[n][1] * inv_a);
        if (row_b < p.n_q) *reinterpret_cast<float2*>(ob + n * 8) = make_float2(o[n][2] * inv_b, o[n][3] * inv_b);
    }
}

template <int HD, KvFormat F>
void launch_flash(const FlashParams& p, const Launch& l) {
    const size_t smem = flash_smem<F>(HD);
    if (smem > 48 * 1024)
        PHI_CUDA_CHECK(cudaFuncSetAttribute(flash_attention_kernel<HD, F>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(smem)));
    const dim3 grid((p.n_q + kFlashRows - 1) / kFlashRows, p.n_head);
    launch(flash_attention_kernel<HD, F>, grid, dim3(kFlashThreads), smem, l, p);
}

// quantized caches: head sizes that are whole blocks
template <KvFormat F>
void launch_flash_quant(const FlashParams& p, int hd, const Launch& l) {
    switch (hd) {
        case 32: launch_flash<32, F>(p, l); break;
        case 64: launch_flash<64, F>(p, l); break;
        case 96: launch_flash<96, F>(p, l); break;
        default: launch_flash<128, F>(p, l); break;
    }
}

} // namespace

bool flash_attention_takes(int head_dim, DType cache_type, const float* q, int64_t q_stride, const float* out) {
    const bool hd_ok = head_dim % 16 == 0 && head_dim >= 16 && head_dim <= 128;  // (the instantiations below)
    const bool cache_ok =
        cache_type == DType::F16 || ((cache_type == DType::Q8_0 || cache_type == DType::Q4_0) && head_dim % 32 == 0);
    // float2 loads of the queries and stores of the output
    return hd_ok && cache_ok && q_stride % 2 == 0 && reinterpret_cast<uintptr_t>(q) % 8 == 0 &&
           reinterpret_cast<uintptr_t>(out) % 8 == 0;
}

void flash_attention(const float* q, int64_t q_stride, int t0, int n_q, const KVCache& cache, const AttentionParams& a,
                     const int* pos0, float* out, const Launch& l) {
    if (!flash_attention_takes(a.head_dim, cache.type, q, q_stride, out))
        fail(ErrorKind::unsupported, "flash attention: head_dim ", a.head_dim, ", cache ", dtype_name(cache.type));
    if (n_q <= 0) return;
    FlashParams p;
    p.q = q;
    p.q_stride = q_stride;
    p.kc = cache.k;
    p.vc = cache.v;
    p.out = out;
    p.n_q = n_q;
    p.n_head = a.n_head;
    p.n_head_kv = a.n_head_kv;
    p.q_scale = a.scale * 1.4426950408889634f;
    p.window = a.window;
    p.pos0 = pos0;
    p.pos = a.pos + t0;
    if (cache.type == DType::Q8_0) return launch_flash_quant<KvFormat::q8_0>(p, a.head_dim, l);
    if (cache.type == DType::Q4_0) return launch_flash_quant<KvFormat::q4_0>(p, a.head_dim, l);
    switch (a.head_dim) {
        case 16: launch_flash<16, KvFormat::f16>(p, l); break;
        case 32: launch_flash<32, KvFormat::f16>(p, l); break;
        case 48: launch_flash<48, KvFormat::f16>(p, l); break;
        case 64: launch_flash<64, KvFormat::f16>(p, l); break;
        case 80: launch_flash<80, KvFormat::f16>(p, l); break;
        case 96: launch_flash<96, KvFormat::f16>(p, l); break;
        case 112: launch_flash<112, KvFormat::f16>(p, l); break;
        default: launch_flash<128, KvFormat::f16>(p, l); break;
    }
}

} // namespace phi::cuda
