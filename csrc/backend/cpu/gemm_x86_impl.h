// Prefill GEMM for every weight type, included by kernels_x86_impl.h (so it
// is compiled once per ISA and sees the block unpackers defined there).
//
// y[t][r] = sum_k W[r][k] * x[t][k] for n tokens at once. The shape of the
// work follows the BLIS design, with the roles chosen for weights that must
// be converted (F16, BF16, every quantized format) before they can be used:
//   - activations were packed by the caller into tiles of kLanes tokens
//     (8 for AVX2, 16 for AVX-512), k-major ([tile][K][kLanes]), so one
//     aligned load gives a tile's tokens at one column;
//   - the weights of a micro-panel (kGemmMr rows x kGemmKc columns) are
//     converted to f32 once, into a scratch that stays in L1, and then swept
//     against every token tile: each converted element is used n times, and
//     its stores never leave L1;
//   - the micro-kernel keeps kGemmMr rows x 2 tiles of accumulators in
//     registers (6 x 16 tokens in 12 AVX2 registers, 12 x 32 tokens in 24
//     AVX-512 registers): per column, 2 loads, kGemmMr broadcasts, 2 kGemmMr FMAs;
//   - a row block's K-panel of activations (n x 256 floats, 128 KiB at 128
//     tokens) stays in L2 while its micro-panels pass over it.
// Partial sums over the K blocks live in a per-thread buffer in the packed
// tile layout and are written to y (transposed, with the bias) at the end.
//
// Measured on the dev machine (Zen 3, AVX2, 2 threads, F16 weights of
// Phi-3-mini's four shapes x 128 tokens, variants alternated in one process):
// this order (panel in L1, activations from L2) 4-6% faster than converting a
// 48-row block into an L2 buffer and sweeping it per token tile, the order
// used before; converting in the micro-kernel's loads instead (weights as
// vectors, F16 interleaved 16 rows per column) was 3-10% slower.
#pragma once

namespace phi::cpu {
namespace {

#if defined(__AVX512F__)
struct GemmVec {
    using V = __m512;
    static constexpr int kLanes = 16;
    static V load(const float* p) { return _mm512_loadu_ps(p); }
    static V bcast(const float* p) { return _mm512_set1_ps(*p); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static V zero() { return _mm512_setzero_ps(); }
    static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
};
constexpr int kGemmMr = 12;  // weight rows per micro-panel: 24 of 32 registers accumulate
#else
struct GemmVec {
    using V = __m256;
    static constexpr int kLanes = 8;
    static V load(const float* p) { return _mm256_loadu_ps(p); }
    static V bcast(const float* p) { return _mm256_broadcast_ss(p); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V zero() { return _mm256_setzero_ps(); }
    static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
};
constexpr int kGemmMr = 6;   // 12 of 16 registers accumulate
#endif
constexpr int kGemmLanes = GemmVec::kLanes;  // tokens per packed activation tile
constexpr int kGemmKc = 256;                 // columns per K block (one K-quant super-block)
constexpr int kGemmRows = 8 * kGemmMr;       // rows per row block (a thread's unit of work)
constexpr int kGemmWs = kGemmKc + 8;         // padded row stride of the panel (no 1 KiB-stride set conflicts)

// ------------------------------------------------------------ dequantizers

inline void store_i8x8_scaled(float* dst, __m128i q8, __m256 d) {  // 8 signed bytes (low half of q8)
    _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)), d));
}
inline void store_u8x8_affine(float* dst, __m128i u8, __m256 a, __m256 b) {  // a * u + b
    _mm256_storeu_ps(dst, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(u8)), a, b));
}

template <DType T>
void dequant_float(DType, const uint8_t* w, size_t w_stride, int64_t r, int64_t k0, int64_t n, float* dst) {
    const uint8_t* row = w + r * w_stride;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_w8<T>(row, k0 + i));
    for (; i < n; ++i) dst[i] = load_w1<T>(row, k0 + i);
}

// Legacy 32-element blocks: x = d * q (signed formats) or d * u + m.
template <class F>
void dequant_legacy(DType, const uint8_t* w, size_t w_stride, int64_t r, int64_t k0, int64_t n, float* dst) {
    const uint8_t* row = w + r * w_stride;
    const auto* b = reinterpret_cast<const typename F::Block*>(row) + k0 / QK;
    for (int64_t ib = 0; ib < n / QK; ++ib, dst += QK) {
        const __m256i q = F::load(b[ib]);
        const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
        const __m256 d = _mm256_set1_ps(h2f(b[ib].d));
        if (F::kSigned) {
            store_i8x8_scaled(dst, lo, d);
            store_i8x8_scaled(dst + 8, _mm_srli_si128(lo, 8), d);
            store_i8x8_scaled(dst + 16, hi, d);
            store_i8x8_scaled(dst + 24, _mm_srli_si128(hi, 8), d);
        } else {
            const __m256 m = _mm256_set1_ps(min_of(b[ib]));
            store_u8x8_affine(dst, lo, d, m);
            store_u8x8_affine(dst + 8, _mm_srli_si128(lo, 8), d, m);
            store_u8x8_affine(dst + 16, hi, d, m);
            store_u8x8_affine(dst + 24, _mm_srli_si128(hi, 8), d, m);
        }
    }
}

// K-quants: within 16-element group g, x = A[g] * u + B[g] with
// A = d * sc[g] and B = -(d * off * sc[g] + dmin * m[g]) (see KPrep).
template <class F>
void dequant_kquant(DType, const uint8_t* w, size_t w_stride, int64_t r, int64_t k0, int64_t n, float* dst) {
    const uint8_t* row = w + r * w_stride;
    const auto* b = reinterpret_cast<const typename F::Block*>(row) + k0 / QK_K;
    KPrep p;
    for (int64_t ib = 0; ib < n / QK_K; ++ib) {
        F::prep(b[ib], &p);
        for (int v = 0; v < 8; ++v, dst += 32) {
            const __m256i u = F::unpack(b[ib], v);
            for (int h = 0; h < 2; ++h) {
                const int g = 2 * v + h;
                const float A = p.d * p.sc[g];
                float B = 0.0f;
                if (F::kOffset) B -= p.d * p.off[g];
                if (F::kMins) B -= p.dmin * p.mn[g];
                const __m128i u16 = h ? _mm256_extracti128_si256(u, 1) : _mm256_castsi256_si128(u);
                store_u8x8_affine(dst + 16 * h, u16, _mm256_set1_ps(A), _mm256_set1_ps(B));
                store_u8x8_affine(dst + 16 * h + 8, _mm_srli_si128(u16, 8), _mm256_set1_ps(A), _mm256_set1_ps(B));
            }
        }
    }
}

// ------------------------------------------------------------ micro-kernel

// c[NT][MR][kLanes] (+)= w[MR rows, stride kGemmWs][kc] x xp[NT tiles][kc][kLanes],
// where the second tile starts `xs` floats after the first.
template <int MR, int NT>
inline void gemm_micro(const float* w, const float* x, int64_t xs, int kc, float* c, bool accumulate) {
    using V = GemmVec;
    constexpr int L = V::kLanes;
    typename V::V acc[NT][MR];
    for (int j = 0; j < NT; ++j)
        for (int r = 0; r < MR; ++r) acc[j][r] = accumulate ? V::load(c + (j * MR + r) * L) : V::zero();
    // unrolled: the loop overhead is otherwise ~10% of the AVX2 kernel (measured)
#pragma GCC unroll 4
    for (int k = 0; k < kc; ++k) {
        typename V::V xv[NT];
        for (int j = 0; j < NT; ++j) xv[j] = V::load(x + j * xs + L * k);
        for (int r = 0; r < MR; ++r) {
            const typename V::V wv = V::bcast(w + r * kGemmWs + k);
            for (int j = 0; j < NT; ++j) acc[j][r] = V::fma(wv, xv[j], acc[j][r]);
        }
    }
    for (int j = 0; j < NT; ++j)
        for (int r = 0; r < MR; ++r) V::store(c + (j * MR + r) * L, acc[j][r]);
}

template <int NT, int MR = kGemmMr>
inline void gemm_micro_rows(int mr, const float* w, const float* x, int64_t xs, int kc, float* c, bool acc) {
    if constexpr (MR == 1) {
        gemm_micro<1, NT>(w, x, xs, kc, c, acc);
    } else if (mr == MR) {  // a block's last panel may have fewer rows
        gemm_micro<MR, NT>(w, x, xs, kc, c, acc);
    } else {
        gemm_micro_rows<NT, MR - 1>(mr, w, x, xs, kc, c, acc);
    }
}

// The bytes of one K block [k0, k0 + kc) within a weight row.
struct RowSpan {
    size_t begin = 0, len = 0;
};
inline RowSpan row_span(const GemmArgs& a, int64_t k0, int64_t kc) {
    const size_t b = a.w_stride * static_cast<size_t>(k0) / static_cast<size_t>(a.K);
    const size_t e = a.w_stride * static_cast<size_t>(k0 + kc) / static_cast<size_t>(a.K);
    return {b, e - b};
}

// Asks for a weight row's bytes of one K block to be brought into L1 a panel
// before they are converted: the rows of a panel are short runs a file row
// apart, which the hardware prefetcher does not follow. Into L2 (T1), the
// conversion still waited on them (dequant_float 11% of F16 prefill samples
// against 8%; pp128 +3-4% with T0 on Zen 5).
inline void prefetch_span(const GemmArgs& a, int64_t r, RowSpan s) {
    const uint8_t* p = a.w + r * a.w_stride + s.begin;
    for (size_t off = 0; off < s.len; off += 64) _mm_prefetch(reinterpret_cast<const char*>(p + off), _MM_HINT_T0);
}

// A complete row block of `rows` rows from its accumulators, laid out
// [panel of mr_max rows][token tile of L][row][L], into y (token t's rows at
// y + t * ldy), with the bias: token by token, so each token's rows are one
// contiguous run of y (panel by panel instead, the runs were 6 floats: ~2%
// slower on F16).
inline void gemm_write_block(const float* cbuf, int tiles, int L, int mr_max, int rows, int n, float* y0,
                             int64_t ldy, const float* bias) {
    for (int t = 0; t < n; ++t) {
        float* y = y0 + t * ldy;
        for (int i = 0; i < rows; i += mr_max) {
            const int mr = static_cast<int>(min_i64(mr_max, rows - i));
            const float* c = cbuf + (static_cast<size_t>(i) * tiles + static_cast<size_t>(t / L) * mr) * L + t % L;
            for (int r = 0; r < mr; ++r) y[i + r] = c[r * L];
        }
        if (bias)
            for (int r = 0; r < rows; ++r) y[r] += bias[r];
    }
}

// Output rows [r0, r1) for all tokens, row block by row block; within a row
// block, K block by K block; within that, panel by panel: convert the panel
// into the L1 scratch, then sweep every pair of token tiles over it. While a
// panel is swept, the bytes of the next one (the next rows, or the first rows
// of the next K block) are prefetched, one row per micro-kernel call.
void gemm_f32(const GemmArgs& a, int64_t r0, int64_t r1) {
    constexpr int L = kGemmLanes;
    const int tiles = (a.n + L - 1) / L;
    const int64_t xs = a.K * L;  // floats between token tiles
    thread_local AlignedBytes wbuf, cbuf_store;
    float* wp = reinterpret_cast<float*>(wbuf.get(sizeof(float) * kGemmMr * kGemmWs));
    float* cbuf = reinterpret_cast<float*>(cbuf_store.get(sizeof(float) * kGemmRows * tiles * L));
    for (int64_t mb = r0; mb < r1; mb += kGemmRows) {
        const int rows = static_cast<int>(min_i64(kGemmRows, r1 - mb));
        for (int64_t k0 = 0; k0 < a.K; k0 += kGemmKc) {
            const int kc = static_cast<int>(min_i64(kGemmKc, a.K - k0));
            const RowSpan span = row_span(a, k0, kc);
            const RowSpan next_span = k0 + kc < a.K ? row_span(a, k0 + kc, min_i64(kGemmKc, a.K - k0 - kc)) : RowSpan{};
            const bool acc = k0 > 0;
            for (int i = 0; i < rows; i += kGemmMr) {
                const int mr = static_cast<int>(min_i64(kGemmMr, rows - i));
                for (int r = 0; r < mr; ++r) a.dequant(a.type, a.w, a.w_stride, mb + i + r, k0, kc, wp + r * kGemmWs);
                // the panel after this one: rows [pr, pr + pn), bytes `ps` of each
                int64_t pr = mb;
                int pn = next_span.len ? static_cast<int>(min_i64(kGemmMr, rows)) : 0;
                RowSpan ps = next_span;
                if (i + mr < rows) {
                    pr = mb + i + mr;
                    pn = static_cast<int>(min_i64(kGemmMr, rows - i - mr));
                    ps = span;
                }
                const int calls = (tiles + 1) / 2, per_call = (pn + calls - 1) / calls;
                int pf = 0;
                for (int j = 0; j < tiles; j += 2) {
                    for (const int until = pf + per_call; pf < until && pf < pn; ++pf) prefetch_span(a, pr + pf, ps);
                    const float* x = a.xp + j * xs + k0 * L;
                    // cbuf layout: [panel i / MR][token tile][row][L]
                    float* c = cbuf + (static_cast<size_t>(i) * tiles + static_cast<size_t>(j) * mr) * L;
                    if (j + 1 < tiles) gemm_micro_rows<2>(mr, wp, x, xs, kc, c, acc);
                    else gemm_micro_rows<1>(mr, wp, x, xs, kc, c, acc);
                }
            }
        }
        gemm_write_block(cbuf, tiles, L, kGemmMr, rows, a.n, a.y + mb, a.ldy, a.bias ? a.bias + mb : nullptr);
    }
}

void fill_gemm_table(KernelTable* t) {
    t->gemm = gemm_f32;
    t->gemm_row_block = kGemmRows;
    t->gemm_tile_tokens = kGemmLanes;
    t->dequant[static_cast<int>(DType::F32)] = dequant_float<DType::F32>;
    t->dequant[static_cast<int>(DType::F16)] = dequant_float<DType::F16>;
    t->dequant[static_cast<int>(DType::BF16)] = dequant_float<DType::BF16>;
    t->dequant[static_cast<int>(DType::Q8_0)] = dequant_legacy<LegacyQ8_0>;
    t->dequant[static_cast<int>(DType::Q4_0)] = dequant_legacy<LegacyQ4_0>;
    t->dequant[static_cast<int>(DType::Q5_0)] = dequant_legacy<LegacyQ5_0>;
    t->dequant[static_cast<int>(DType::Q4_1)] = dequant_legacy<LegacyQ4_1>;
    t->dequant[static_cast<int>(DType::Q5_1)] = dequant_legacy<LegacyQ5_1>;
    t->dequant[static_cast<int>(DType::IQ4_NL)] = dequant_legacy<LegacyIQ4_NL>;
    t->dequant[static_cast<int>(DType::Q2_K)] = dequant_kquant<KQ2>;
    t->dequant[static_cast<int>(DType::Q3_K)] = dequant_kquant<KQ3>;
    t->dequant[static_cast<int>(DType::Q4_K)] = dequant_kquant<KQ4>;
    t->dequant[static_cast<int>(DType::Q5_K)] = dequant_kquant<KQ5>;
    t->dequant[static_cast<int>(DType::Q6_K)] = dequant_kquant<KQ6>;
}

} // namespace
} // namespace phi::cpu
