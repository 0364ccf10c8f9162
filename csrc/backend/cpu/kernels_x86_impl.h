// x86 SIMD kernels, written once and compiled three times: kernels_avx2.cpp
// includes this with -mavx2 -mfma -mf16c, kernels_avxvnni.cpp with AVX-VNNI
// added (256-bit vpdpbusd replaces the maddubs/madd pair in the integer dot
// products), kernels_avx512.cpp with the AVX-512 flags (where the compiler
// also gets 32 vector registers, so tiles grow, and VNNI does the same).
//
// Everything here has internal linkage (anonymous namespace) and calls no
// std:: templates: an inline function instantiated in both files could be
// merged by the linker into the AVX-512 copy and then run on an AVX2 CPU.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>

#include <cmath>

#include "backend/cpu/kernels.h"
#include "quant/blocks.h"

namespace phi::cpu {
namespace {

// acc + the sums of 4 unsigned x signed byte products per 32-bit lane, in one
// instruction where the build has VNNI for 256-bit vectors
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define PHI_DPBUSD256(acc, u, s) _mm256_dpbusd_epi32(acc, u, s)
#elif defined(__AVXVNNI__)
#define PHI_DPBUSD256(acc, u, s) _mm256_dpbusd_avx_epi32(acc, u, s)
#endif

constexpr int kTileRows = 4;  // weight rows per tile
#if defined(__AVX512F__)
constexpr int kQuantToks = 3; // tokens per tile (quantized prefill)
#else
constexpr int kQuantToks = 2;
#endif

inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

// Per-thread scratch that grows and is freed with its thread. A local type
// (internal linkage) rather than std::vector / std::unique_ptr: see above.
struct AlignedBytes {
    uint8_t* p = nullptr;
    size_t cap = 0;
    uint8_t* get(size_t n) {
        if (cap < n) {
            ::operator delete(p, std::align_val_t(64));
            p = static_cast<uint8_t*>(::operator new(n, std::align_val_t(64)));
            cap = n;
        }
        return p;
    }
    ~AlignedBytes() { ::operator delete(p, std::align_val_t(64)); }
};

// Decode streams every weight once from DRAM in short strided runs (a few
// rows side by side); the hardware prefetcher alone leaves the kernels waiting
// on memory, so each loop asks for the bytes it will need a little later:
// single-row kernels 8 KiB ahead, kernels that walk R rows side by side the
// same position in the next group of R rows (R * row bytes ahead). Measured
// on the dev machine, one core, 64k x 3072 matrices: Q8_0 4-row decode
// 9.9 GB/s with a fixed 8 KiB distance, 13 GB/s one group ahead; Q4_0 from
// 5-6 to 8-11 GB/s. Rows of a thread's range are contiguous, so running past
// the last row only prefetches a few lines too many. Rows decoded one after
// another (DecodeWalk, cpu_features.h) are the exception: one long stream per
// thread that the hardware follows, faster without (rows_float, rows_quant).
constexpr size_t kPrefetchAhead = 8192;
inline void prefetch_ahead(const void* p, size_t distance = kPrefetchAhead) {
    _mm_prefetch(static_cast<const char*>(p) + distance, _MM_HINT_T0);
}

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
        constexpr int64_t kElem = T == DType::F32 ? 4 : 2;  // bytes per weight
        // R rows of one token side by side: one prefetch per 64-byte line of each, a group ahead
        // (a single row is one stream the hardware prefetchers follow on their own)
        if (N == 1 && R > 1 && (k * kElem) % 64 == 0)
            for (int r = 0; r < R; ++r) prefetch_ahead(w + r * ws + k * kElem, R * ws);
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
    // an explicit fma: the compiler may not contract a * b + c one way here and
    // another in a tile of another shape (a token's result must not depend on N)
    for (; k < K; ++k)
        for (int r = 0; r < R; ++r)
            for (int t = 0; t < N; ++t) out[r][t] = std::fma(load_w1<T>(w + r * ws, k), x[t * xs + k], out[r][t]);
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
inline int token_block(int64_t row_bytes_x, int n, int tile_toks) {
    int64_t tb = (512 * 1024) / (row_bytes_x > 0 ? row_bytes_x : 1);
    tb = tb < tile_toks ? tile_toks : tb - tb % tile_toks;
    return static_cast<int>(min_i64(tb, n));
}

// Several tokens share each weight load, with the one-token kernels'
// accumulation (U = 2 for a group of 4 rows, 4 for the rows after the last
// group), so a token's result does not depend on the other tokens of the call
// (batches of sequences rely on it); n >= 8 normally goes to the GEMM.
#if defined(__AVX512F__)
constexpr int kFloatRowToks = 2;  // 4 rows x 2 tokens x U 2 = 16 of 32 registers accumulate
#else
constexpr int kFloatRowToks = 1;  // 16 registers: one token at a time, the weights from L1
#endif

template <DType T>
void rows_float(const MatmulArgs& a, int64_t r0, int64_t r1) {
    if (a.n == 1) {
        // Decode: four rows side by side, or one row after another where the CPU reads a
        // single stream faster (DecodeWalk; llama.cpp's ggml_vec_dot_f16 reads a row at a
        // time). Each row keeps the accumulation the n > 1 path below gives it (U = 2 where it
        // falls in a group of 4, U = 4 after the last group), so a token's result does not
        // depend on the other tokens of the call.
        const int64_t grouped = r0 + (r1 - r0) / 4 * 4;
        if (a.walk.one_stream)
            for (int64_t r = r0; r < grouped; ++r) float_tile_store<T, 1, 1, 2>(a, r, 0);
        else
            for (int64_t r = r0; r < grouped; r += 4) float_tile_store<T, 4, 1, 2>(a, r, 0);
        for (int64_t r = grouped; r < r1; ++r) float_tile_store<T, 1, 1, 4>(a, r, 0);
        return;
    }
    constexpr int N = kFloatRowToks;
    const int tb = token_block(static_cast<int64_t>(a.x_stride), a.n, N);
    for (int t0 = 0; t0 < a.n; t0 += tb) {
        const int t1 = static_cast<int>(min_i64(a.n, t0 + tb));
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) {
            int t = t0;
            for (; t + N <= t1; t += N) float_tile_store<T, 4, N, 2>(a, r, t);
            for (; t < t1; ++t) float_tile_store<T, 4, 1, 2>(a, r, t);
        }
        for (; r < r1; ++r) {
            int t = t0;
            for (; t + N <= t1; t += N) float_tile_store<T, 1, N, 4>(a, r, t);
            for (; t < t1; ++t) float_tile_store<T, 1, 1, 4>(a, r, t);
        }
    }
}

// ------------------------------------------------------------ quantized weights
using namespace phi::quant;

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

// Sum of 32 int8 products w[i] * y[i] as 8 int32 lanes (lane order is
// irrelevant: only the total is used). maddubs wants unsigned x signed, so the
// sign of w moves onto y; VNNI fuses the multiply-add chain.
inline __m256i dot_i8(__m256i w, __m256i y) {
    const __m256i aw = _mm256_sign_epi8(w, w);
    const __m256i sy = _mm256_sign_epi8(y, w);
#if defined(PHI_DPBUSD256)
    return PHI_DPBUSD256(_mm256_setzero_si256(), aw, sy);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sy), _mm256_set1_epi16(1));
#endif
}
// Same for w already unsigned (0..127).
inline __m256i dot_u8(__m256i u, __m256i y) {
#if defined(PHI_DPBUSD256)
    return PHI_DPBUSD256(_mm256_setzero_si256(), u, y);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1));
#endif
}

// 16 packed bytes -> 32 nibbles in element order (low nibbles are elements
// 0..15, high nibbles 16..31), as unsigned bytes 0..15.
inline __m256i nibbles_32(const uint8_t* qs) {
    const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
}

// 32 bits -> 32 bytes, 0xFF where the bit is set.
inline __m256i bits_to_bytes(uint32_t bits) {
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), shuf);
    const __m256i mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    b = _mm256_or_si256(b, mask);
    return _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1));
}

// Legacy formats: one 32-element block -> 32 int8 weights, the block scale,
// and (for the _1 formats) the min. kSigned: weights are signed (use dot_i8);
// otherwise unsigned and the activation is Q8_1 (whose s = d * sum(q) carries
// the min term).
struct LegacyQ8_0 {
    using Block = BlockQ8_0;
    using Act = BlockQ8_0;
    static constexpr bool kSigned = true;
    static __m256i load(const Block& b) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)); }
};
struct LegacyQ4_0 {
    using Block = BlockQ4_0;
    using Act = BlockQ8_0;
    static constexpr bool kSigned = true;
    static __m256i load(const Block& b) { return _mm256_sub_epi8(nibbles_32(b.qs), _mm256_set1_epi8(8)); }
};
struct LegacyQ5_0 {
    using Block = BlockQ5_0;
    using Act = BlockQ8_0;
    static constexpr bool kSigned = true;
    static __m256i load(const Block& b) {
        uint32_t qh;
        std::memcpy(&qh, b.qh, 4);
        const __m256i hi = _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10));
        return _mm256_sub_epi8(_mm256_or_si256(nibbles_32(b.qs), hi), _mm256_set1_epi8(16));
    }
};
// The 16 IQ4_NL levels in both 128-bit lanes (for byte shuffles by nibble).
inline __m256i iq4nl_table() {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kValuesIQ4NL)));
}
struct LegacyIQ4_NL {
    using Block = BlockIQ4_NL;
    using Act = BlockQ8_0;
    static constexpr bool kSigned = true;
    static __m256i load(const Block& b) { return _mm256_shuffle_epi8(iq4nl_table(), nibbles_32(b.qs)); }
};
struct LegacyQ4_1 {
    using Block = BlockQ4_1;
    using Act = BlockQ8_1;
    static constexpr bool kSigned = false;
    static __m256i load(const Block& b) { return nibbles_32(b.qs); }
};
struct LegacyQ5_1 {
    using Block = BlockQ5_1;
    using Act = BlockQ8_1;
    static constexpr bool kSigned = false;
    static __m256i load(const Block& b) {
        uint32_t qh;
        std::memcpy(&qh, b.qh, 4);
        return _mm256_or_si256(nibbles_32(b.qs), _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10)));
    }
};

template <class B> inline float min_of(const B&) { return 0.0f; }
inline float min_of(const BlockQ4_1& b) { return h2f(b.m); }
inline float min_of(const BlockQ5_1& b) { return h2f(b.m); }
template <class A> inline float sum_of(const A&) { return 0.0f; }
inline float sum_of(const BlockQ8_1& a) { return h2f(a.s); }

// R rows x N tokens of a legacy format: each weight block is unpacked once
// and multiplied with the matching block of N tokens.
template <class F, int R, int N>
inline void legacy_tile(const MatmulArgs& a, int64_t r, int t) {
    using Block = typename F::Block;
    using Act = typename F::Act;
    const int64_t nb = a.K / QK;
    __m256 acc[R][N];
    float macc[R][N];
    for (int i = 0; i < R; ++i)
        for (int j = 0; j < N; ++j) {
            acc[i][j] = _mm256_setzero_ps();
            macc[i][j] = 0.0f;
        }
    const Block* wr[R];
    const Act* xr[N];
    for (int i = 0; i < R; ++i) wr[i] = reinterpret_cast<const Block*>(a.w + (r + i) * a.w_stride);
    for (int j = 0; j < N; ++j) xr[j] = reinterpret_cast<const Act*>(a.x + (t + j) * a.x_stride);
    for (int64_t ib = 0; ib < nb; ++ib) {
        if (N == 1 && R > 1)  // decode's rows side by side: each row's block a group ahead
            for (int i = 0; i < R; ++i) prefetch_ahead(wr[i] + ib, R * a.w_stride);
        float dx[N];
        __m256i y[N];
        for (int j = 0; j < N; ++j) {
            dx[j] = h2f(xr[j][ib].d);
            y[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr[j][ib].qs));
        }
        for (int i = 0; i < R; ++i) {
            const Block& b = wr[i][ib];
            const __m256i w = F::load(b);
            const float dw = h2f(b.d);
            for (int j = 0; j < N; ++j) {
                const __m256i p = F::kSigned ? dot_i8(w, y[j]) : dot_u8(w, y[j]);
                acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * dx[j]), acc[i][j]);
                if (!F::kSigned) macc[i][j] += min_of(b) * sum_of(xr[j][ib]);
            }
        }
    }
    for (int i = 0; i < R; ++i) {
        const float bias = a.bias ? a.bias[r + i] : 0.0f;
        for (int j = 0; j < N; ++j) a.y[(t + j) * a.ldy + r + i] = hsum(acc[i][j]) + macc[i][j] + bias;
    }
}

// ---- K-quants. A super-block is 8 vectors of 32 unsigned quants u; with
// 16-element group scales sc[g], an offset `off` and group mins m[g]:
//   x = d * sc[g] * (u - off) - dmin * m[g]
// so against Q8_K (dy, qy, bsums[g] = sum of qy over g):
//   dot = dy * (d * (sum_g sc[g] * sum(u * qy) - off * sum_g sc[g] * bsums[g]) - dmin * sum_g m[g] * bsums[g])
struct KPrep {
    float d, dmin;
    alignas(32) int16_t sc[16];   // per 16-element group
    alignas(32) int16_t off[16];  // off * sc[g]
    alignas(32) int16_t mn[16];   // m[g]
};

inline __m256i group_scales(const KPrep& p, int v) {  // vector v covers groups 2v, 2v+1
    return _mm256_set_m128i(_mm_set1_epi16(p.sc[2 * v + 1]), _mm_set1_epi16(p.sc[2 * v]));
}

inline void store16(int16_t* dst, __m256i v) { _mm256_store_si256(reinterpret_cast<__m256i*>(dst), v); }

// 8 unsigned bytes, one per 32-element sub-block (the low 8 bytes of v) -> 16
// int16, one per 16-group.
inline __m256i per_group_u8x8(__m128i v) { return _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(v, v)); }

// Each byte of v masked by `low_bits`, or'ed with its high nibble masked by
// `high_nibble` (the packed scales' bytes that hold a value in either half).
inline __m128i low_or_high_nibble(__m128i v, __m128i low_bits, __m128i high_nibble) {
    return _mm_or_si128(_mm_and_si128(v, low_bits), _mm_and_si128(_mm_srli_epi16(v, 4), high_nibble));
}

// Q4_K/Q5_K: the 12 packed bytes -> scales (bytes 0..7) and mins (bytes 8..15),
// get_scale_min_k4's values, by byte shuffles in a register (the scalar mask
// steps and their round trip through memory were a third of a Q4_K decode's
// instructions). Packed: bytes 0-3 the low 6 bits of sc[0..3], 4-7 those of
// m[0..3], 8-11 the low nibbles of sc[4..7] and (high nibbles) of m[4..7]; the
// top 2 bits of bytes 0-3 and 4-7 the high bits of sc[4..7] and m[4..7].
// The 16-byte load reads 4 bytes past the scales, inside the block (its
// quants follow).
inline __m128i scale_min_k4(const uint8_t* packed) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
    const __m128i low = low_or_high_nibble(
        _mm_shuffle_epi8(q, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11)),
        _mm_setr_epi8(0x3F, 0x3F, 0x3F, 0x3F, 0x0F, 0x0F, 0x0F, 0x0F, 0x3F, 0x3F, 0x3F, 0x3F, 0, 0, 0, 0),
        _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0F, 0x0F, 0x0F, 0x0F));
    const __m128i hi = _mm_shuffle_epi8(q, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
    return _mm_or_si128(low, _mm_and_si128(_mm_srli_epi16(hi, 2), _mm_set1_epi8(0x30)));  // (top 2 bits) << 4
}

inline void prep_k4(const uint8_t* packed, uint16_t d, uint16_t dmin, KPrep* p) {
    p->d = h2f(d);
    p->dmin = h2f(dmin);
    const __m128i sm = scale_min_k4(packed);
    store16(p->sc, per_group_u8x8(sm));
    store16(p->mn, per_group_u8x8(_mm_unpackhi_epi64(sm, sm)));
}

struct KQ4 {
    using Block = BlockQ4_K;
    static constexpr bool kMins = true;
    static constexpr bool kOffset = false;
    static void prep(const Block& b, KPrep* p) { prep_k4(b.scales, b.d, b.dmin, p); }
    // vector v: 64-element chunk v/2, low nibbles for even v, high for odd
    static __m256i unpack(const Block& b, int v) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * (v / 2)));
        return _mm256_and_si256(v % 2 ? _mm256_srli_epi16(q, 4) : q, _mm256_set1_epi8(0x0F));
    }
};

struct KQ5 {
    using Block = BlockQ5_K;
    static constexpr bool kMins = true;
    static constexpr bool kOffset = false;
    static void prep(const Block& b, KPrep* p) { prep_k4(b.scales, b.d, b.dmin, p); }
    static __m256i unpack(const Block& b, int v) {  // bit 4 of element e: bit e/32 of qh[e%32]
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * (v / 2)));
        const __m256i lo = _mm256_and_si256(v % 2 ? _mm256_srli_epi16(q, 4) : q, _mm256_set1_epi8(0x0F));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh));
        const __m256i bit = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(v)), _mm256_set1_epi8(1));
        return _mm256_or_si256(lo, _mm256_slli_epi16(bit, 4));
    }
};

struct KQ6 {
    using Block = BlockQ6_K;
    static constexpr bool kMins = false;
    static constexpr bool kOffset = true;
    static void prep(const Block& b, KPrep* p) {
        p->d = h2f(b.d);
        const __m256i sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)));
        store16(p->sc, sc);
        store16(p->off, _mm256_slli_epi16(sc, 5));  // 32 * sc
    }
    // half h = v/4; k = v%4: low nibbles of ql[64h + 32(k%2)...] for k < 2,
    // high nibbles for k >= 2; high 2 bits = bits 2k..2k+1 of qh[32h..].
    static __m256i unpack(const Block& b, int v) {
        const int h = v / 4, k = v % 4;
        const __m256i ql = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * h + 32 * (k % 2)));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * h));
        const __m256i lo = _mm256_and_si256(k >= 2 ? _mm256_srli_epi16(ql, 4) : ql, _mm256_set1_epi8(0x0F));
        const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k)), _mm256_set1_epi8(3));
        return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
    }
};

struct KQ3 {
    using Block = BlockQ3_K;
    static constexpr bool kMins = false;
    static constexpr bool kOffset = true;
    static void prep(const Block& b, KPrep* p) {
        // 16 6-bit scales: low nibbles in bytes 0..7, high 2 bits in bytes 8..11
        constexpr uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
        uint32_t a[4];
        std::memcpy(a, b.scales, 12);
        const uint32_t tmp = a[2];
        a[2] = ((a[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
        a[3] = ((a[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
        a[0] = (a[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
        a[1] = (a[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
        p->d = h2f(b.d);
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a));
        const __m256i sc = _mm256_sub_epi16(_mm256_cvtepu8_epi16(raw), _mm256_set1_epi16(32));
        store16(p->sc, sc);
        store16(p->off, _mm256_slli_epi16(sc, 2));  // 4 * sc
    }
    // u = 2 low bits | hmask bit << 2, in 0..7; value u - 4
    static __m256i unpack(const Block& b, int v) {
        const int half = v / 4, k = v % 4;
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * half));
        const __m256i lo = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * k)), _mm256_set1_epi8(3));
        const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.hmask));
        const __m256i bit = _mm256_and_si256(_mm256_srl_epi16(hm, _mm_cvtsi32_si128(v)), _mm256_set1_epi8(1));
        return _mm256_or_si256(lo, _mm256_slli_epi16(bit, 2));
    }
};

struct KQ2 {
    using Block = BlockQ2_K;
    static constexpr bool kMins = true;
    static constexpr bool kOffset = false;
    static void prep(const Block& b, KPrep* p) {
        p->d = h2f(b.d);
        p->dmin = h2f(b.dmin);
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales));
        const __m128i lo = _mm_and_si128(raw, _mm_set1_epi8(0x0F));
        const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0F));
        store16(p->sc, _mm256_cvtepu8_epi16(lo));
        store16(p->mn, _mm256_cvtepu8_epi16(hi));
    }
    static __m256i unpack(const Block& b, int v) {
        const int half = v / 4, k = v % 4;
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * half));
        return _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * k)), _mm256_set1_epi8(3));
    }
};

template <class F, int R, int N>
inline void kquant_tile(const MatmulArgs& a, int64_t r, int t) {
    using Block = typename F::Block;
    const int64_t nb = a.K / QK_K;
    __m256 acc[R][N];
    for (int i = 0; i < R; ++i)
        for (int j = 0; j < N; ++j) acc[i][j] = _mm256_setzero_ps();
    const Block* wr[R];
    const BlockQ8_K* xr[N];
    for (int i = 0; i < R; ++i) wr[i] = reinterpret_cast<const Block*>(a.w + (r + i) * a.w_stride);
    for (int j = 0; j < N; ++j) xr[j] = reinterpret_cast<const BlockQ8_K*>(a.x + (t + j) * a.x_stride);
    KPrep p;
    for (int64_t ib = 0; ib < nb; ++ib) {
        for (int i = 0; i < R; ++i) {
            const Block& b = wr[i][ib];
            F::prep(b, &p);
            __m256i sumi[N];
            for (int j = 0; j < N; ++j) sumi[j] = _mm256_setzero_si256();
            for (int v = 0; v < 8; ++v) {
                const __m256i u = F::unpack(b, v);
                const __m256i sc = group_scales(p, v);
                for (int j = 0; j < N; ++j) {
                    const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr[j][ib].qs + 32 * v));
                    sumi[j] = _mm256_add_epi32(sumi[j], _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), sc));
                }
            }
            const __m256i off = F::kOffset ? _mm256_load_si256(reinterpret_cast<const __m256i*>(p.off)) : __m256i{};
            const __m256i mn = F::kMins ? _mm256_load_si256(reinterpret_cast<const __m256i*>(p.mn)) : __m256i{};
            for (int j = 0; j < N; ++j) {
                const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr[j][ib].bsums));
                const __m256i s = F::kOffset ? _mm256_sub_epi32(sumi[j], _mm256_madd_epi16(bs, off)) : sumi[j];
                const float dy = xr[j][ib].d;
                acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(p.d * dy), acc[i][j]);
                if (F::kMins)
                    acc[i][j] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mn)),
                                                 _mm256_set1_ps(p.dmin * dy), acc[i][j]);
            }
        }
    }
    for (int i = 0; i < R; ++i) {
        const float bias = a.bias ? a.bias[r + i] : 0.0f;
        for (int j = 0; j < N; ++j) a.y[(t + j) * a.ldy + r + i] = hsum(acc[i][j]) + bias;
    }
}

// ---- Decode (one token) K-quant dot products. The generic kquant_tile above
// widens the group scales through memory; these keep them in a register and
// pick each group's scale with one byte shuffle, which roughly halves the
// instructions per weight byte (decode is compute-bound for 4-6 bit weights on
// two cores).

// pshufb pattern selecting int16 lane i of each 128-bit half in all 8 lanes.
inline __m256i lane16_pattern(int lo, int hi) {
    return _mm256_setr_epi8(2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1,
                            2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1,
                            2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1,
                            2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1);
}

inline float hsum128(__m128 s) {
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// The activations' code sums per 32-element sub-block (8 int16) of a Q8_K block.
inline __m128i q8_K_sub_block_sums(const BlockQ8_K& y) {
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.bsums));
    return _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
}

// A Q4_K block's start, shared by both widths: prefetch, the mins against the
// activations' sub-block sums bs8 (into acc_m), and the 8 sub-block scales as
// int16. dy: the activations' scale; the block's d times dy is returned in dd.
inline __m128i q4_K_block_start(const BlockQ4_K& b, float dy, __m128i bs8, __m128& acc_m, float& dd) {
    prefetch_ahead(&b);
    prefetch_ahead(b.qs + 64);
    const __m128i sm = scale_min_k4(b.scales);
    uint32_t d2;  // d, dmin: one conversion for both
    std::memcpy(&d2, &b.d, 4);
    static_assert(offsetof(BlockQ4_K, dmin) == offsetof(BlockQ4_K, d) + 2, "d, dmin adjacent");
    const __m128 dm = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(d2))), _mm_set1_ps(dy));
    dd = _mm_cvtss_f32(dm);
    const __m128i mins = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(sm, sm));
    acc_m = _mm_fmadd_ps(_mm_permute_ps(dm, 0x55), _mm_cvtepi32_ps(_mm_madd_epi16(mins, bs8)), acc_m);
    return _mm_cvtepu8_epi16(sm);
}

// Q4_K: x = d * sc[s] * u - dmin * m[s] per 32-element sub-block s.
inline float dot1_q4_K(const BlockQ4_K* w, const BlockQ8_K* y, int64_t nb) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
        const BlockQ4_K& b = w[ib];
        float dd;
        const __m256i scales =
            _mm256_broadcastsi128_si256(q4_K_block_start(b, y[ib].d, q8_K_sub_block_sums(y[ib]), acc_m, dd));
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < 4; ++j) {  // 64 elements: sub-blocks 2j (low nibbles) and 2j+1 (high)
            const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * j));
            const __m256i lo = _mm256_and_si256(q, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            const __m256i y0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[ib].qs + 64 * j));
            const __m256i y1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[ib].qs + 64 * j + 32));
            const __m256i s0 = _mm256_shuffle_epi8(scales, lane16_pattern(2 * j, 2 * j));
            const __m256i s1 = _mm256_shuffle_epi8(scales, lane16_pattern(2 * j + 1, 2 * j + 1));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s0, _mm256_maddubs_epi16(lo, y0)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s1, _mm256_maddubs_epi16(hi, y1)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum(acc) - hsum128(acc_m);
}

// Every line a block of `bytes` touches, prefetched ahead.
inline void prefetch_block(const void* p, size_t bytes) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    for (size_t o = 0; o < bytes; o += 64) prefetch_ahead(b + o);
    prefetch_ahead(b + bytes - 1);
}

// A Q5_K block's end, shared by both widths: the tile's float work on the eight
// lane sums, the mins (bytes 8-15 of sm) against the activations' 16 group
// sums, one FMA, one FNMADD.
inline __m256 q5_K_block_end(__m256 acc, __m256i sumi, __m128i sm, const BlockQ5_K& b, const BlockQ8_K& y) {
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.bsums));
    const __m256i mins = _mm256_madd_epi16(bs, per_group_u8x8(_mm_unpackhi_epi64(sm, sm)));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(h2f(b.d) * y.d), acc);
    return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_set1_ps(h2f(b.dmin) * y.d), acc);
}

// Q5_K: Q4_K's nibbles with a fifth bit from qh (bit s of qh[l] for element l
// of sub-block s), and the few-token tile's arithmetic per block (scales and
// mins per 16-group, one FMA and one FNMADD into eight lanes), so decode keeps
// the tile's bits (Q5_K is token-invariant); the scales stay in a register,
// and qh is shifted once for each pair of sub-blocks.
inline float dot1_q5_K(const BlockQ5_K* w, const BlockQ8_K* y, int64_t nb) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), bit0 = _mm256_set1_epi8(1), bit1 = _mm256_set1_epi8(2);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
        const BlockQ5_K& b = w[ib];
        prefetch_block(&b, sizeof(b));
        const __m128i sm = scale_min_k4(b.scales);
        const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh));
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < 4; ++j) {  // 64 elements: sub-blocks 2j (low nibbles) and 2j+1 (high)
            const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * j));
            const __m256i h = _mm256_srli_epi16(qh, 2 * j);  // (bit 0 of each byte: bit 2j of its qh byte)
            const __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), _mm256_slli_epi16(_mm256_and_si256(h, bit0), 4));
            const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                                               _mm256_slli_epi16(_mm256_and_si256(h, bit1), 3));
            const __m256i y0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[ib].qs + 64 * j));
            const __m256i y1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[ib].qs + 64 * j + 32));
            const __m256i s0 = _mm256_shuffle_epi8(scales, lane16_pattern(2 * j, 2 * j));
            const __m256i s1 = _mm256_shuffle_epi8(scales, lane16_pattern(2 * j + 1, 2 * j + 1));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s0, _mm256_maddubs_epi16(lo, y0)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s1, _mm256_maddubs_epi16(hi, y1)));
        }
        acc = q5_K_block_end(acc, sumi, sm, b, y[ib]);
    }
    return hsum(acc);
}

// Q3_K's 16 6-bit scales (KQ3::prep's values, minus 32) from the 12 packed
// bytes: low nibbles of bytes 0-7 are scales 0-7 and their high nibbles 8-15;
// bits 2g..2g+1 of bytes 8-11 are the top bits of scales 4g..4g+3. `at4`
// points 4 bytes before the scales (a 16-byte load that stays in the block).
inline __m256i q3_K_scales(const uint8_t* at4) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(at4));
    const __m128i low = low_or_high_nibble(
        _mm_shuffle_epi8(q, _mm_setr_epi8(4, 5, 6, 7, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11)),
        _mm_setr_epi8(15, 15, 15, 15, 15, 15, 15, 15, 0, 0, 0, 0, 0, 0, 0, 0),
        _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15, 15, 15, 15, 15));
    const __m128i hi = _mm_shuffle_epi8(q, _mm_setr_epi8(12, 13, 14, 15, 12, 13, 14, 15, 12, 13, 14, 15, 12, 13, 14, 15));
    // bits 2g..2g+1 of each byte to bits 6-7 by a 16-bit multiply (what spills into the
    // byte above lands below its bits 6-7), then to 4-5
    const __m128i top = _mm_mullo_epi16(hi, _mm_setr_epi16(64, 64, 16, 16, 4, 4, 1, 1));
    const __m128i sc = _mm_or_si128(low, _mm_and_si128(_mm_srli_epi16(top, 2), _mm_set1_epi8(0x30)));
    return _mm256_sub_epi16(_mm256_cvtepu8_epi16(sc), _mm256_set1_epi16(32));
}

// Q2_K's and Q3_K's block scales and ends, shared by both widths: the tile's
// float work on the eight lane sums (Q2_K: the mins against the activations'
// 16 group sums; Q3_K: the offset, 4 * sc[g] * bsums[g]), then one FMA (and
// for Q2_K one FNMADD).
inline void q2_K_scales(const BlockQ2_K& b, __m256i& sc16, __m256i& mn16) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales));
    sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(raw, _mm_set1_epi8(0x0F)));
    mn16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0F)));
}
inline __m256 q2_K_block_end(__m256 acc, __m256i sumi, __m256i mn16, const BlockQ2_K& b, const BlockQ8_K& y) {
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.bsums));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(h2f(b.d) * y.d), acc);
    return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mn16)), _mm256_set1_ps(h2f(b.dmin) * y.d), acc);
}
inline __m256 q3_K_block_end(__m256 acc, __m256i sumi, __m256i sc16, const BlockQ3_K& b, const BlockQ8_K& y) {
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.bsums));
    const __m256i s = _mm256_sub_epi32(sumi, _mm256_madd_epi16(bs, _mm256_slli_epi16(sc16, 2)));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(h2f(b.d) * y.d), acc);
}

// Q2_K and Q3_K (AVX2): the tile's vectors one at a time as it runs them, with
// the 16 group scales in two registers (groups 0-7 and 8-15 in both 128-bit
// lanes) picked by one shuffle a vector, both halves' qs loaded once, and the
// tile's arithmetic per block (see dot1_q2_K_wide).
template <class Codes>
inline __m256i kquant16_block_sums256(const BlockQ8_K& y, __m256i sc16, Codes codes) {
    const __m256i sc_half[2] = {_mm256_permute2x128_si256(sc16, sc16, 0x00), _mm256_permute2x128_si256(sc16, sc16, 0x11)};
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int v = 0; v < 8; v += 2) {
        const int h = v / 4, k = v % 4;
        const __m256i y0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.qs + 32 * v));
        const __m256i y1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.qs + 32 * v + 32));
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_shuffle_epi8(sc_half[h], lane16_pattern(2 * k, 2 * k + 1)),
                                                    _mm256_maddubs_epi16(codes(v), y0)));
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_shuffle_epi8(sc_half[h], lane16_pattern(2 * k + 2, 2 * k + 3)),
                                                    _mm256_maddubs_epi16(codes(v + 1), y1)));
    }
    return _mm256_add_epi32(s0, s1);
}

inline float dot1_q2_K(const BlockQ2_K* w, const BlockQ8_K* y, int64_t nb) {
    const __m256i m2 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
        const BlockQ2_K& b = w[ib];
        prefetch_block(&b, sizeof(b));
        __m256i sc16, mn16;
        q2_K_scales(b, sc16, mn16);
        const __m256i q[2] = {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)),
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32))};
        const __m256i sumi = kquant16_block_sums256(y[ib], sc16, [&](int v) {
            return _mm256_and_si256(_mm256_srli_epi16(q[v / 4], 2 * (v % 4)), m2);
        });
        acc = q2_K_block_end(acc, sumi, mn16, b, y[ib]);
    }
    return hsum(acc);
}

inline float dot1_q3_K(const BlockQ3_K* w, const BlockQ8_K* y, int64_t nb) {
    const __m256i m2 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
        const BlockQ3_K& b = w[ib];
        prefetch_block(&b, sizeof(b));
        static_assert(offsetof(BlockQ3_K, scales) >= 4, "the scales' load starts inside the block");
        const __m256i sc16 = q3_K_scales(b.scales - 4);
        const __m256i q[2] = {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)),
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32))};
        const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.hmask));
        const __m256i sumi = kquant16_block_sums256(y[ib], sc16, [&](int v) {
            const __m256i u = _mm256_and_si256(_mm256_srli_epi16(q[v / 4], 2 * (v % 4)), m2);
            // bit v of each hmask byte moved to bit 2 (the high bit's weight, 4) by one shift: within
            // a byte, as the mask keeps only bit 2
            const __m256i h = v < 2 ? _mm256_slli_epi16(hm, 2 - v) : _mm256_srli_epi16(hm, v - 2);
            return _mm256_or_si256(u, _mm256_and_si256(h, four));
        });
        acc = q3_K_block_end(acc, sumi, sc16, b, y[ib]);
    }
    return hsum(acc);
}

// A Q6_K block's start, shared by both widths: prefetch, its 16 group scales
// as int16 (sc16), and the -32 offset's integer sums, -32 * sc[g] * bsums[g]
// over the eight lanes the dot products accumulate in.
inline __m256i q6_K_block_start(const BlockQ6_K& b, const BlockQ8_K& y, __m256i& sc16) {
    prefetch_ahead(b.ql);
    prefetch_ahead(b.ql + 64);
    prefetch_ahead(b.qh);
    prefetch_ahead(b.qh + 63);
    sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)));
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.bsums));
    return _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5));
}

// Q6_K: x = d * sc[g] * (u - 32) per 16-element group g, u in 0..63.
inline float dot1_q6_K(const BlockQ6_K* w, const BlockQ8_K* y, int64_t nb) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
        const BlockQ6_K& b = w[ib];
        __m256i sc16;
        __m256i sumi = q6_K_block_start(b, y[ib], sc16);
        for (int h = 0; h < 2; ++h) {  // 128 elements each
            const __m256i scales = h ? _mm256_permute2x128_si256(sc16, sc16, 0x11) : _mm256_permute2x128_si256(sc16, sc16, 0x00);
            const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * h));
            const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * h));
            __m256i u[4];
            u[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
            u[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
            u[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
            u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
            for (int k = 0; k < 4; ++k) {  // vector k: groups 2k, 2k+1 of this half
                const __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[ib].qs + 128 * h + 32 * k));
                const __m256i sc = _mm256_shuffle_epi8(scales, lane16_pattern(2 * k, 2 * k + 1));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc, _mm256_maddubs_epi16(u[k], yv)));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y[ib].d * h2f(b.d)), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum(acc);
}

#if defined(__AVX512BW__)
// The same two dot products with 512-bit vectors: each holds the 32-element
// runs of two 64-element chunks of a block, so a block takes half the
// shuffles, maddubs and madds (the 256-bit kernels are compute-bound, ~40G
// weights/s a core on Zen 5, ~21 GB/s of Q4_K). The activations are regrouped
// once per call (a few KB per thread) into the order of the weight bytes
// (Regroup*), and the integer sums fold back onto the 256-bit kernels' eight
// lanes before the float work: the results are those of dot1_q4_K and
// dot1_q6_K to the bit (Q6_K's decode must equal its multi-token tile).

// pshufb pattern: 128-bit lane l of the result repeats int16 element i_l
// (constant arguments fold into one constant vector).
constexpr long long int16_pick(int i) {
    return static_cast<long long>((static_cast<uint64_t>(2 * i + 1) << 8 | static_cast<uint64_t>(2 * i)) *
                                  0x0001000100010001ull);
}
inline __m512i lane16_pattern512(int i0, int i1, int i2, int i3) {
    return _mm512_set_epi64(int16_pick(i3), int16_pick(i3), int16_pick(i2), int16_pick(i2), int16_pick(i1),
                            int16_pick(i1), int16_pick(i0), int16_pick(i0));
}
inline __m256i fold_halves(__m512i v) {
    return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

// Q4_K: 64 weight bytes hold sub-blocks 4i, 4i+2 (low nibbles of their two
// 32-byte halves) and 4i+1, 4i+3 (high nibbles); per block the regrouped
// codes are [y(0) y(2)] [y(1) y(3)] [y(4) y(6)] [y(5) y(7)], y(s) sub-block s,
// then the block's 8 sub-block code sums (int16), which every row's mins meet.
constexpr size_t kRegroupQ4_K = QK_K + 16;  // bytes a block
inline void regroup_q4_K(const BlockQ8_K* y, int64_t nb, int8_t* out) {
    static const int order[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    for (int64_t ib = 0; ib < nb; ++ib) {
        int8_t* o = out + kRegroupQ4_K * ib;
        for (int k = 0; k < 8; ++k) std::memcpy(o + 32 * k, y[ib].qs + 32 * order[k], 32);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o + QK_K), q8_K_sub_block_sums(y[ib]));
    }
}
inline float dot1_q4_K_wide(const BlockQ4_K* w, const BlockQ8_K* y, const int8_t* yw, int64_t nb) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i p_lo[2] = {lane16_pattern512(0, 0, 2, 2), lane16_pattern512(4, 4, 6, 6)};
    const __m512i p_hi[2] = {lane16_pattern512(1, 1, 3, 3), lane16_pattern512(5, 5, 7, 7)};
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
        const BlockQ4_K& b = w[ib];
        const int8_t* yb = yw + kRegroupQ4_K * ib;
        float dd;
        const __m128i bs8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(yb + QK_K));
        const __m512i scales = _mm512_broadcast_i32x4(q4_K_block_start(b, y[ib].d, bs8, acc_m, dd));
        // the scales meet the pair sums in vpdpwssd (AVX512-VNNI: madd and add in one, no
        // saturation): the same integers, a fifth fewer 512-bit operations
        __m512i sum_lo = _mm512_setzero_si512(), sum_hi = _mm512_setzero_si512();
        for (int i = 0; i < 2; ++i) {
            const __m512i q = _mm512_loadu_si512(b.qs + 64 * i);
            const __m512i lo = _mm512_and_si512(q, m4);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
            const __m512i y0 = _mm512_loadu_si512(yb + 128 * i);
            const __m512i y1 = _mm512_loadu_si512(yb + 128 * i + 64);
            const __m512i s0 = _mm512_shuffle_epi8(scales, p_lo[i]);
            const __m512i s1 = _mm512_shuffle_epi8(scales, p_hi[i]);
            sum_lo = _mm512_dpwssd_epi32(sum_lo, s0, _mm512_maddubs_epi16(lo, y0));
            sum_hi = _mm512_dpwssd_epi32(sum_hi, s1, _mm512_maddubs_epi16(hi, y1));
        }
        const __m512i sumi = _mm512_add_epi32(sum_lo, sum_hi);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(fold_halves(sumi)), acc);
    }
    return hsum(acc) - hsum128(acc_m);
}

// Q5_K: Q4_K's nibbles (the same regrouped codes) with a fifth bit from qh,
// bit s of qh[l] for element l of sub-block s, set by a masked byte add where
// a byte test finds it; the block's arithmetic is the few-token tile's
// (kquant_tile<KQ5>: scales and mins per 16-group, the mins against the
// activations' 16 group sums, one FMA and one FNMADD into eight lanes), so a
// token's decode gives its row's bits in a call of many (Q5_K is
// token-invariant). The tile widens the scales through memory and builds
// each vector's high bits by shifting qh (one Zen 4 core in cache: 14.9 -> 21.7 GB/s).
inline __m512i byte_bits512(int lo, int hi) {  // bytes 0-31: bit lo; 32-63: bit hi
    return _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(1 << lo)), _mm256_set1_epi8(static_cast<char>(1 << hi)), 1);
}
inline float dot1_q5_K_wide(const BlockQ5_K* w, const BlockQ8_K* y, const int8_t* yw, int64_t nb) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), bit4 = _mm512_set1_epi8(0x10);
    const __m512i p_lo[2] = {lane16_pattern512(0, 0, 2, 2), lane16_pattern512(4, 4, 6, 6)};
    const __m512i p_hi[2] = {lane16_pattern512(1, 1, 3, 3), lane16_pattern512(5, 5, 7, 7)};
    const __m512i t_lo[2] = {byte_bits512(0, 2), byte_bits512(4, 6)};
    const __m512i t_hi[2] = {byte_bits512(1, 3), byte_bits512(5, 7)};
    __m256 acc = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
        const BlockQ5_K& b = w[ib];
        prefetch_block(&b, sizeof(b));
        const int8_t* yb = yw + kRegroupQ4_K * ib;
        const __m128i sm = scale_min_k4(b.scales);
        const __m512i scales = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(sm));
        const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh)));
        __m512i sum_lo = _mm512_setzero_si512(), sum_hi = _mm512_setzero_si512();
        for (int i = 0; i < 2; ++i) {
            const __m512i q = _mm512_loadu_si512(b.qs + 64 * i);
            __m512i lo = _mm512_and_si512(q, m4);
            __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
            lo = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(qh, t_lo[i]), lo, bit4);
            hi = _mm512_mask_add_epi8(hi, _mm512_test_epi8_mask(qh, t_hi[i]), hi, bit4);
            const __m512i y0 = _mm512_loadu_si512(yb + 128 * i);
            const __m512i y1 = _mm512_loadu_si512(yb + 128 * i + 64);
            sum_lo = _mm512_dpwssd_epi32(sum_lo, _mm512_shuffle_epi8(scales, p_lo[i]), _mm512_maddubs_epi16(lo, y0));
            sum_hi = _mm512_dpwssd_epi32(sum_hi, _mm512_shuffle_epi8(scales, p_hi[i]), _mm512_maddubs_epi16(hi, y1));
        }
        acc = q5_K_block_end(acc, fold_halves(_mm512_add_epi32(sum_lo, sum_hi)), sm, b, y[ib]);
    }
    return hsum(acc);
}

// Q6_K: both 128-element halves of a block at once (half h in the upper 256
// bits); vector k holds elements 32k.. of each half, regrouped codes
// [y(32k..) y(128+32k..)] for k = 0..3.
inline void regroup_q6_K(const BlockQ8_K* y, int64_t nb, int8_t* out) {
    for (int64_t ib = 0; ib < nb; ++ib)
        for (int k = 0; k < 4; ++k) {
            std::memcpy(out + 256 * ib + 64 * k, y[ib].qs + 32 * k, 32);
            std::memcpy(out + 256 * ib + 64 * k + 32, y[ib].qs + 128 + 32 * k, 32);
        }
}
inline float dot1_q6_K_wide(const BlockQ6_K* w, const BlockQ8_K* y, const int8_t* yw, int64_t nb) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(3);
    __m512i pat[4];
    for (int k = 0; k < 4; ++k) pat[k] = lane16_pattern512(2 * k, 2 * k + 1, 2 * k, 2 * k + 1);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
        const BlockQ6_K& b = w[ib];
        __m256i sc16;
        const __m256i off = q6_K_block_start(b, y[ib], sc16);
        // scales of groups 0..7 in the lower 256 bits (half 0), 8..15 in the upper
        const __m512i z = _mm512_castsi256_si512(sc16);
        const __m512i scales = _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(1, 1, 0, 0));
        const __m512i a = _mm512_loadu_si512(b.ql), c = _mm512_loadu_si512(b.ql + 64);
        const __m512i ql0 = _mm512_shuffle_i64x2(a, c, _MM_SHUFFLE(1, 0, 1, 0));  // ql[0..31], ql[64..95]
        const __m512i ql1 = _mm512_shuffle_i64x2(a, c, _MM_SHUFFLE(3, 2, 3, 2));  // ql[32..63], ql[96..127]
        const __m512i qh = _mm512_loadu_si512(b.qh);
        __m512i u[4];
        u[0] = _mm512_or_si512(_mm512_and_si512(ql0, m4), _mm512_slli_epi16(_mm512_and_si512(qh, m2), 4));
        u[1] = _mm512_or_si512(_mm512_and_si512(ql1, m4),
                               _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh, 2), m2), 4));
        u[2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql0, 4), m4),
                               _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh, 4), m2), 4));
        u[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql1, 4), m4),
                               _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh, 6), m2), 4));
        const int8_t* yb = yw + 256 * ib;
        __m512i sumi = _mm512_setzero_si512();
        for (int k = 0; k < 4; ++k) {
            const __m512i yv = _mm512_loadu_si512(yb + 64 * k);
            const __m512i sc = _mm512_shuffle_epi8(scales, pat[k]);
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(sc, _mm512_maddubs_epi16(u[k], yv)));
        }
        const __m256i s = _mm256_add_epi32(off, fold_halves(sumi));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y[ib].d * h2f(b.d)), _mm256_cvtepi32_ps(s), acc);
    }
    return hsum(acc);
}
// Q2_K and Q3_K: 16 scales a block, one per 16 elements; code bits 2k..2k+1 of
// qs[32h + l] hold element l of vector 4h + k (the tile's vector v = 32
// elements, groups 2v and 2v+1). A 512-bit vector holds vectors k and 4 + k
// (both halves' qs shifted alike, so one load serves all four), against Q6_K's
// regrouped activations [y(32k..) y(128+32k..)]; vpermw spreads the four groups'
// scales over it. Per block the arithmetic is the few-token tile's
// (kquant_tile<KQ2 / KQ3>: both formats are token-invariant): the same integer
// lane sums, the offset or mins against the activations' 16 group sums, the
// same FMA / FNMADD into eight lanes. The tile widened the scales through
// memory and shifted every vector's bits on its own: Zen 4, one core in cache,
// Q3_K 5.3 and Q2_K 9.7 GB/s before.

// vpermw indices: int16 lanes 0-7 take scale 2k, 8-15 2k + 1, 16-23 8 + 2k, 24-31 9 + 2k
inline __m512i group_pick512(int k) {
    const __m256i lo = _mm256_set_m128i(_mm_set1_epi16(static_cast<short>(2 * k + 1)), _mm_set1_epi16(static_cast<short>(2 * k)));
    const __m256i hi = _mm256_set_m128i(_mm_set1_epi16(static_cast<short>(9 + 2 * k)), _mm_set1_epi16(static_cast<short>(8 + 2 * k)));
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// The integer sums of a Q2_K / Q3_K block's four 512-bit vectors u(k) (codes
// 0..7) with the regrouped activations, each group's scale from sc16, folded
// onto the tile's eight lanes.
template <class Codes>
inline __m256i kquant16_block_sums(const int8_t* yb, __m256i sc16, const __m512i (&pick)[4], Codes codes) {
    const __m512i sc = _mm512_castsi256_si512(sc16);
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    for (int k = 0; k < 4; k += 2) {
        s0 = _mm512_dpwssd_epi32(s0, _mm512_permutexvar_epi16(pick[k], sc),
                                 _mm512_maddubs_epi16(codes(k), _mm512_loadu_si512(yb + 64 * k)));
        s1 = _mm512_dpwssd_epi32(s1, _mm512_permutexvar_epi16(pick[k + 1], sc),
                                 _mm512_maddubs_epi16(codes(k + 1), _mm512_loadu_si512(yb + 64 * (k + 1))));
    }
    return fold_halves(_mm512_add_epi32(s0, s1));
}

inline float dot1_q2_K_wide(const BlockQ2_K* w, const BlockQ8_K* y, const int8_t* yw, int64_t nb) {
    const __m512i m2 = _mm512_set1_epi8(3);
    const __m512i pick[4] = {group_pick512(0), group_pick512(1), group_pick512(2), group_pick512(3)};
    __m256 acc = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
        const BlockQ2_K& b = w[ib];
        prefetch_block(&b, sizeof(b));
        __m256i sc16, mn16;
        q2_K_scales(b, sc16, mn16);
        const __m512i q = _mm512_loadu_si512(b.qs);
        const __m256i sumi = kquant16_block_sums(yw + QK_K * ib, sc16, pick, [&](int k) {
            return _mm512_and_si512(_mm512_srli_epi16(q, 2 * k), m2);
        });
        acc = q2_K_block_end(acc, sumi, mn16, b, y[ib]);
    }
    return hsum(acc);
}

inline float dot1_q3_K_wide(const BlockQ3_K* w, const BlockQ8_K* y, const int8_t* yw, int64_t nb) {
    const __m512i m2 = _mm512_set1_epi8(3), four = _mm512_set1_epi8(4);
    const __m512i pick[4] = {group_pick512(0), group_pick512(1), group_pick512(2), group_pick512(3)};
    const __m512i bits[4] = {byte_bits512(0, 4), byte_bits512(1, 5), byte_bits512(2, 6), byte_bits512(3, 7)};
    __m256 acc = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
        const BlockQ3_K& b = w[ib];
        prefetch_block(&b, sizeof(b));
        static_assert(offsetof(BlockQ3_K, scales) >= 4, "the scales' load starts inside the block");
        const __m256i sc16 = q3_K_scales(b.scales - 4);
        const __m512i q = _mm512_loadu_si512(b.qs);
        const __m512i hm = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.hmask)));
        const __m256i sumi = kquant16_block_sums(yw + QK_K * ib, sc16, pick, [&](int k) {
            const __m512i u = _mm512_and_si512(_mm512_srli_epi16(q, 2 * k), m2);
            return _mm512_mask_add_epi8(u, _mm512_test_epi8_mask(hm, bits[k]), u, four);
        });
        acc = q3_K_block_end(acc, sumi, sc16, b, y[ib]);
    }
    return hsum(acc);
}
#endif  // __AVX512BW__

// Q4_0 in the file's row layout (PHICPP_REPACK=0; repacked weights decode in
// q4_0_x8_x86_impl.h) and IQ4_NL against Q8_0, four rows at a time: the
// per-row integer sums of a block are folded into one 4-lane vector, so the
// block scales of the four rows are converted, multiplied and accumulated
// together (one FMA per four blocks instead of one per block).
//
// The two formats share a block layout (fp16 d, then 16 bytes: element i in
// the low nibble of byte i, element 16 + i in its high one) and differ in what
// a nibble q means: q - 8, or the level kValuesIQ4NL[q]. Nib4 says it, for a
// vector of 32 nibbles n against 32 activation codes y, with a correction c
// computed once per call from y alone:
//   one(n, y, one_c(y)) = the products' sums, 8 int32 lanes;
//   pair(lo, hi, ya, yb, pair_c(ya, yb)) = one(lo, ya) + one(hi, yb) in lanes.
struct Nib4Q4_0 {  // unsigned nibbles u = q + 8: sum(q*y) = sum(u*y) - 8*sum(y), c = 8*y per int16 pair
    using Block = BlockQ4_0;
    static __m256i one_c(__m256i y) { return _mm256_maddubs_epi16(_mm256_set1_epi8(8), y); }
    static __m256i pair_c(__m256i ya, __m256i yb) { return _mm256_add_epi16(one_c(ya), one_c(yb)); }
    static __m256i one(__m256i n, __m256i y, __m256i c) {
        return _mm256_madd_epi16(_mm256_sub_epi16(_mm256_maddubs_epi16(n, y), c), _mm256_set1_epi16(1));
    }
    // int16 lanes: |u * y| <= 15 * 128 twice per maddubs, four products: no overflow
    static __m256i pair(__m256i lo, __m256i hi, __m256i ya, __m256i yb, __m256i c) {
        return _mm256_madd_epi16(
            _mm256_sub_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo, ya), _mm256_maddubs_epi16(hi, yb)), c),
            _mm256_set1_epi16(1));
    }
};
#if defined(PHI_DPBUSD256)
// Levels + 128 (unsigned) in vpdpbusd, exact in int32 whatever the codes; c
// takes the 128 back off: -128 * the sum of each lane's four codes.
struct Nib4IQ4_NL {
    using Block = BlockIQ4_NL;
    static __m256i lifted(__m256i n) {  // (+ 128 is the sign bit flipped)
        return _mm256_shuffle_epi8(_mm256_xor_si256(iq4nl_table(), _mm256_set1_epi8(-128)), n);
    }
    static __m256i one_c(__m256i y) {
        const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(-128), y), _mm256_set1_epi16(1));
        return _mm256_sub_epi32(_mm256_setzero_si256(), s);
    }
    static __m256i pair_c(__m256i ya, __m256i yb) { return _mm256_add_epi32(one_c(ya), one_c(yb)); }
    static __m256i one(__m256i n, __m256i y, __m256i c) { return PHI_DPBUSD256(c, lifted(n), y); }
    static __m256i pair(__m256i lo, __m256i hi, __m256i ya, __m256i yb, __m256i c) {
        return PHI_DPBUSD256(PHI_DPBUSD256(c, lifted(lo), ya), lifted(hi), yb);
    }
};
#else
// The sign trick of dot_i8: |level| against the code with the level's sign
// (pairs of products at most 2 * 127 * 128 in int16), one madd per vector.
struct Nib4IQ4_NL {
    using Block = BlockIQ4_NL;
    static __m256i one_c(__m256i) { return _mm256_setzero_si256(); }
    static __m256i pair_c(__m256i, __m256i) { return _mm256_setzero_si256(); }
    static __m256i one(__m256i n, __m256i y, __m256i) { return dot_i8(_mm256_shuffle_epi8(iq4nl_table(), n), y); }
    static __m256i pair(__m256i lo, __m256i hi, __m256i ya, __m256i yb, __m256i c) {
        return _mm256_add_epi32(one(lo, ya, c), one(hi, yb, c));
    }
};
#endif
static_assert(sizeof(BlockQ4_0) == sizeof(BlockIQ4_NL) && offsetof(BlockIQ4_NL, qs) == offsetof(BlockQ4_0, qs),
              "Q4_0 and IQ4_NL blocks alike");

template <class Nib>
inline void dot4_nib4(const MatmulArgs& a, int64_t r, int64_t ib0, float out[4]) {
    using Block = typename Nib::Block;
    const auto* y = reinterpret_cast<const BlockQ8_0*>(a.x);
    const Block* w0 = reinterpret_cast<const Block*>(a.w + r * a.w_stride);
    const Block* w1 = reinterpret_cast<const Block*>(a.w + (r + 1) * a.w_stride);
    const Block* w2 = reinterpret_cast<const Block*>(a.w + (r + 2) * a.w_stride);
    const Block* w3 = reinterpret_cast<const Block*>(a.w + (r + 3) * a.w_stride);
    const int64_t nb = a.K / QK;
    __m128 acc = _mm_loadu_ps(out);
    const size_t group = 4 * a.w_stride;
    for (int64_t ib = ib0; ib < nb; ++ib) {
        prefetch_ahead(w0 + ib, group);
        prefetch_ahead(w1 + ib, group);
        prefetch_ahead(w2 + ib, group);
        prefetch_ahead(w3 + ib, group);
        const __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[ib].qs));
        const __m256i c = Nib::one_c(yv);  // once per block for all four rows
        const __m256i p0 = Nib::one(nibbles_32(w0[ib].qs), yv, c), p1 = Nib::one(nibbles_32(w1[ib].qs), yv, c);
        const __m256i p2 = Nib::one(nibbles_32(w2[ib].qs), yv, c), p3 = Nib::one(nibbles_32(w3[ib].qs), yv, c);
        const __m256i t = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
        const __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
        __m128i d16 = _mm_cvtsi32_si128(w0[ib].d | (static_cast<uint32_t>(w1[ib].d) << 16));
        d16 = _mm_insert_epi32(d16, static_cast<int>(w2[ib].d | (static_cast<uint32_t>(w3[ib].d) << 16)), 1);
        const __m128 d4 = _mm_mul_ps(_mm_cvtph_ps(d16), _mm_set1_ps(h2f(y[ib].d)));
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(s4), d4, acc);
    }
    _mm_storeu_ps(out, acc);
}

// Two blocks at a time: the 16 packed bytes of blocks 2p and 2p+1 of a row
// fill one register, so one AND / shift pair unpacks 64 weights. The
// activations are rearranged to match once per call (Nib4PairAct), and the
// integer sums of 4 rows x 2 blocks fold into one 8-lane vector that meets
// the 8 block scales (one conversion of 8 fp16 values) in one FMA.
struct Nib4PairAct {
    __m256i ya;  // qs[0..15] of block 2p | qs[0..15] of block 2p+1 (the low nibbles' partners)
    __m256i yb;  // qs[16..31] of both blocks (the high nibbles' partners)
    __m256i c;   // the format's correction, Nib::pair_c(ya, yb)
    __m256 dy;   // d of block 2p in lanes 0-3, of block 2p+1 in lanes 4-7
};

template <class Nib>
inline void prep_nib4_pairs(const BlockQ8_0* y, int64_t npairs, Nib4PairAct* out) {
    for (int64_t p = 0; p < npairs; ++p) {
        const BlockQ8_0& e = y[2 * p];
        const BlockQ8_0& o = y[2 * p + 1];
        const __m128i* eq = reinterpret_cast<const __m128i*>(e.qs);
        const __m128i* oq = reinterpret_cast<const __m128i*>(o.qs);
        Nib4PairAct& q = out[p];
        q.ya = _mm256_set_m128i(_mm_loadu_si128(oq), _mm_loadu_si128(eq));
        q.yb = _mm256_set_m128i(_mm_loadu_si128(oq + 1), _mm_loadu_si128(eq + 1));
        q.c = Nib::pair_c(q.ya, q.yb);
        q.dy = _mm256_set_m128(_mm_set1_ps(h2f(o.d)), _mm_set1_ps(h2f(e.d)));
    }
}

template <class Block>
inline uint64_t four_d(const Block* w0, const Block* w1, const Block* w2, const Block* w3, int64_t ib) {
    return w0[ib].d | (static_cast<uint64_t>(w1[ib].d) << 16) | (static_cast<uint64_t>(w2[ib].d) << 32) |
           (static_cast<uint64_t>(w3[ib].d) << 48);
}

// The lane sums of blocks 2p (lanes 0-3) and 2p+1 (lanes 4-7) of row w: their
// 16 packed bytes in one register, one AND / shift pair for 64 weights.
template <class Nib>
inline __m256i nib4_pair_sums(const typename Nib::Block* w, int64_t p, const Nib4PairAct& P) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i q = _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[2 * p + 1].qs)),
                                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[2 * p].qs)));
    return Nib::pair(_mm256_and_si256(q, m4), _mm256_and_si256(_mm256_srli_epi16(q, 4), m4), P.ya, P.yb, P.c);
}

template <class Nib>
inline void dot4_nib4_pairs(const MatmulArgs& a, int64_t r, const Nib4PairAct* pa, int64_t npairs, float out[4]) {
    using Block = typename Nib::Block;
    const Block* w0 = reinterpret_cast<const Block*>(a.w + r * a.w_stride);
    const Block* w1 = reinterpret_cast<const Block*>(a.w + (r + 1) * a.w_stride);
    const Block* w2 = reinterpret_cast<const Block*>(a.w + (r + 2) * a.w_stride);
    const Block* w3 = reinterpret_cast<const Block*>(a.w + (r + 3) * a.w_stride);
    const size_t group = 4 * a.w_stride;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t p = 0; p < npairs; ++p) {
        const Nib4PairAct& P = pa[p];
        auto pair_sums = [&](const Block* w) { return nib4_pair_sums<Nib>(w, p, P); };
        prefetch_ahead(w0 + 2 * p, group);
        prefetch_ahead(w1 + 2 * p, group);
        prefetch_ahead(w2 + 2 * p, group);
        prefetch_ahead(w3 + 2 * p, group);
        const __m256i p0 = pair_sums(w0), p1 = pair_sums(w1), p2 = pair_sums(w2), p3 = pair_sums(w3);
        // lanes: rows 0..3 of block 2p | rows 0..3 of block 2p+1
        const __m256i t = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
        const __m128i d16 = _mm_set_epi64x(static_cast<long long>(four_d(w0, w1, w2, w3, 2 * p + 1)),
                                           static_cast<long long>(four_d(w0, w1, w2, w3, 2 * p)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), _mm256_mul_ps(_mm256_cvtph_ps(d16), P.dy), acc);
    }
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1)));
}

// One row with the four-row kernels' arithmetic for it (the same integer
// block sums, the same FMA per block into its lane, the same final add), for
// DecodeWalk's one stream and the rows after the last group of four. No
// prefetch: one row after another is one stream the hardware follows.
template <class Nib>
inline float dot1_nib4(const MatmulArgs& a, int64_t r, const Nib4PairAct* pa, int64_t npairs) {
    using Block = typename Nib::Block;
    const Block* w = reinterpret_cast<const Block*>(a.w + r * a.w_stride);
    __m128 acc = _mm_setzero_ps();  // lane 0: the even blocks, lane 1: the odd ones
    for (int64_t p = 0; p < npairs; ++p) {
        const Nib4PairAct& P = pa[p];
        const __m256i s = nib4_pair_sums<Nib>(w, p, P);
        __m128i h = _mm_hadd_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        h = _mm_hadd_epi32(h, h);  // block 2p, block 2p+1, again
        const __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128(w[2 * p].d | (static_cast<uint32_t>(w[2 * p + 1].d) << 16)));
        const __m128 dy = _mm_unpacklo_ps(_mm256_castps256_ps128(P.dy), _mm256_extractf128_ps(P.dy, 1));
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(h), _mm_mul_ps(d, dy), acc);
    }
    float out = _mm_cvtss_f32(_mm_add_ss(acc, _mm_movehdup_ps(acc)));
    const auto* y = reinterpret_cast<const BlockQ8_0*>(a.x);
    for (int64_t ib = 2 * npairs; ib < a.K / QK; ++ib) {  // an odd last block
        const __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[ib].qs));
        const __m256i s = Nib::one(nibbles_32(w[ib].qs), yv, Nib::one_c(yv));
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        h = _mm_hadd_epi32(h, h);
        h = _mm_hadd_epi32(h, h);
        out = std::fma(static_cast<float>(_mm_cvtsi128_si32(h)), h2f(w[ib].d) * h2f(y[ib].d), out);
    }
    return out;
}

template <class Nib>
void rows_nib4_decode(const MatmulArgs& a, int64_t r0, int64_t r1) {
    const int64_t nb = a.K / QK;
    thread_local AlignedBytes buf;  // per thread: each prepares the same token (a few KiB)
    const int64_t pairs = nb / 2;
    auto* pa = reinterpret_cast<Nib4PairAct*>(buf.get(sizeof(Nib4PairAct) * static_cast<size_t>(pairs + 1)));
    prep_nib4_pairs<Nib>(reinterpret_cast<const BlockQ8_0*>(a.x), pairs, pa);
    int64_t r = r0;
    if (!a.walk.one_stream)
        for (; r + 4 <= r1; r += 4) {
            float out[4] = {0, 0, 0, 0};
            if (pairs > 0) dot4_nib4_pairs<Nib>(a, r, pa, pairs, out);
            dot4_nib4<Nib>(a, r, 2 * pairs, out);  // an odd last block
            for (int i = 0; i < 4; ++i) a.y[r + i] = out[i] + (a.bias ? a.bias[r + i] : 0.0f);
        }
    for (; r < r1; ++r) a.y[r] = dot1_nib4<Nib>(a, r, pa, pairs) + (a.bias ? a.bias[r] : 0.0f);
}

template <class Block, float (*Dot)(const Block*, const BlockQ8_K*, int64_t)>
void rows_kquant_decode(const MatmulArgs& a, int64_t r0, int64_t r1) {
    const auto* y = reinterpret_cast<const BlockQ8_K*>(a.x);
    const int64_t nb = a.K / QK_K;
    for (int64_t r = r0; r < r1; ++r) {
        const float v = Dot(reinterpret_cast<const Block*>(a.w + r * a.w_stride), y, nb);
        a.y[r] = v + (a.bias ? a.bias[r] : 0.0f);
    }
}

#if defined(__AVX512BW__)
template <class Block, size_t kRegroupBytes, void (*Regroup)(const BlockQ8_K*, int64_t, int8_t*),
          float (*Dot)(const Block*, const BlockQ8_K*, const int8_t*, int64_t)>
void rows_kquant_decode_wide(const MatmulArgs& a, int64_t r0, int64_t r1) {
    const auto* y = reinterpret_cast<const BlockQ8_K*>(a.x);
    const int64_t nb = a.K / QK_K;
    thread_local AlignedBytes buf;  // this thread's regrouped codes of the token (kRegroupBytes a block)
    int8_t* yw = reinterpret_cast<int8_t*>(buf.get(static_cast<size_t>(nb) * kRegroupBytes));
    Regroup(y, nb, yw);
    for (int64_t r = r0; r < r1; ++r) {
        const float v = Dot(reinterpret_cast<const Block*>(a.w + r * a.w_stride), y, yw, nb);
        a.y[r] = v + (a.bias ? a.bias[r] : 0.0f);
    }
}
#endif

// Token-blocked driver shared by the quantized formats (see rows_float).
template <template <class, int, int> class Tile, class F>
void rows_quant(const MatmulArgs& a, int64_t r0, int64_t r1) {
    constexpr int R = kTileRows, N = kQuantToks;
    if (a.n == 1) {  // decode: the dedicated one-token kernels where a format has one
#if defined(__AVX512BW__)
        if constexpr (std::is_same_v<F, KQ4>)
            return rows_kquant_decode_wide<BlockQ4_K, kRegroupQ4_K, regroup_q4_K, dot1_q4_K_wide>(a, r0, r1);
        if constexpr (std::is_same_v<F, KQ6>)
            return rows_kquant_decode_wide<BlockQ6_K, QK_K, regroup_q6_K, dot1_q6_K_wide>(a, r0, r1);
        if constexpr (std::is_same_v<F, KQ5>)
            return rows_kquant_decode_wide<BlockQ5_K, kRegroupQ4_K, regroup_q4_K, dot1_q5_K_wide>(a, r0, r1);
        if constexpr (std::is_same_v<F, KQ3>)
            return rows_kquant_decode_wide<BlockQ3_K, QK_K, regroup_q6_K, dot1_q3_K_wide>(a, r0, r1);
        if constexpr (std::is_same_v<F, KQ2>)
            return rows_kquant_decode_wide<BlockQ2_K, QK_K, regroup_q6_K, dot1_q2_K_wide>(a, r0, r1);
#else
        if constexpr (std::is_same_v<F, KQ4>) return rows_kquant_decode<BlockQ4_K, dot1_q4_K>(a, r0, r1);
        if constexpr (std::is_same_v<F, KQ6>) return rows_kquant_decode<BlockQ6_K, dot1_q6_K>(a, r0, r1);
        if constexpr (std::is_same_v<F, KQ5>) return rows_kquant_decode<BlockQ5_K, dot1_q5_K>(a, r0, r1);
        if constexpr (std::is_same_v<F, KQ3>) return rows_kquant_decode<BlockQ3_K, dot1_q3_K>(a, r0, r1);
        if constexpr (std::is_same_v<F, KQ2>) return rows_kquant_decode<BlockQ2_K, dot1_q2_K>(a, r0, r1);
#endif
        if constexpr (std::is_same_v<F, LegacyQ4_0>) return rows_nib4_decode<Nib4Q4_0>(a, r0, r1);
        if constexpr (std::is_same_v<F, LegacyIQ4_NL>) return rows_nib4_decode<Nib4IQ4_NL>(a, r0, r1);
        // The others (the legacy formats) run the tiles: R rows side by side, or one row after
        // another where the CPU reads a single stream faster (DecodeWalk). A row's arithmetic is
        // the tile's at any R and N, so tokens stay independent.
        int64_t r = r0;
        if (!a.walk.one_stream)
            for (; r + R <= r1; r += R) Tile<F, R, 1>::run(a, r, 0);
        for (; r < r1; ++r) Tile<F, 1, 1>::run(a, r, 0);
        return;
    }
    const int tb = token_block(static_cast<int64_t>(a.x_stride), a.n, N);
    for (int t0 = 0; t0 < a.n; t0 += tb) {
        const int t1 = static_cast<int>(min_i64(a.n, t0 + tb));
        int64_t r = r0;
        for (; r + R <= r1; r += R) {
            int t = t0;
            for (; t + N <= t1; t += N) Tile<F, R, N>::run(a, r, t);
            for (; t < t1; ++t) Tile<F, R, 1>::run(a, r, t);
        }
        for (; r < r1; ++r) {
            int t = t0;
            for (; t + N <= t1; t += N) Tile<F, 1, N>::run(a, r, t);
            for (; t < t1; ++t) Tile<F, 1, 1>::run(a, r, t);
        }
    }
}

template <class F, int R, int N>
struct LegacyTile {
    static void run(const MatmulArgs& a, int64_t r, int t) { legacy_tile<F, R, N>(a, r, t); }
};
// (Every K-quant decodes in a kernel of its own, one row after another: through the tile, one row
// at a time had measured faster on every CPU, Phi-3-mini Q5_K_M tg32 on a 2-vCPU Zen 4 11.1-11.3
// t/s against 6.0-6.1 four rows side by side, on a 16-core Xeon 26.4-26.8 against 23.2-23.6.)
template <class F, int R, int N>
struct KQuantTile {
    static void run(const MatmulArgs& a, int64_t r, int t) { kquant_tile<F, R, N>(a, r, t); }
};

} // namespace
} // namespace phi::cpu

#include <initializer_list>

#include "backend/cpu/gemm_x86_impl.h"
#include "backend/cpu/q4_0_x8_x86_impl.h"
#include "backend/cpu/gemm_i8_x86_impl.h"
#include "backend/cpu/iq4_x86_impl.h"

namespace phi::cpu {
namespace {

// One row of Q8_0 activations with the scalar quantize_q8_0's arithmetic
// (kernels_scalar.cpp), so every ISA's matmul sees the same codes: amax over the
// block with NaN ignored, d = fp16(amax / 127), codes x * (127 / amax) rounded
// half to even, a NaN's code -128 (the conversion's 0x80000000, saturated).
void quantize_q8_0_x86(const float* x, void* dst, int64_t K) {
    auto* y = static_cast<quant::BlockQ8_0*>(dst);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    // after packs_epi32 and packs_epi16 the dwords hold codes 0-3 of v[0], v[1], v[2], v[3], then codes
    // 4-7 of each: the permutation puts each vector's two halves side by side
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t i = 0; i < K / 32; ++i, x += 32) {
        __m256 v[4];
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < 4; ++j) {
            v[j] = _mm256_loadu_ps(x + 8 * j);
            m = _mm256_max_ps(_mm256_andnot_ps(sign, v[j]), m);  // a NaN lane returns m, the second operand
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        y[i].d = fp32_to_fp16(amax / 127.f);
        const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.f / amax : 0.0f);
        __m256i q[4];
        for (int j = 0; j < 4; ++j)
            q[j] = _mm256_cvtps_epi32(
                _mm256_round_ps(_mm256_mul_ps(v[j], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[i].qs), _mm256_permutevar8x32_epi32(b, order));
    }
}

void fill_x86_table(KernelTable* t) {
    fill_gemm_table(t);
    t->quantize_act[static_cast<int>(DType::Q8_0)] = quantize_q8_0_x86;
    fill_gemm_i8_table(t);
    t->rows[static_cast<int>(DType::Q8_0)] = rows_quant<LegacyTile, LegacyQ8_0>;
    t->rows[static_cast<int>(DType::Q4_0)] = rows_quant<LegacyTile, LegacyQ4_0>;
    t->rows[static_cast<int>(DType::Q5_0)] = rows_quant<LegacyTile, LegacyQ5_0>;
    t->rows[static_cast<int>(DType::Q4_1)] = rows_quant<LegacyTile, LegacyQ4_1>;
    t->rows[static_cast<int>(DType::Q5_1)] = rows_quant<LegacyTile, LegacyQ5_1>;
    t->rows[static_cast<int>(DType::IQ4_NL)] = rows_quant<LegacyTile, LegacyIQ4_NL>;
    t->rows[static_cast<int>(DType::IQ4_XS)] = rows_iq4_xs;
    t->rows[static_cast<int>(DType::Q2_K)] = rows_quant<KQuantTile, KQ2>;
    t->rows[static_cast<int>(DType::Q3_K)] = rows_quant<KQuantTile, KQ3>;
    t->rows[static_cast<int>(DType::Q4_K)] = rows_quant<KQuantTile, KQ4>;
    t->rows[static_cast<int>(DType::Q5_K)] = rows_quant<KQuantTile, KQ5>;
    t->rows[static_cast<int>(DType::Q6_K)] = rows_quant<KQuantTile, KQ6>;
    t->rows[static_cast<int>(DType::F32)] = rows_float<DType::F32>;
    t->rows[static_cast<int>(DType::F16)] = rows_float<DType::F16>;
    t->rows[static_cast<int>(DType::BF16)] = rows_float<DType::BF16>;
    t->rows_q4_0_x8 = rows_q4_0_x8;
    // the same tiles for one token and for several (no dedicated decode kernel, or
    // one with the tiles' arithmetic)
    t->rows_token_invariant = 0;
    for (DType d : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q5_0, DType::Q4_1,
                    DType::Q5_1, DType::Q2_K, DType::Q3_K, DType::Q5_K, DType::Q6_K, DType::IQ4_XS})
        t->rows_token_invariant |= uint64_t{1} << static_cast<int>(d);
    t->q4_0_x8_token_invariant = true;
}

} // namespace
} // namespace phi::cpu
