// x86 SIMD kernels, written once and compiled twice: kernels_avx2.cpp
// includes this with -mavx2 -mfma -mf16c, kernels_avx512.cpp with the AVX-512
// flags (where the compiler also gets 32 vector registers, so tiles grow, and
// VNNI replaces the maddubs/madd pair in integer dot products).
//
// Everything here has internal linkage (anonymous namespace) and calls no
// std:: templates: an inline function instantiated in both files could be
// merged by the linker into the AVX-512 copy and then run on an AVX2 CPU.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "backend/cpu/kernels.h"

namespace phi::cpu {
namespace {

#if defined(__AVX512F__)
constexpr int kTileRows = 4;  // weight rows per tile
constexpr int kTileToks = 5;  // tokens per tile (prefill)
#else
constexpr int kTileRows = 4;
constexpr int kTileToks = 2;
#endif

inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// ------------------------------------------------------------ float weights

// Eight weights of row `p` starting at element k, widened to f32.
template <DType T> inline __m256 load_w8(const uint8_t* p, int64_t k);
template <> inline __m256 load_w8<DType::F32>(const uint8_t* p, int64_t k) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p) + k);
}
template <> inline __m256 load_w8<DType::F16>(const uint8_t* p, int64_t k) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * k)));
}
template <> inline __m256 load_w8<DType::BF16>(const uint8_t* p, int64_t k) {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * k)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
template <DType T> inline float load_w1(const uint8_t* p, int64_t k) {
    uint16_t h;
    if (T == DType::F32) {
        float f;
        std::memcpy(&f, p + 4 * k, 4);
        return f;
    }
    std::memcpy(&h, p + 2 * k, 2);
    if (T == DType::BF16) {
        const uint32_t u = static_cast<uint32_t>(h) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
    return _cvtsh_ss(h);
}

// out[r][t] = dot(W row r, x row t) for R rows x N tokens: every weight vector
// is loaded (and converted) once and used for N tokens; R*N independent
// accumulators hide the FMA latency. U unrolls K for the N == 1 (decode) case.
template <DType T, int R, int N, int U>
inline void float_tile(const uint8_t* w, size_t ws, const float* x, int64_t xs, int64_t K, float out[R][N]) {
    __m256 acc[U][R][N];
    for (int u = 0; u < U; ++u)
        for (int r = 0; r < R; ++r)
            for (int t = 0; t < N; ++t) acc[u][r][t] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 * U <= K; k += 8 * U) {
        for (int u = 0; u < U; ++u) {
            __m256 wv[R];
            for (int r = 0; r < R; ++r) wv[r] = load_w8<T>(w + r * ws, k + 8 * u);
            for (int t = 0; t < N; ++t) {
                const __m256 xv = _mm256_loadu_ps(x + t * xs + k + 8 * u);
                for (int r = 0; r < R; ++r) acc[u][r][t] = _mm256_fmadd_ps(wv[r], xv, acc[u][r][t]);
            }
        }
    }
    for (; k + 8 <= K; k += 8) {
        __m256 wv[R];
        for (int r = 0; r < R; ++r) wv[r] = load_w8<T>(w + r * ws, k);
        for (int t = 0; t < N; ++t) {
            const __m256 xv = _mm256_loadu_ps(x + t * xs + k);
            for (int r = 0; r < R; ++r) acc[0][r][t] = _mm256_fmadd_ps(wv[r], xv, acc[0][r][t]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < N; ++t) {
            __m256 s = acc[0][r][t];
            for (int u = 1; u < U; ++u) s = _mm256_add_ps(s, acc[u][r][t]);
            out[r][t] = hsum(s);
        }
    for (; k < K; ++k)
        for (int r = 0; r < R; ++r)
            for (int t = 0; t < N; ++t) out[r][t] += load_w1<T>(w + r * ws, k) * x[t * xs + k];
}

template <DType T, int R, int N, int U>
inline void float_tile_store(const MatmulArgs& a, int64_t r, int t) {
    float out[R][N];
    const float* x = reinterpret_cast<const float*>(a.x + t * a.x_stride);
    float_tile<T, R, N, U>(a.w + r * a.w_stride, a.w_stride, x, static_cast<int64_t>(a.x_stride / 4), a.K, out);
    for (int i = 0; i < R; ++i) {
        const float b = a.bias ? a.bias[r + i] : 0.0f;
        for (int j = 0; j < N; ++j) a.y[(t + j) * a.ldy + r + i] = out[i][j] + b;
    }
}

// Tokens are taken in blocks whose activations fit in L2 next to the weight
// tile, so each weight tile streams from memory once per block.
inline int token_block(int64_t row_bytes_x, int n) {
    int64_t tb = (512 * 1024) / (row_bytes_x > 0 ? row_bytes_x : 1);
    tb = tb < kTileToks ? kTileToks : tb - tb % kTileToks;
    return static_cast<int>(min_i64(tb, n));
}

template <DType T>
void rows_float(const MatmulArgs& a, int64_t r0, int64_t r1) {
    if (a.n == 1) {
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) float_tile_store<T, 4, 1, 2>(a, r, 0);
        for (; r < r1; ++r) float_tile_store<T, 1, 1, 4>(a, r, 0);
        return;
    }
    const int tb = token_block(static_cast<int64_t>(a.x_stride), a.n);
    for (int t0 = 0; t0 < a.n; t0 += tb) {
        const int t1 = static_cast<int>(min_i64(a.n, t0 + tb));
        int64_t r = r0;
        for (; r + kTileRows <= r1; r += kTileRows) {
            int t = t0;
            for (; t + kTileToks <= t1; t += kTileToks) float_tile_store<T, kTileRows, kTileToks, 1>(a, r, t);
            for (; t < t1; ++t) float_tile_store<T, kTileRows, 1, 1>(a, r, t);
        }
        for (; r < r1; ++r) {
            int t = t0;
            for (; t + kTileToks <= t1; t += kTileToks) float_tile_store<T, 1, kTileToks, 1>(a, r, t);
            for (; t < t1; ++t) float_tile_store<T, 1, 1, 2>(a, r, t);
        }
    }
}

void fill_x86_table(KernelTable* t) {
    t->rows[static_cast<int>(DType::F32)] = rows_float<DType::F32>;
    t->rows[static_cast<int>(DType::F16)] = rows_float<DType::F16>;
    t->rows[static_cast<int>(DType::BF16)] = rows_float<DType::BF16>;
}

} // namespace
} // namespace phi::cpu
