// Prefill GEMM for every weight type, included by kernels_x86_impl.h (so it
// is compiled once per ISA and sees the block unpackers defined there).
//
// y[t][r] = sum_k W[r][k] * x[t][k] for n tokens at once. The shape of the
// work follows the BLIS design:
//   - weights are dequantized to f32 in blocks of kGemmRows rows x kGemmKc
//     columns (each element once per call, so dequantization costs
//     O(M*K), against O(M*K*n) multiply-adds);
//   - activations were packed by the caller into tiles of 8 tokens, k-major
//     ([tile][K][8]), so one aligned load gives 8 tokens of one column;
//   - the micro-kernel keeps a 6-row x 16-token tile of accumulators in 12
//     registers and does 12 FMAs per column from 2 loads and 6 broadcasts.
// Partial sums over the K blocks live in a per-thread buffer in the packed
// tile layout and are written to y (transposed, with the bias) at the end.
#pragma once

namespace phi::cpu {
namespace {

constexpr int kGemmMr = 6;                 // weight rows per micro-tile
constexpr int kGemmKc = 256;               // columns per weight block (one K-quant super-block)
constexpr int kGemmRows = 8 * kGemmMr;     // rows dequantized per block: 48 x 256 f32 = 48 KiB, in L2
constexpr int kGemmWs = kGemmKc + 8;       // padded row stride of the block (no 1 KiB-stride set conflicts)

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

// c[MR][NT*8] (+)= w[MR rows, stride ws][kc] x xp[NT tiles][kc][8], where the
// second tile starts `xs` floats after the first. c holds the tile in the
// packed layout [tile][row][8].
template <int MR, int NT>
inline void gemm_micro(const float* w, const float* x, int64_t xs, int kc, float* c, bool accumulate) {
    __m256 acc[NT][MR];
    for (int j = 0; j < NT; ++j)
        for (int r = 0; r < MR; ++r)
            acc[j][r] = accumulate ? _mm256_loadu_ps(c + (j * MR + r) * 8) : _mm256_setzero_ps();
    // unrolled: the loop overhead is otherwise ~10% of the 6x16 kernel (measured)
#pragma GCC unroll 4
    for (int k = 0; k < kc; ++k) {
        __m256 xv[NT];
        for (int j = 0; j < NT; ++j) xv[j] = _mm256_loadu_ps(x + j * xs + 8 * k);
        for (int r = 0; r < MR; ++r) {
            const __m256 wv = _mm256_broadcast_ss(w + r * kGemmWs + k);
            for (int j = 0; j < NT; ++j) acc[j][r] = _mm256_fmadd_ps(wv, xv[j], acc[j][r]);
        }
    }
    for (int j = 0; j < NT; ++j)
        for (int r = 0; r < MR; ++r) _mm256_storeu_ps(c + (j * MR + r) * 8, acc[j][r]);
}

template <int NT>
inline void gemm_micro_rows(int mr, const float* w, const float* x, int64_t xs, int kc, float* c, bool acc) {
    switch (mr) {  // a block's last micro-tile may have fewer rows
        case 6: gemm_micro<6, NT>(w, x, xs, kc, c, acc); break;
        case 5: gemm_micro<5, NT>(w, x, xs, kc, c, acc); break;
        case 4: gemm_micro<4, NT>(w, x, xs, kc, c, acc); break;
        case 3: gemm_micro<3, NT>(w, x, xs, kc, c, acc); break;
        case 2: gemm_micro<2, NT>(w, x, xs, kc, c, acc); break;
        default: gemm_micro<1, NT>(w, x, xs, kc, c, acc); break;
    }
}

// Asks for the weight bytes of row r, columns [k0, k0 + kc), to be brought
// into L2 two blocks before they are dequantized (see gemm_f32). A block is
// 48 short runs of a few hundred bytes, which the hardware prefetcher does
// not follow; the requests are spread over the block's micro-kernel calls
// (one row each) so they do not overflow the queue of outstanding misses.
inline void prefetch_row(const GemmArgs& a, int64_t r, int64_t k0, int64_t kc) {
    const size_t begin = a.w_stride * static_cast<size_t>(k0) / static_cast<size_t>(a.K);
    const size_t end = a.w_stride * static_cast<size_t>(k0 + kc) / static_cast<size_t>(a.K);
    const uint8_t* row = a.w + r * a.w_stride;
    for (size_t off = begin; off < end; off += 64) _mm_prefetch(reinterpret_cast<const char*>(row + off), _MM_HINT_T1);
}

// One weight block: rows [mb, mb + rows), columns [k0, k0 + kc).
struct GemmBlock {
    int64_t mb = 0, k0 = 0;
    int rows = 0, kc = 0;
};

// Output rows [r0, r1) for all tokens, as a sequence of weight blocks (48 rows
// x 256 columns, K-blocks of one row block in order). For each block the
// micro-kernel sweeps every pair of token tiles over the block's 6-row
// micro-tiles: the 16-token activation slice (16 KiB) stays in L1 while the
// f32 weight block (48 KiB) streams from L2. The weights are software-
// pipelined: while block b is multiplied, block b+1 is dequantized into the
// other buffer one row per micro-kernel call, and the bytes of block b+2 are
// prefetched into L2 the same way, so the DRAM latency of the weight stream
// hides behind the FMAs instead of stalling the dequantization.
void gemm_f32(const GemmArgs& a, int64_t r0, int64_t r1) {
    const int tiles = (a.n + kGemmTileToks - 1) / kGemmTileToks;
    const int64_t xs = a.K * kGemmTileToks;  // floats between token tiles
    thread_local AlignedBytes wbuf, cbuf_store;
    float* wbufs = reinterpret_cast<float*>(wbuf.get(2 * sizeof(float) * kGemmRows * kGemmWs));
    float* cbuf = reinterpret_cast<float*>(cbuf_store.get(sizeof(float) * kGemmRows * tiles * kGemmTileToks));
    const int64_t nk = (a.K + kGemmKc - 1) / kGemmKc;
    const int64_t n_blocks = (r1 - r0 + kGemmRows - 1) / kGemmRows * nk;
    auto block_at = [&](int64_t b) {
        GemmBlock g;
        if (b >= n_blocks) return g;  // rows == 0: none
        g.mb = r0 + b / nk * kGemmRows;
        g.k0 = b % nk * kGemmKc;
        g.rows = static_cast<int>(min_i64(kGemmRows, r1 - g.mb));
        g.kc = static_cast<int>(min_i64(kGemmKc, a.K - g.k0));
        return g;
    };
    auto dequant_row = [&](const GemmBlock& g, int i, float* dst) {
        a.dequant(a.type, a.w, a.w_stride, g.mb + i, g.k0, g.kc, dst + i * kGemmWs);
    };
    {
        const GemmBlock first = block_at(0), second = block_at(1);
        for (int i = 0; i < first.rows; ++i) dequant_row(first, i, wbufs);
        for (int i = 0; i < second.rows; ++i) prefetch_row(a, second.mb + i, second.k0, second.kc);
    }
    for (int64_t b = 0; b < n_blocks; ++b) {
        const GemmBlock cur = block_at(b), next = block_at(b + 1), ahead = block_at(b + 2);
        float* w = wbufs + (b & 1) * kGemmRows * kGemmWs;
        float* wn = wbufs + ((b + 1) & 1) * kGemmRows * kGemmWs;
        int dq = 0, pf = 0;  // rows of `next` dequantized, rows of `ahead` prefetched
        const bool acc = cur.k0 > 0;
        for (int j = 0; j < tiles; j += 2) {
            const float* x = a.xp + j * xs + cur.k0 * kGemmTileToks;
            for (int i = 0; i < cur.rows; i += kGemmMr) {
                const int mr = static_cast<int>(min_i64(kGemmMr, cur.rows - i));
                // cbuf layout: [micro-tile i / 6][token tile][row][8]
                float* c = cbuf + (static_cast<size_t>(i) * tiles + static_cast<size_t>(j) * mr) * kGemmTileToks;
                if (dq < next.rows) dequant_row(next, dq++, wn);
                if (pf < ahead.rows) prefetch_row(a, ahead.mb + pf++, ahead.k0, ahead.kc);
                if (j + 1 < tiles) gemm_micro_rows<2>(mr, w + i * kGemmWs, x, xs, cur.kc, c, acc);
                else gemm_micro_rows<1>(mr, w + i * kGemmWs, x, xs, cur.kc, c, acc);
            }
        }
        for (; dq < next.rows; ++dq) dequant_row(next, dq, wn);
        for (; pf < ahead.rows; ++pf) prefetch_row(a, ahead.mb + pf, ahead.k0, ahead.kc);
        if (cur.k0 + cur.kc < a.K) continue;
        // the row block is complete: write it out, transposed, with the bias
        for (int i = 0; i < cur.rows; i += kGemmMr) {
            const int mr = static_cast<int>(min_i64(kGemmMr, cur.rows - i));
            for (int t = 0; t < a.n; ++t) {
                const float* c = cbuf + (static_cast<size_t>(i) * tiles + static_cast<size_t>(t / kGemmTileToks) * mr) * kGemmTileToks
                                 + t % kGemmTileToks;
                float* y = a.y + t * a.ldy + cur.mb + i;
                for (int r = 0; r < mr; ++r) y[r] = c[r * kGemmTileToks] + (a.bias ? a.bias[cur.mb + i + r] : 0.0f);
            }
        }
    }
}

void fill_gemm_table(KernelTable* t) {
    t->gemm = gemm_f32;
    t->gemm_row_block = kGemmRows;
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
