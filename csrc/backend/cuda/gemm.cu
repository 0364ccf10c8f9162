// Prefill matmuls on tensor cores: y[n, M] = x[n, K] . W^T with mma.sync
// m16n8k16 (f16 operands, f32 accumulation), plus the row-wise helpers of the
// prefill path (per-token scales, norm, SwiGLU).
//
// A CTA computes a 128-row x 64-token tile in k-steps of 64, double-buffered:
// the next step's tiles are in flight while the tensor cores work on this one.
//
// Precision: weights meet the MMA as f16 (exact for F16 and BF16 weights; for
// quantized ones the rounding is far below the quantization). Activations are
// converted once per matmul (convert_rows_kernel): scaled per token by a power
// of two that puts the row's largest magnitude near 2^14 (so no value
// overflows f16, whatever the row's range) and rounded to f16, as llama.cpp's
// cuBLAS path does for F16 weights. F32 weights split both operands into f16
// high and low parts (three MMAs), which makes the product as exact as f32
// arithmetic.
//
// Tiles move by cp.async where no conversion is needed (activations, F16
// weights); other weights are dequantized through registers, one 32-element
// unit per thread.
#include <algorithm>
#include <type_traits>

#include "backend/cuda/formats.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/mma.cuh"

namespace phi::cuda {
namespace {

constexpr int BM = 128, BN = kGemmTileTokens, BK = 64, LDS = BK + 8;  // LDS: padded row (144 bytes: conflict-free ldmatrix)

struct GemmParams {
    PlanarView w;
    const uint8_t* wf = nullptr;
    int64_t row_bytes = 0;
    int K = 0, M = 0, n = 0;
    int Kp = 0;                     // row length of the f16 activations (K rounded up to BK)
    int64_t ldy = 0;
    const __half* xh = nullptr;     // [n][Kp] activations as f16, scaled per token
    const __half* xl = nullptr;     // [n][Kp] their low parts (split only)
    const float* scale = nullptr;   // [n] per-token scales (powers of two)
    const float* bias = nullptr;
    float* y = nullptr;
    int ep = 0;
};

// A grouped GEMM's experts (by value: the tiles pick one on the GPU) and groups.
struct ExpertGemm {
    const uint8_t* base[kMoeMaxExperts] = {};
    ExpertGroups groups;
    int shift = 0;  // activation row of a pick: pick >> shift
};

// 8 values to 8 halves (and the low parts when split) as 16-byte stores.
template <bool kSplit>
__device__ __forceinline__ void store8(const float* v, __half* hi, __half* lo) {
    uint32_t h[4], l[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const __half2 hh = __floats2half2_rn(v[2 * j], v[2 * j + 1]);
        h[j] = *reinterpret_cast<const uint32_t*>(&hh);
        if constexpr (kSplit) l[j] = pack_half2(v[2 * j] - __low2float(hh), v[2 * j + 1] - __high2float(hh));
    }
    *reinterpret_cast<uint4*>(hi) = make_uint4(h[0], h[1], h[2], h[3]);
    if constexpr (kSplit) *reinterpret_cast<uint4*>(lo) = make_uint4(l[0], l[1], l[2], l[3]);
}

// ---- weight tile loaders: a BM x BK tile, all 256 threads taking part.
// Registers: load() the next step's raw data early, store() it into shared
// memory after the current step's MMAs. Async: issue() copies straight into
// shared memory.

// Quantized weights: thread t dequantizes unit 2 kt + t % 2 of row t / 2.
template <class F>
struct QuantA {
    static constexpr bool kSplit = false, kSplitX = false, kAsync = false;
    static constexpr int kStages = 2;
    // the weights at `base` (planar: every row's bits, then the rest): set by the
    // host for a plain GEMM, by the kernel for an expert's tile
    __host__ __device__ static void point_at(GemmParams& p, const uint8_t* base) {
        p.w.bits = base;
        p.w.rest = base + static_cast<int64_t>(p.M) * p.w.nb * F::kBits;
    }
    typename F::Raw raw;
    int unit = 0;
    bool valid = false;
    __device__ void load(const GemmParams& p, int m0, int kt) {
        const int row = m0 + threadIdx.x / 2;
        unit = 2 * kt + threadIdx.x % 2;
        valid = row < p.M && unit * 32 < p.K;
        if (valid) raw = load_unit<F>(p.w, row, unit);
    }
    __device__ void store(__half (*hi)[LDS], __half (*)[LDS]) const {
        __half* dst = &hi[threadIdx.x / 2][32 * (threadIdx.x % 2)];
        float v[32];
        if (valid) {
            Unit u;
            F::unpack(raw, unit % F::kUnits, u);
#pragma unroll
            for (int e = 0; e < 32; ++e) v[e] = unit_value(u, e);
        } else {
#pragma unroll
            for (int e = 0; e < 32; ++e) v[e] = 0.0f;
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) store8<false>(v + 8 * i, dst + 8 * i, nullptr);
    }
};

// BF16 and F32 weights (and F16 rows that are not 16-byte multiples): thread t
// converts 32 elements of row t / 2, zero past K; F32 is split in hi and lo.
template <class T, bool kExactX = false>
struct FloatA {
    static constexpr bool kSplit = std::is_same<T, float>::value, kSplitX = kSplit || kExactX, kAsync = false;
    static constexpr int kStages = 2;
    __host__ __device__ static void point_at(GemmParams& p, const uint8_t* base) { p.wf = base; }
    float v[32];
    __device__ void load(const GemmParams& p, int m0, int kt) {
        const int row = m0 + threadIdx.x / 2, k0 = kt * BK + 32 * (threadIdx.x % 2);
        const uint8_t* r = p.wf + static_cast<int64_t>(row) * p.row_bytes;
        if (row < p.M && k0 + 32 <= p.K && p.row_bytes % 16 == 0) {
            constexpr int per = 16 / sizeof(T);
#pragma unroll
            for (int c = 0; c < 32 / per; ++c) {
                const uint4 raw = ld_u4(r + (k0 + c * per) * sizeof(T));
                const uint8_t* b = reinterpret_cast<const uint8_t*>(&raw);
#pragma unroll
                for (int e = 0; e < per; ++e) v[c * per + e] = FloatFmt<T>::get(b, e);
            }
        } else {
#pragma unroll
            for (int e = 0; e < 32; ++e) v[e] = row < p.M && k0 + e < p.K ? FloatFmt<T>::get(r, k0 + e) : 0.0f;
        }
    }
    __device__ void store(__half (*hi)[LDS], __half (*lo)[LDS]) const {
        const int r = threadIdx.x / 2, c = 32 * (threadIdx.x % 2);
#pragma unroll
        for (int i = 0; i < 4; ++i) store8<kSplit>(v + 8 * i, &hi[r][c + 8 * i], kSplit ? &lo[r][c + 8 * i] : nullptr);
    }
};

// F16 weights with 16-byte rows: copied as they are (cp.async), 4 chunks per
// thread, kStages_ steps of tiles in shared memory (2: double-buffered).
template <bool kExactX = false, int kStages_ = 2>
struct F16AsyncA {
    static constexpr bool kSplit = false, kSplitX = kExactX, kAsync = true;
    static constexpr int kStages = kStages_;
    __host__ __device__ static void point_at(GemmParams& p, const uint8_t* base) { p.wf = base; }
    __device__ static void issue(const GemmParams& p, int m0, int kt, __half (*dst)[LDS]) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int c = threadIdx.x + 256 * i, r = c / 8, kc = c % 8, k = kt * BK + 8 * kc;
            const bool in = m0 + r < p.M && k < p.K;  // K % 8 == 0: a chunk is all in or all out
            const uint8_t* src = in ? p.wf + static_cast<int64_t>(m0 + r) * p.row_bytes + 2 * k : p.wf;
            cp_async16(&dst[r][8 * kc], src, in ? 16 : 0);
        }
    }
};

// The tokens of a CTA's tile: columns [n0, n0 + count) of the GEMM. A plain
// GEMM's column c is activation row c and output row c; a grouped one's
// (experts) is entry c of `ids`, a pick (2 token + j): output row ids[c],
// activation row ids[c] >> shift (the token for gate/up, the pick for down).
struct TileCols {
    int n0 = 0, count = 0;
    const int* ids = nullptr;
    int shift = 0;
    __device__ int out_row(int t) const { return ids ? ids[n0 + t] : n0 + t; }
    __device__ int x_row(int t) const { return ids ? ids[n0 + t] >> shift : n0 + t; }
};

// The activation rows a thread copies into every tile (tokens c / 8 for
// c = threadIdx.x + 256 i), -1 past the tile's count: read once per CTA.
struct BRows {
    int row[2];
    __device__ explicit BRows(const TileCols& tc) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int t = (threadIdx.x + 256 * i) / 8;
            row[i] = t < tc.count ? tc.x_row(t) : -1;
        }
    }
};

// Activation tile: BN tokens x BK of the f16 rows (zero for tokens past the tile).
__device__ __forceinline__ void issue_b(const GemmParams& p, const __half* x, const BRows& br, int kt,
                                        __half (*dst)[LDS]) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int c = threadIdx.x + 256 * i, t = c / 8, k = kt * BK + 8 * (c % 8);
        const bool in = br.row[i] >= 0;
        cp_async16(&dst[t][8 * (c % 8)], x + static_cast<int64_t>(in ? br.row[i] : 0) * p.Kp + k, in ? 16 : 0);
    }
}

template <class ALoader>
constexpr size_t smem_bytes() {  // kStages of weight and activation tiles (hi, and lo when split)
    return ALoader::kStages * sizeof(__half) * LDS * (BM * (ALoader::kSplit ? 2 : 1) + BN * (ALoader::kSplitX ? 2 : 1));
}

// One k-step (BK) of a warp's 32 x 32 tile: ldmatrix from the stage's tiles,
// then the MMAs (the low parts' too where split).
template <bool kSplit, bool kSplitX>
__device__ __forceinline__ void mma_k_step(const __half (*As)[LDS], const __half (*Al)[LDS], const __half (*Bh)[LDS],
                                           const __half (*Bl)[LDS], float (&acc)[2][4][4], int wm, int wn, int lane) {
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) {
        uint32_t af[2][4], alf[2][4], bh[4][2], bl[4][2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int r = 32 * wm + 16 * i + lane % 16, c = ks * 16 + (lane / 16) * 8;
            ldmatrix_x4(af[i], &As[r][c]);
            if constexpr (kSplit) ldmatrix_x4(alf[i], &Al[r][c]);
        }
#pragma unroll
        for (int jj = 0; jj < 2; ++jj) {
            const int mi = lane / 8;
            const int r = 32 * wn + 16 * jj + (mi / 2) * 8 + lane % 8, c = ks * 16 + (mi % 2) * 8;
            uint32_t t4[4];
            ldmatrix_x4(t4, &Bh[r][c]);
            bh[2 * jj][0] = t4[0];
            bh[2 * jj][1] = t4[1];
            bh[2 * jj + 1][0] = t4[2];
            bh[2 * jj + 1][1] = t4[3];
            if constexpr (kSplitX) {
                ldmatrix_x4(t4, &Bl[r][c]);
                bl[2 * jj][0] = t4[0];
                bl[2 * jj][1] = t4[1];
                bl[2 * jj + 1][0] = t4[2];
                bl[2 * jj + 1][1] = t4[3];
            }
        }
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                mma16816(acc[i][j], af[i], bh[j][0], bh[j][1]);
                if constexpr (kSplitX) mma16816(acc[i][j], af[i], bl[j][0], bl[j][1]);
                if constexpr (kSplit) mma16816(acc[i][j], alf[i], bh[j][0], bh[j][1]);
            }
    }
}

// One CTA's tile: rows [m0, m0 + BM) of W against the tile's tokens.
template <class ALoader>
__device__ __forceinline__ void gemm_tile(const GemmParams& p, int m0, const TileCols& tc) {
    constexpr bool kSplit = ALoader::kSplit, kSplitX = ALoader::kSplitX;
    extern __shared__ __align__(16) uint8_t smem[];
    using TileA = __half[BM][LDS];
    using TileB = __half[BN][LDS];
    constexpr int S = ALoader::kStages;
    TileA* As = reinterpret_cast<TileA*>(smem);  // [S]
    TileA* Al = As + S;                           // [S], split only
    TileB* Bh = reinterpret_cast<TileB*>(smem + S * sizeof(TileA) * (kSplit ? 2 : 1));
    TileB* Bl = Bh + S;                           // [S], kSplitX only

    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
    const int KT = (p.K + BK - 1) / BK;
    const BRows br(tc);

    ALoader a;
    auto issue = [&](int kt, int buf) {  // the async copies of step kt into buffer buf
        issue_b(p, p.xh, br, kt, Bh[buf]);
        if constexpr (kSplitX) issue_b(p, p.xl, br, kt, Bl[buf]);
        if constexpr (ALoader::kAsync) ALoader::issue(p, m0, kt, As[buf]);
        cp_async_commit();
    };

    const int wm = warp % 4, wn = warp / 4;  // warp tile: rows 32 wm.., tokens 32 wn..
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.0f;

    if constexpr (S == 2) {  // double-buffered: the next step's copies (and weights in registers) in flight
        issue(0, 0);
        if constexpr (!ALoader::kAsync) {
            a.load(p, m0, 0);
            a.store(As[0], kSplit ? Al[0] : nullptr);
        }
        cp_async_wait<0>();
        __syncthreads();
        for (int kt = 0; kt < KT; ++kt) {
            const int buf = kt % 2;
            if (kt + 1 < KT) {
                issue(kt + 1, buf ^ 1);
                if constexpr (!ALoader::kAsync) a.load(p, m0, kt + 1);
            }
            mma_k_step<kSplit, kSplitX>(As[buf], Al[buf], Bh[buf], Bl[buf], acc, wm, wn, lane);
            if constexpr (!ALoader::kAsync)
                if (kt + 1 < KT) a.store(As[buf ^ 1], kSplit ? Al[buf ^ 1] : nullptr);
            cp_async_wait<0>();
            __syncthreads();
        }
    } else {
        // S - 1 steps' copies in flight (cp.async loaders only): wait for step kt,
        // then refill the stage that step kt - 1 used, then its MMAs
        static_assert(ALoader::kAsync, "deeper pipelines take cp.async loaders");
#pragma unroll
        for (int st = 0; st < S - 1; ++st) {
            if (st < KT) issue(st, st);
            else cp_async_commit();  // (an empty group keeps the count)
        }
        for (int kt = 0; kt < KT; ++kt) {
            cp_async_wait<S - 2>();
            __syncthreads();
            const int next = kt + S - 1;
            if (next < KT) issue(next, next % S);
            else cp_async_commit();
            const int buf = kt % S;
            mma_k_step<kSplit, kSplitX>(As[buf], Al[buf], Bh[buf], Bl[buf], acc, wm, wn, lane);
        }
    }

    // c0, c1: row g, tokens 2(lane%4) + {0, 1}; c2, c3: row g + 8
    const int g = lane / 4, tq = 2 * (lane % 4);
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int c01 = 0; c01 < 2; ++c01) {
            const int t = 32 * wn + 8 * j + tq + c01;
            if (t >= tc.count) continue;
            const float unscale = 1.0f / p.scale[tc.x_row(t)];  // exact: a power of two
            float* yt = p.y + static_cast<int64_t>(tc.out_row(t)) * p.ldy;
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int m = m0 + 32 * wm + 16 * i + g + 8 * h;
                    if (m >= p.M) continue;
                    const float v = acc[i][j][2 * h + c01] * unscale + (p.bias ? p.bias[m] : 0.0f);
                    if (p.ep == static_cast<int>(Epilogue::add)) yt[m] += v;
                    else yt[m] = p.ep == static_cast<int>(Epilogue::gelu) ? gelu_tanh(v) : v;
                }
        }
}

template <class ALoader>
__global__ void __launch_bounds__(256) gemm_kernel(GemmParams p) {
    pdl_wait();
    pdl_launch_dependents();
    TileCols tc;
    tc.n0 = blockIdx.y * BN;
    tc.count = p.n - tc.n0;
    gemm_tile<ALoader>(p, blockIdx.x * BM, tc);
}

// Experts (a prompt's MoE matmuls): tile blockIdx.y of the groups that
// moe_group wrote, each expert's weights chosen by the tile on the GPU.
template <class ALoader>
__global__ void __launch_bounds__(256) gemm_experts_kernel(GemmParams p, ExpertGemm ex) {
    pdl_wait();
    pdl_launch_dependents();
    const int4 tile = ex.groups.tiles[blockIdx.y];  // expert, first entry, entries
    if (tile.z <= 0) return;
    ALoader::point_at(p, ex.base[tile.x]);
    TileCols tc;
    tc.n0 = tile.y;
    tc.count = tile.z;
    tc.ids = ex.groups.sorted;
    tc.shift = ex.shift;
    gemm_tile<ALoader>(p, blockIdx.x * BM, tc);
}

// The loader for W's type, given to fn as TypeTag<Loader>; p gets the
// weight fields that do not depend on which matrix of that type it is.
// kExactX: float weights meet the activations' f16 high and low parts (two
// MMAs), as f32 weights always do: f32-accurate products for any float weights.
// stages: k-steps of tiles in shared memory for F16 weights (3, or 2; the others always 2).
template <bool kExactX = false, class Fn>
void with_loader(const Tensor& W, GemmParams& p, int stages, Fn&& fn) {
    with_weight_format(
        W.type,
        [&](auto tag) {
            using T = typename decltype(tag)::type;
            p.row_bytes = static_cast<int64_t>(W.row_bytes());
            if constexpr (std::is_same_v<T, __half>) {
                if (p.K % 8 == 0) {  // (rows that cp.async can copy)
                    if (stages == 2) return fn(TypeTag<F16AsyncA<kExactX, 2>>{});
                    return fn(TypeTag<F16AsyncA<kExactX, 3>>{});
                }
            }
            return fn(TypeTag<FloatA<T, kExactX>>{});
        },
        [&](auto tag) {
            using F = typename decltype(tag)::type;
            p.w.nb = p.K / F::kBlock;
            return fn(TypeTag<QuantA<F>>{});
        });
}

template <class Kernel>
void allow_smem(Kernel kernel, size_t smem) {
    if (smem > 48 * 1024)
        PHI_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
}
template <class ALoader>
void run_gemm(GemmParams p, const void* w, const Launch& l) {
    constexpr size_t smem = smem_bytes<ALoader>();
    auto kernel = gemm_kernel<ALoader>;
    ALoader::point_at(p, static_cast<const uint8_t*>(w));
    allow_smem(kernel, smem);
    launch(kernel, dim3(ceil_div(p.M, BM), ceil_div(p.n, BN)), dim3(256), smem, l, p);
}
template <class ALoader>
void run_gemm_experts(const GemmParams& p, const ExpertGemm& ex, const Launch& l) {
    constexpr size_t smem = smem_bytes<ALoader>();
    auto kernel = gemm_experts_kernel<ALoader>;
    allow_smem(kernel, smem);
    launch(kernel, dim3(ceil_div(p.M, BM), ex.groups.max_tiles), dim3(256), smem, l, p, ex);
}

// ---- row helpers
// The row's normalization (RowNorm, kind none: the row as it is): the block's
// mean and inverse deviation, then each element as norm_rows_kernel computes it.
struct RowNormArgs {
    int kind = static_cast<int>(NormKind::none);
    const float* w = nullptr;
    const float* b = nullptr;
    float eps = 0.0f;
};
RowNormArgs row_norm_args(const RowNorm& n) {
    return RowNormArgs{static_cast<int>(n.kind), n.w, n.b, n.eps};
}
struct RowNormStats {
    float mean = 0.0f, inv = 1.0f;
};
__device__ __forceinline__ RowNormStats row_norm_stats(const float* xr, int dim, const RowNormArgs& nm, float* red) {
    RowNormStats st;
    float s = 0.0f;
    if (nm.kind == static_cast<int>(NormKind::layer)) {
        for (int k = threadIdx.x; k < dim; k += blockDim.x) s += xr[k];
        st.mean = block_sum(s, red) / static_cast<float>(dim);
        s = 0.0f;
        for (int k = threadIdx.x; k < dim; k += blockDim.x) s += (xr[k] - st.mean) * (xr[k] - st.mean);
    } else {
        for (int k = threadIdx.x; k < dim; k += blockDim.x) s += xr[k] * xr[k];
    }
    st.inv = 1.0f / sqrtf(block_sum(s, red) / static_cast<float>(dim) + nm.eps);
    return st;
}
__device__ __forceinline__ float row_norm_value(float x, int k, const RowNormStats& st, const RowNormArgs& nm) {
    const float v = (x - st.mean) * st.inv * nm.w[k];
    return nm.kind == static_cast<int>(NormKind::layer) && nm.b ? v + nm.b[k] : v;
}

// The power of two that puts a row's largest magnitude m in [2^14, 2^15)
// (1 for a row of zeros, or with a non-finite value, which then shows in the result).
__device__ __forceinline__ float row_scale_for(float m) {
    return m > 0.0f && m <= 3.4e38f ? ldexpf(1.0f, min(14 - ilogbf(m), 126)) : 1.0f;
}
// e as an f16 high part and the f16 of what it leaves (the low part).
__device__ __forceinline__ void split_half(float e, __half& hi, __half& lo) {
    hi = __float2half_rn(e);
    lo = __float2half_rn(e - __half2float(hi));
}

// The GEMM's activations: each row (normalized first when nm says so) scaled
// by a power of two that puts its largest magnitude in [2^14, 2^15) (1 for a
// row of zeros, or with a non-finite value, which then shows in the result),
// as f16 (high part, and low part when split), zero-padded to Kp.
// kVec4: K a multiple of 4 and x 16-byte aligned: four elements per access.
template <bool kVec4>
__global__ void convert_rows_kernel(const float* x, int K, int Kp, bool split, __half* xh, __half* xl, float* scale,
                                    RowNormArgs nm) {
    __shared__ float red[32];
    __shared__ float row_scale;
    pdl_wait();
    pdl_launch_dependents();
    const float* xr = x + static_cast<int64_t>(blockIdx.x) * K;
    const bool normed = nm.kind != static_cast<int>(NormKind::none);
    RowNormStats st;
    if (normed) {
        st = row_norm_stats(xr, K, nm, red);
        __syncthreads();  // red is read by every thread before it is written again below
    }
    constexpr int V = kVec4 ? 4 : 1;
    // elements [k, k + V) of the (normalized) row
    auto values = [&](int k, float (&v)[V]) {
        load_floats(xr + k, v);
        if (normed)
#pragma unroll
            for (int i = 0; i < V; ++i) v[i] = row_norm_value(v[i], k + i, st, nm);
    };
    float m = 0.0f;
    for (int k = threadIdx.x * V; k < K; k += blockDim.x * V) {
        float v[V];
        values(k, v);
#pragma unroll
        for (int i = 0; i < V; ++i) m = fmaxf(m, fabsf(v[i]));
    }
    m = warp_max(m);
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    if (lane == 0) red[warp] = m;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 0; w < static_cast<int>(blockDim.x / kWarp); ++w) m = fmaxf(m, red[w]);
        row_scale = row_scale_for(m);
        scale[blockIdx.x] = row_scale;
    }
    __syncthreads();
    const float s = row_scale;
    __half* hr = xh + static_cast<int64_t>(blockIdx.x) * Kp;
    __half* lr = split ? xl + static_cast<int64_t>(blockIdx.x) * Kp : nullptr;
    for (int k = threadIdx.x * V; k < Kp; k += blockDim.x * V) {  // (Kp, a multiple of 64: no row ends inside a group)
        float v[V];
        if (k < K) values(k, v);
        __half h[V], lo[V];
#pragma unroll
        for (int i = 0; i < V; ++i) {
            split_half(k < K ? v[i] * s : 0.0f, h[i], lo[i]);
        }
        if constexpr (kVec4) {
            *reinterpret_cast<uint2*>(hr + k) = *reinterpret_cast<const uint2*>(h);
            if (split) *reinterpret_cast<uint2*>(lr + k) = *reinterpret_cast<const uint2*>(lo);
        } else {
            hr[k] = h[0];
            if (split) lr[k] = lo[0];
        }
    }
}
// The same conversion with the row held in registers (kPer groups of four
// elements a thread, 256 threads: rows of up to 1024 kPer elements, padding
// included), so that it is read from memory once and each reduction runs over
// registers; the norm's weights are requested before the wait for the row.
constexpr int kHeldThreads = 256;
template <int kPer, bool kNormed>
__global__ void __launch_bounds__(kHeldThreads) convert_rows_held_kernel(const float* x, int K, int Kp, bool split,
                                                                         __half* xh, __half* xl, float* scale,
                                                                         RowNormArgs nm) {
    __shared__ float red[32];
    const bool layer = nm.kind == static_cast<int>(NormKind::layer);
    float4 v[kPer], w[kNormed ? kPer : 1], b[kNormed ? kPer : 1];
    if constexpr (kNormed) {
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
            const int k = (i * kHeldThreads + threadIdx.x) * 4;
            const bool in = k < K;
            w[i] = in ? *reinterpret_cast<const float4*>(nm.w + k) : make_float4(1.0f, 1.0f, 1.0f, 1.0f);
            b[i] = layer && nm.b && in ? *reinterpret_cast<const float4*>(nm.b + k) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
    }
    pdl_wait();
    pdl_launch_dependents();
    const float* xr = x + static_cast<int64_t>(blockIdx.x) * K;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
        const int k = (i * kHeldThreads + threadIdx.x) * 4;
        v[i] = k < K ? *reinterpret_cast<const float4*>(xr + k) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    if constexpr (kNormed) {
        float mean = 0.0f, s = 0.0f;
        if (layer) {
#pragma unroll
            for (int i = 0; i < kPer; ++i) s += (v[i].x + v[i].y) + (v[i].z + v[i].w);
            mean = block_sum(s, red) / static_cast<float>(K);
            s = 0.0f;
        }
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
            if ((i * kHeldThreads + threadIdx.x) * 4 >= K) continue;  // (padding: not (0 - mean)^2)
            const float a = v[i].x - mean, c = v[i].y - mean, d = v[i].z - mean, e = v[i].w - mean;
            s += (a * a + c * c) + (d * d + e * e);
        }
        const float inv = 1.0f / sqrtf(block_sum(s, red) / static_cast<float>(K) + nm.eps);
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
            if ((i * kHeldThreads + threadIdx.x) * 4 >= K) continue;
            v[i].x = (v[i].x - mean) * inv * w[i].x + b[i].x;
            v[i].y = (v[i].y - mean) * inv * w[i].y + b[i].y;
            v[i].z = (v[i].z - mean) * inv * w[i].z + b[i].z;
            v[i].w = (v[i].w - mean) * inv * w[i].w + b[i].w;
        }
    }
    float m = 0.0f;
#pragma unroll
    for (int i = 0; i < kPer; ++i) m = fmaxf(m, fmaxf(fmaxf(fabsf(v[i].x), fabsf(v[i].y)), fmaxf(fabsf(v[i].z), fabsf(v[i].w))));
    m = block_max(m, red);
    const float sc = row_scale_for(m);
    if (threadIdx.x == 0) scale[blockIdx.x] = sc;
    __half* hr = xh + static_cast<int64_t>(blockIdx.x) * Kp;
    __half* lr = split ? xl + static_cast<int64_t>(blockIdx.x) * Kp : nullptr;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
        const int k = (i * kHeldThreads + threadIdx.x) * 4;
        if (k >= Kp) continue;
        const float e[4] = {v[i].x * sc, v[i].y * sc, v[i].z * sc, v[i].w * sc};
        __half h[4], lo[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) split_half(e[j], h[j], lo[j]);
        *reinterpret_cast<uint2*>(hr + k) = *reinterpret_cast<const uint2*>(h);
        if (split) *reinterpret_cast<uint2*>(lr + k) = *reinterpret_cast<const uint2*>(lo);
    }
}

// The conversion of n rows: held in registers where the row fits them and
// every access can take four elements, else the looping kernel (kVec4 where
// the row length and x allow).
void launch_convert_rows(const float* x, int n, int K, int Kp, bool split, __half* xh, __half* xl, float* scale,
                         const RowNorm& norm, const Launch& l) {
    auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    const bool vec4 = K % 4 == 0 && aligned(x);
    const RowNormArgs nm = row_norm_args(norm);
    const bool normed = norm.kind != NormKind::none;
    const int per = (Kp + 4 * kHeldThreads - 1) / (4 * kHeldThreads);  // (with a norm: its weights in registers too)
    if (vec4 && aligned(norm.w) && aligned(norm.b) && per <= (normed ? 8 : 16)) {
        auto kernel = normed ? (per <= 2 ? convert_rows_held_kernel<2, true>
                                : per <= 4 ? convert_rows_held_kernel<4, true>
                                           : convert_rows_held_kernel<8, true>)
                             : (per <= 2 ? convert_rows_held_kernel<2, false>
                                : per <= 4 ? convert_rows_held_kernel<4, false>
                                : per <= 8 ? convert_rows_held_kernel<8, false>
                                           : convert_rows_held_kernel<16, false>);
        launch(kernel, dim3(n), dim3(kHeldThreads), 0, l, x, K, Kp, split, xh, xl, scale, nm);
        return;
    }
    launch(vec4 ? convert_rows_kernel<true> : convert_rows_kernel<false>, dim3(n), dim3(256), 0, l, x, K, Kp, split,
           xh, xl, scale, nm);
}

__global__ void norm_rows_kernel(const float* x, int dim, RowNormArgs nm, float* y) {
    __shared__ float red[32];
    pdl_wait();
    pdl_launch_dependents();
    const float* xr = x + static_cast<int64_t>(blockIdx.x) * dim;
    float* yr = y + static_cast<int64_t>(blockIdx.x) * dim;
    const RowNormStats st = row_norm_stats(xr, dim, nm, red);
    for (int k = threadIdx.x; k < dim; k += blockDim.x) yr[k] = row_norm_value(xr[k], k, st, nm);
}

__global__ void swiglu_kernel(const float* gu, int n_rows, int ff, float* y) {
    pdl_wait();
    pdl_launch_dependents();
    for_each_element(n_rows, ff, [&](int64_t r, int64_t c, int64_t i) {
        const float g = gu[r * 2 * ff + c], u = gu[r * 2 * ff + ff + c];
        y[i] = silu(g) * u;
    });
}

} // namespace

size_t gemm_workspace(int n, int64_t K) {
    const size_t Kp = static_cast<size_t>((K + BK - 1) / BK * BK);
    return 2 * n * Kp * sizeof(__half) + n * sizeof(float) + 256;
}

namespace {
// A GEMM's parameters for weights shaped like W and x of n rows.
GemmParams gemm_params(const Tensor& W, int n, float* y, int64_t ldy, const float* bias, Epilogue ep) {
    GemmParams p;
    p.K = static_cast<int>(W.ne0);
    p.Kp = (p.K + BK - 1) / BK * BK;
    p.M = static_cast<int>(W.ne1);
    p.n = n;
    p.ldy = ldy;
    p.bias = bias;
    p.y = y;
    p.ep = static_cast<int>(ep);
    return p;
}

// The loader for W under cfg, given to fn as TypeTag<Loader>, after x's n rows
// are converted into the workspace as that loader meets them (f16, and their
// low parts where it splits the activations).
template <class Fn>
void with_converted_x(const Tensor& W, const float* x, const RowNorm& norm, const GemmConfig& cfg, GemmParams& p,
                      void* ws, const Launch& l, Fn&& fn) {
    auto run = [&](auto tag) {
        using A = typename decltype(tag)::type;
        auto* xh = static_cast<__half*>(ws);
        __half* xl = xh + static_cast<size_t>(p.n) * p.Kp;
        auto* scale = reinterpret_cast<float*>(xl + static_cast<size_t>(p.n) * p.Kp);
        launch_convert_rows(x, p.n, p.K, p.Kp, A::kSplitX, xh, xl, scale, norm, l);
        p.xh = xh;
        p.xl = xl;
        p.scale = scale;
        fn(tag);
    };
    if (cfg.exact) with_loader<true>(W, p, cfg.stages, run);
    else with_loader<false>(W, p, cfg.stages, run);
}
} // namespace

void gemm(const Tensor& W, const float* x, const RowNorm& norm, int n, float* y, int64_t ldy, const float* bias,
          Epilogue ep, const GemmConfig& cfg, void* ws, const Launch& l) {
    GemmParams p = gemm_params(W, n, y, ldy, bias, ep);
    with_converted_x(W, x, norm, cfg, p, ws, l, [&](auto tag) { run_gemm<typename decltype(tag)::type>(p, W.data, l); });
}

void gemm_experts(const Experts& W, const float* x, int x_rows, int shift, const ExpertGroups& g, float* y,
                  int64_t ldy, const GemmConfig& cfg, void* ws, const Launch& l) {
    GemmParams p = gemm_params(W.w[0], x_rows, y, ldy, nullptr, Epilogue::store);
    ExpertGemm ex;
    for (int i = 0; i < W.n; ++i) ex.base[i] = static_cast<const uint8_t*>(W.w[i].data);
    ex.groups = g;
    ex.shift = shift;
    with_converted_x(W.w[0], x, RowNorm{}, cfg, p, ws, l,
                     [&](auto tag) { run_gemm_experts<typename decltype(tag)::type>(p, ex, l); });
}

void convert_rows(const float* x, const RowNorm& norm, int n, int64_t K, __half* xh, float* scale, const Launch& l) {
    const int Kp = static_cast<int>((K + BK - 1) / BK * BK);
    launch_convert_rows(x, n, static_cast<int>(K), Kp, false, xh, nullptr, scale, norm, l);
}
int64_t converted_ld(int64_t K) { return (K + BK - 1) / BK * BK; }

void norm_rows(const float* x, int n_rows, int dim, const RowNorm& norm, float* y, const Launch& l) {
    launch(norm_rows_kernel, dim3(n_rows), dim3(256), 0, l, x, dim, row_norm_args(norm), y);
}

void swiglu_rows(const float* gate_up, int n_rows, int ff, float* y, const Launch& l) {
    launch(swiglu_kernel, dim3(element_ctas(static_cast<int64_t>(n_rows) * ff, 65535)), dim3(256), 0, l, gate_up,
           n_rows, ff, y);
}

} // namespace phi::cuda
