// Prefill GEMM in 8-bit integers for quantized weights, included by
// kernels_x86_impl.h (compiled once per ISA; sees the block unpackers there).
//
// y[t][r] = sum_k W[r][k] * x[t][k], with the activations quantized on the
// fly to 8 bits in blocks of 32 (Q8_0's arithmetic: scale amax / 127 rounded
// to fp16, codes rounded half to even, as llama.cpp's prompt path does) and
// every weight block unpacked to unsigned 8-bit codes u with, per group of
// 32 (or 16) elements, a float scale A and for formats with mins a float B:
//   weight = A * (u - off) + B      (off: the format's constant, e.g. 8 for Q4_0)
// so that a group's contribution to y[t][r] is
//   dx[t] * (A[r] * (sum(u * q[t]) - off * sum(q[t])) + B[r] * sum(q[t]))
// with the integer sums exact. The roles are swapped against the f32 GEMM:
//   - tokens sit in the vector lanes (16 with AVX-512, 8 with AVX2); the
//     activations are packed once per call as [tile][K/4][lanes][4] bytes,
//     with their per-group sums (-off * sum(q) starts each group's integer
//     accumulator, so the offset costs nothing in the inner loop);
//   - each weight row's 4 consecutive codes are one 32-bit broadcast, so a
//     converted panel stays in the file's row order (no transposition) and
//     the conversion is the unpacking alone;
//   - the micro-kernel keeps MR rows x NV token vectors of integer sums and
//     of float accumulators in registers: per 4 columns NV loads, MR
//     broadcasts, MR * NV vpdpbusd (unsigned weights x signed activations;
//     AVX-512 VNNI or AVX-VNNI; AVX2: maddubs + madd + add).
// maddubs adds two products in 16 bits with saturation, so the AVX2 path
// takes as unsigned only codes below 128 (2 * 127 * 128 < 2^15). Q8_0 and
// the IQ4 formats (codes up to 255 as unsigned) keep their signed codes w
// there instead, without an offset, and each step multiplies |w| by the
// activations with w's sign (maddubs(|w|, sign(x, w)): pair sums up to
// 2 * 128 * 127), as the row kernels do.
#pragma once

namespace phi::cpu {
namespace {

#if defined(__AVX512F__)
struct I8Vec {
    using V = __m512i;
    using F = __m512;
    static constexpr int kLanes = 16;
    static V load(const uint8_t* p) { return _mm512_loadu_si512(p); }
    static V bcast(const void* p) {
        int32_t v;
        std::memcpy(&v, p, 4);
        return _mm512_set1_epi32(v);
    }
    static V dp(V acc, V wu, V xs) { return _mm512_dpbusd_epi32(acc, wu, xs); }
    static constexpr bool kPairs16 = false;  // no 16-bit pair sums to exploit
    static V dp16(V acc, V, V) { return acc; }
    static V widen_add(V, V c) { return c; }
    static F cvt(V v) { return _mm512_cvtepi32_ps(v); }
    static F loadf(const float* p) { return _mm512_loadu_ps(p); }
    static F bcastf(const float* p) { return _mm512_set1_ps(*p); }
    static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
    static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
    static F zerof() { return _mm512_setzero_ps(); }
    static void storef(float* p, F v) { _mm512_storeu_ps(p, v); }
};
constexpr int kI8MaxCode = 255;  // vpdpbusd sums in 32 bits: any unsigned code
constexpr bool kI8SignedCodes = false;
// rows per micro-panel: 6 x 2 vectors x (int + float) = 24 of 32 registers (4 x 3, 5 x 2 and
// 8 x 1 measured within the noise of 6 x 2: 8192 x 3072 Q4_K/Q6_K/Q8_0, 128 tokens, 2 threads)
constexpr int kI8Mr = 6;
#else
// 256-bit vectors, 16 registers: AVX-VNNI's vpdpbusd, or AVX2's maddubs + madd
struct I8Vec {
    using V = __m256i;
    using F = __m256;
    static constexpr int kLanes = 8;
    static V load(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    static V bcast(const void* p) {
        int32_t v;
        std::memcpy(&v, p, 4);
        return _mm256_set1_epi32(v);
    }
#if defined(PHI_DPBUSD256)
    static V dp(V acc, V wu, V xs) { return PHI_DPBUSD256(acc, wu, xs); }
    static constexpr bool kPairs16 = false;
    static V dp16(V acc, V, V) { return acc; }
    static V widen_add(V, V c) { return c; }
#else
    static V dp(V acc, V wu, V xs) {
        return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(wu, xs), _mm256_set1_epi16(1)));
    }
    // maddubs' 16-bit pair sums added in 16 bits (exact while the total stays
    // below 2^15), widened once per group: 2 instructions per step instead of 3
    static constexpr bool kPairs16 = true;
    static V dp16(V acc, V wu, V xs) { return _mm256_add_epi16(acc, _mm256_maddubs_epi16(wu, xs)); }
    static V widen_add(V s16, V c) { return _mm256_add_epi32(c, _mm256_madd_epi16(s16, _mm256_set1_epi16(1))); }
    // signed codes ws: their magnitudes wa (abs8, once per broadcast) times
    // the activations with their signs, for each token vector
    static V abs8(V ws) { return _mm256_abs_epi8(ws); }
    static V dp_signed(V acc, V wa, V ws, V xs) { return dp(acc, wa, _mm256_sign_epi8(xs, ws)); }
#endif
    static F cvt(V v) { return _mm256_cvtepi32_ps(v); }
    static F loadf(const float* p) { return _mm256_loadu_ps(p); }
    static F bcastf(const float* p) { return _mm256_broadcast_ss(p); }
    static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
    static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
    static F zerof() { return _mm256_setzero_ps(); }
    static void storef(float* p, F v) { _mm256_storeu_ps(p, v); }
};
#if defined(PHI_DPBUSD256)
constexpr int kI8MaxCode = 255;
constexpr bool kI8SignedCodes = false;
#else
constexpr int kI8MaxCode = 127;  // maddubs: 2 * 127 * 128 < 2^15
constexpr bool kI8SignedCodes = true;  // wider formats as signed codes (dp_signed)
#endif
constexpr int kI8Mr = 3;        // 3 x 2 x 2 = 12 of 16 registers
#endif
constexpr int kI8Lanes = I8Vec::kLanes;
constexpr int kI8Nv = 2;                  // token vectors per micro-kernel call
constexpr int kI8Kc = 256;                // columns per K block
constexpr int kI8Rows = 8 * kI8Mr;        // rows per row block (a thread's unit of work)
constexpr int kI8MaxGroups = kI8Kc / 16;  // groups per row of a panel

// ------------------------------------------------------------ activations

// Token rows [tile0 * L, tile1 * L) of x (n rows of K floats) into the tiles
// described in kernels.h (GemmI8Args): codes, block scales, and per group of
// gs columns -off * sum(q) (when off != 0) and d * sum(q) (when s is given).
// Tokens past n are zero (codes 0, scale 0).
void pack_i8_activations(const float* x, int64_t K, int n, int gs, int off, int tile0, int tile1, int8_t* q,
                         float* d, int32_t* c, float* s) {
    constexpr int L = kI8Lanes;
    const int64_t nb = K / QK, ng = K / gs;
    for (int tile = tile0; tile < tile1; ++tile) {
        int8_t* qt = q + static_cast<int64_t>(tile) * K * L;
        float* dt = d + static_cast<int64_t>(tile) * nb * L;
        int32_t* ct = off ? c + static_cast<int64_t>(tile) * ng * L : nullptr;
        float* st = s ? s + static_cast<int64_t>(tile) * ng * L : nullptr;
        for (int lane = 0; lane < L; ++lane) {
            const int t = tile * L + lane;
            const float* xr = x + static_cast<int64_t>(t) * K;
            for (int64_t ib = 0; ib < nb; ++ib) {
                alignas(32) int8_t qs[QK];
                float dx = 0.0f;
                if (t < n) {
                    __m256 v[4];
                    __m256 amax = _mm256_setzero_ps();
                    const __m256 sign = _mm256_set1_ps(-0.0f);
                    for (int i = 0; i < 4; ++i) {
                        v[i] = _mm256_loadu_ps(xr + ib * QK + 8 * i);
                        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
                    }
                    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
                    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                    m = _mm_max_ss(m, _mm_movehdup_ps(m));
                    const float am = _mm_cvtss_f32(m);
                    // as quantize_q8_0 (kernels_scalar.cpp): d = fp16(amax / 127), codes x * 127 / amax
                    dx = _cvtsh_ss(_cvtss_sh(am / 127.f, 0));
                    const __m256 id = _mm256_set1_ps(am != 0.0f ? 127.f / am : 0.0f);
                    __m256i i32[4];
                    for (int i = 0; i < 4; ++i) i32[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], id));
                    // NaN / overflow convert to INT_MIN, which saturates to -128 (as the scalar path)
                    const __m256i p16 = _mm256_packs_epi32(i32[0], i32[1]), p16b = _mm256_packs_epi32(i32[2], i32[3]);
                    const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16, p16b),
                                                                   _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
                    _mm256_store_si256(reinterpret_cast<__m256i*>(qs), p8);
                } else {
                    std::memset(qs, 0, sizeof qs);
                }
                dt[ib * L + lane] = dx;
                for (int k4 = 0; k4 < QK / 4; ++k4)
                    std::memcpy(qt + ((ib * (QK / 4) + k4) * L + lane) * 4, qs + 4 * k4, 4);
                for (int g = 0; g < QK / gs; ++g) {
                    int sum = 0;
                    for (int i = 0; i < gs; ++i) sum += qs[g * gs + i];
                    const int64_t at = (ib * (QK / gs) + g) * L + lane;
                    if (ct) ct[at] = -off * sum;
                    if (st) st[at] = dx * static_cast<float>(sum);
                }
            }
        }
    }
}

// ------------------------------------------------------------ weight panels

// A panel: MR rows x kc columns as unsigned codes, and per row and group the
// scale A and the min B.
template <int MR>
struct I8PanelOf {
    alignas(64) uint8_t q[MR][kI8Kc];
    alignas(64) float A[MR][kI8MaxGroups];
    alignas(64) float B[MR][kI8MaxGroups];
};
using I8Panel = I8PanelOf<kI8Mr>;

inline void store32(uint8_t* dst, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), v); }

// Legacy formats (F from kernels_x86_impl.h): F::load gives the codes, signed
// for the _0 formats (stored + Off), unsigned with the min as B for the _1 ones.
template <class F> constexpr int kLegacyMaxCode = 255;  // Q8_0, IQ4_NL (+ 128)
template <> constexpr int kLegacyMaxCode<LegacyQ4_1> = 15;
template <> constexpr int kLegacyMaxCode<LegacyQ5_0> = 31;
template <> constexpr int kLegacyMaxCode<LegacyQ5_1> = 31;

// Off = 0 with a signed F (Q8_0, IQ4_NL on AVX2): the codes stay signed (kSignedCodes).
template <class F, int Off>
struct I8Legacy {
    static constexpr int G = 1, kOff = Off, kMaxCode = kLegacyMaxCode<F>;
    static constexpr bool kMins = !F::kSigned, kSignedCodes = F::kSigned && Off == 0;
    static void row(const uint8_t* row, int64_t k0, int kc, uint8_t* q, float* A, float* B) {
        const auto* b = reinterpret_cast<const typename F::Block*>(row) + k0 / QK;
        for (int ib = 0; ib < kc / QK; ++ib) {
            __m256i v = F::load(b[ib]);
            if (Off) v = _mm256_add_epi8(v, _mm256_set1_epi8(static_cast<char>(Off)));
            store32(q + QK * ib, v);
            A[ib] = h2f(b[ib].d);
            if (kMins) B[ib] = min_of(b[ib]);
        }
    }
};

// Q4_0 straight from its nibbles (u = q + 8)
struct I8Q4_0 {
    static constexpr int G = 1, kOff = 8, kMaxCode = 15;
    static constexpr bool kMins = false, kSignedCodes = false;
    static void row(const uint8_t* row, int64_t k0, int kc, uint8_t* q, float* A, float*) {
        const auto* b = reinterpret_cast<const BlockQ4_0*>(row) + k0 / QK;
        for (int ib = 0; ib < kc / QK; ++ib) {
            store32(q + QK * ib, nibbles_32(b[ib].qs));
            A[ib] = h2f(b[ib].d);
        }
    }
};

// Q4_0 in the interleaved x8 layout (quant/repack.h): row r's qs are its 4
// quads of 4 bytes in the records of its group of 8. Converted a whole group
// at a time (convert_q4_0_x8_block), not a row at a time.
struct I8Q4_0x8 {
    static constexpr int G = 1, kOff = 8, kMaxCode = 15;
    static constexpr bool kMins = false, kSignedCodes = false;
};

// The rows [mb, mb + rows) of interleaved Q4_0 over the K block [k0, k0 + kc)
// into the panels of a row block (row mb + i to panel i / MR, slot i % MR),
// a group of 8 rows at a time: a record's four 32-byte quad planes (the
// dword of row l in lane l of each) transpose in 8 unpacks into the rows'
// 16 code bytes, two rows a register, which split into nibbles in element
// order. A row at a time (4 dword loads and inserts per row and block) cost a
// quarter of the prefill GEMM's time on Zen 5. mb and rows are multiples of
// 8: the layout exists only for such tensors, and row blocks are whole groups.
template <int MR>
inline void convert_q4_0_x8_block(const GemmI8Args& a, int64_t mb, int rows, int64_t k0, int kc,
                                  I8PanelOf<MR>* panels) {
    const int64_t nb = a.K / QK;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int g = 0; g < rows / kQ4_0x8Rows; ++g) {
        const auto* rec = reinterpret_cast<const BlockQ4_0x8*>(a.w) + (mb / kQ4_0x8Rows + g) * nb + k0 / QK;
        uint8_t* q[kQ4_0x8Rows];
        float* A[kQ4_0x8Rows];
        for (int l = 0; l < kQ4_0x8Rows; ++l) {
            const int i = g * kQ4_0x8Rows + l;
            q[l] = panels[i / MR].q[i % MR];
            A[l] = panels[i / MR].A[i % MR];
        }
        for (int ib = 0; ib < kc / QK; ++ib) {
            const BlockQ4_0x8& b = rec[ib];
            const auto plane = [&](int j) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs[j])); };
            const __m256i q0 = plane(0), q1 = plane(1), q2 = plane(2), q3 = plane(3);
            const __m256i t0 = _mm256_unpacklo_epi32(q0, q1), t1 = _mm256_unpackhi_epi32(q0, q1);
            const __m256i t2 = _mm256_unpacklo_epi32(q2, q3), t3 = _mm256_unpackhi_epi32(q2, q3);
            // rows j (low lane) and j + 4 (high lane)
            const __m256i r[4] = {_mm256_unpacklo_epi64(t0, t2), _mm256_unpackhi_epi64(t0, t2),
                                  _mm256_unpacklo_epi64(t1, t3), _mm256_unpackhi_epi64(t1, t3)};
            for (int j = 0; j < 4; ++j) {
                const __m256i lo = _mm256_and_si256(r[j], m4);
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(r[j], 4), m4);
                store32(q[j] + QK * ib, _mm256_permute2x128_si256(lo, hi, 0x20));
                store32(q[j + 4] + QK * ib, _mm256_permute2x128_si256(lo, hi, 0x31));
            }
            alignas(32) float d[kQ4_0x8Rows];
            _mm256_store_ps(d, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.d))));
            for (int l = 0; l < kQ4_0x8Rows; ++l) A[l][ib] = d[l];
        }
    }
}

// K-quants (F from kernels_x86_impl.h): F::unpack gives u; Q6_K's weights
// are A * (u - 32), Q3_K's A * (u - 4). Q4_K / Q5_K have one scale per 32
// elements, the others per 16 (G = 2).
template <class F> constexpr int kKOffset = 0;
template <> constexpr int kKOffset<KQ6> = 32;
template <> constexpr int kKOffset<KQ3> = 4;
template <class F> constexpr int kKGroups = 2;
template <> constexpr int kKGroups<KQ4> = 1;
template <> constexpr int kKGroups<KQ5> = 1;
template <class F> constexpr int kKMaxCode = 15;  // Q4_K
template <> constexpr int kKMaxCode<KQ2> = 3;
template <> constexpr int kKMaxCode<KQ3> = 7;
template <> constexpr int kKMaxCode<KQ5> = 31;
template <> constexpr int kKMaxCode<KQ6> = 63;

template <class F>
struct I8KQuant {
    static constexpr int G = kKGroups<F>, kOff = kKOffset<F>, kMaxCode = kKMaxCode<F>;
    static constexpr bool kMins = F::kMins, kSignedCodes = false;
    static void row(const uint8_t* row, int64_t k0, int kc, uint8_t* q, float* A, float* B) {
        const auto* blocks = reinterpret_cast<const typename F::Block*>(row) + k0 / QK_K;
        KPrep p;
        for (int sb = 0; sb < kc / QK_K; ++sb) {
            const auto& b = blocks[sb];
            F::prep(b, &p);
            for (int v = 0; v < 8; ++v) store32(q + QK_K * sb + 32 * v, F::unpack(b, v));
            // the superblock's 8 * G scales (and mins) in vectors: one scalar conversion,
            // multiply and store each was a tenth of the K-quant prefill GEMM's time
            group_values(p.sc, p.d, A + sb * 8 * G);
            if constexpr (kMins) group_values(p.mn, -p.dmin, B + sb * 8 * G);
        }
    }

private:
    // out[i] = m * per-group value for the 8 * G groups (16-element groups of a
    // KPrep; with G = 1 every other one: Q4_K's and Q5_K's repeat each 32-element value)
    static void group_values(const int16_t* v16, float m, float* out) {
        const __m256 mv = _mm256_set1_ps(m);
        if constexpr (G == 1) {  // int16 pairs (x, x) as int32 lanes: keep the low half (x >= 0)
            const __m256i x = _mm256_and_si256(_mm256_load_si256(reinterpret_cast<const __m256i*>(v16)),
                                               _mm256_set1_epi32(0xFFFF));
            _mm256_storeu_ps(out, _mm256_mul_ps(mv, _mm256_cvtepi32_ps(x)));
        } else {
            for (int h = 0; h < 2; ++h) {
                const __m256i x = _mm256_cvtepi16_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(v16 + 8 * h)));
                _mm256_storeu_ps(out + 8 * h, _mm256_mul_ps(mv, _mm256_cvtepi32_ps(x)));
            }
        }
    }
};

// kSigned: the levels as they are (AVX2's dp_signed); else the levels + 128, unsigned
template <bool kSigned>
struct I8IQ4XS {
    static constexpr int G = 1, kOff = kSigned ? 0 : 128, kMaxCode = 255;
    static constexpr bool kMins = false, kSignedCodes = kSigned;
    static void row(const uint8_t* row, int64_t k0, int kc, uint8_t* q, float* A, float*) {
        const auto* blocks = reinterpret_cast<const BlockIQ4_XS*>(row) + k0 / QK_K;
        const __m256i table = _mm256_xor_si256(
            _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kValuesIQ4NL))),
            _mm256_set1_epi8(static_cast<char>(kSigned ? 0 : 0x80)));
        for (int sb = 0; sb < kc / QK_K; ++sb) {
            const BlockIQ4_XS& b = blocks[sb];
            const float d = h2f(b.d);
            for (int ib = 0; ib < 8; ++ib) {
                const int o = sb * 8 + ib;
                store32(q + QK * o, _mm256_shuffle_epi8(table, nibbles_32(b.qs + 16 * ib)));
                const int ls =
                    (((b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((b.scales_h >> (2 * ib)) & 3) << 4)) - 32;
                A[o] = d * static_cast<float>(ls);
            }
        }
    }
};

// ------------------------------------------------------------ micro-kernel

// NV token tiles of the packed activations from one K block on (kernels.h).
struct I8Tiles {
    const int8_t* q;
    const float* d;
    const int32_t* c;
    const float* s;
    int64_t qst, dst, gst;  // between tiles: codes (bytes), scales, group sums
};

// c[NV][MR][L] (+)= panel rows [0, MR) x the nb 32-column blocks of NV token tiles.
// (V a parameter so that dp_signed, which only AVX2's vectors have, is looked
// up only where a unit's codes are signed)
template <class U, int MR, int NV, class V = I8Vec>
inline void i8_micro(const I8Panel& p, int nb, const I8Tiles& X, float* c, bool accumulate) {
    constexpr int L = V::kLanes, G = U::G, K4 = QK / 4 / G;  // 4-column steps per group
    typename V::F acc[MR][NV];
    for (int r = 0; r < MR; ++r)
        for (int j = 0; j < NV; ++j) acc[r][j] = accumulate ? V::loadf(c + (j * MR + r) * L) : V::zerof();
    for (int b = 0; b < nb; ++b) {
        for (int h = 0; h < G; ++h) {
            const int g = b * G + h;
            typename V::V isum[MR][NV];
            for (int j = 0; j < NV; ++j) {
                const typename V::V c0 =
                    U::kOff ? V::load(reinterpret_cast<const uint8_t*>(X.c + j * X.gst + g * L)) : typename V::V{};
                for (int r = 0; r < MR; ++r) isum[r][j] = c0;
            }
            // a group's sums in 16 bits where they cannot overflow (AVX2, codes
            // up to 15 over 32 columns: 8 steps x 2 x 15 x 128 < 2^15)
            constexpr bool kSums16 = V::kPairs16 && !U::kSignedCodes && U::kMaxCode * 2 * 128 * K4 < 32768;
            typename V::V s16[MR][NV];
            if constexpr (kSums16)
                for (int r = 0; r < MR; ++r)
                    for (int j = 0; j < NV; ++j) s16[r][j] = typename V::V{};
#pragma GCC unroll 8
            for (int k4 = 0; k4 < K4; ++k4) {
                const int col = b * (QK / 4) + h * K4 + k4;
                typename V::V xv[NV];
                for (int j = 0; j < NV; ++j)
                    xv[j] = V::load(reinterpret_cast<const uint8_t*>(X.q + j * X.qst + col * L * 4));
                for (int r = 0; r < MR; ++r) {
                    const typename V::V wv = V::bcast(&p.q[r][col * 4]);
                    if constexpr (U::kSignedCodes) {
                        const typename V::V wa = V::abs8(wv);
                        for (int j = 0; j < NV; ++j) isum[r][j] = V::dp_signed(isum[r][j], wa, wv, xv[j]);
                    } else {
                        for (int j = 0; j < NV; ++j) {
                            if constexpr (kSums16) s16[r][j] = V::dp16(s16[r][j], wv, xv[j]);
                            else isum[r][j] = V::dp(isum[r][j], wv, xv[j]);
                        }
                    }
                }
            }
            if constexpr (kSums16)
                for (int r = 0; r < MR; ++r)
                    for (int j = 0; j < NV; ++j) isum[r][j] = V::widen_add(s16[r][j], isum[r][j]);
            typename V::F dv[NV];
            for (int j = 0; j < NV; ++j) dv[j] = V::loadf(X.d + j * X.dst + b * L);
            for (int r = 0; r < MR; ++r) {
                const typename V::F a = V::bcastf(&p.A[r][g]);
                for (int j = 0; j < NV; ++j) acc[r][j] = V::fma(V::cvt(isum[r][j]), V::mul(dv[j], a), acc[r][j]);
            }
            if constexpr (U::kMins) {
                for (int j = 0; j < NV; ++j) {
                    const typename V::F sv = V::loadf(X.s + j * X.gst + g * L);
                    for (int r = 0; r < MR; ++r) acc[r][j] = V::fma(V::bcastf(&p.B[r][g]), sv, acc[r][j]);
                }
            }
        }
    }
    for (int r = 0; r < MR; ++r)
        for (int j = 0; j < NV; ++j) V::storef(c + (j * MR + r) * L, acc[r][j]);
}

template <class U, int NV, int MR = kI8Mr>
inline void i8_micro_rows(int mr, const I8Panel& p, int nb, const I8Tiles& X, float* c, bool acc) {
    if constexpr (MR == 1) {
        i8_micro<U, 1, NV>(p, nb, X, c, acc);
    } else if (mr == MR) {  // a block's last panel may have fewer rows
        i8_micro<U, MR, NV>(p, nb, X, c, acc);
    } else {
        i8_micro_rows<U, NV, MR - 1>(mr, p, nb, X, c, acc);
    }
}

// ------------------------------------------------------------ driver

template <class U, class Panel>
inline void i8_convert_row(const GemmI8Args& a, int64_t r, int64_t k0, int kc, Panel& p, int i) {
    U::row(a.w + r * a.w_stride, k0, kc, p.q[i], p.A[i], p.B[i]);
}

// Interleaved Q4_0 (x8): the records the next K block reads, into L1, for
// every group of 8 rows of this row block (the first K block of the next row
// block after the last). Without this the conversion waited on memory at each
// group's records: a stream per group, a group apart, which the hardware
// prefetcher does not keep ahead of.
// The prefetches are asm statements: GCC 12 counts _mm_prefetch as free of
// side effects and removed this whole loop nest (it does nothing else) from
// gemm_i8_blocks, inlined or not.
inline void prefetch_q4_0_x8_next(const GemmI8Args& a, int64_t mb, int rows, int64_t k0, int kc, int64_t r1) {
    const int64_t nb = a.K / QK;
    int64_t row0 = mb, kn = k0 + kc;
    if (kn >= a.K) {
        row0 = mb + rows;
        kn = 0;
        rows = static_cast<int>(min_i64(rows, r1 - row0));
    }
    const int nrec = static_cast<int>(min_i64(kI8Kc, a.K - kn) / QK);
    const size_t len = sizeof(BlockQ4_0x8) * static_cast<size_t>(nrec);
    for (int64_t g = row0 / kQ4_0x8Rows; g * kQ4_0x8Rows < row0 + rows; ++g) {
        const char* rec = reinterpret_cast<const char*>(reinterpret_cast<const BlockQ4_0x8*>(a.w) + g * nb + kn / QK);
        for (size_t off = 0; off < len; off += 64) asm volatile("prefetcht0 %0" : : "m"(rec[off]));
    }
}

// Output rows [r0, r1) for all tokens; the order of gemm_f32 (row block of
// 8 panels, K block, panel converted into L1, every token tile swept over it
// by `sweep`), with the next panel's bytes prefetched into L2 (file layout:
// short runs a file row apart, which the hardware prefetcher does not follow).
// sweep(panel, mr, nb, X, tiles, c, acc): c is the panel's part of the
// accumulators, [token tile][mr rows][L].
template <class U, int MR, class Sweep>
void gemm_i8_blocks(const GemmI8Args& a, int64_t r0, int64_t r1, Sweep sweep) {
    constexpr int L = kI8Lanes, G = U::G, kRows = 8 * MR;
    constexpr bool x8 = std::is_same_v<U, I8Q4_0x8>;
    const int tiles = (a.n + L - 1) / L;
    const int64_t nbk = a.K / QK;
    const int64_t qst = a.K * L, dst = nbk * L, gst = nbk * G * L;  // between tiles
    thread_local AlignedBytes pbuf, cbuf_store;
    // one panel, converted just before its sweep; interleaved Q4_0: the row block's 8 panels,
    // converted together a group of rows at a time
    auto* panels = reinterpret_cast<I8PanelOf<MR>*>(pbuf.get(sizeof(I8PanelOf<MR>) * (x8 ? kRows / MR : 1)));
    float* cbuf = reinterpret_cast<float*>(cbuf_store.get(sizeof(float) * kRows * tiles * L));
    for (int64_t mb = r0; mb < r1; mb += kRows) {
        const int rows = static_cast<int>(min_i64(kRows, r1 - mb));
        for (int64_t k0 = 0; k0 < a.K; k0 += kI8Kc) {
            const int kc = static_cast<int>(min_i64(kI8Kc, a.K - k0));
            const int64_t g0 = k0 / QK * G;  // the K block's first group
            const I8Tiles X{a.xq + k0 * L, a.xd + (k0 / QK) * L, a.xc ? a.xc + g0 * L : nullptr,
                            a.xs ? a.xs + g0 * L : nullptr, qst, dst, gst};
            if constexpr (x8) {
                prefetch_q4_0_x8_next(a, mb, rows, k0, kc, r1);
                convert_q4_0_x8_block<MR>(a, mb, rows, k0, kc, panels);
            }
            for (int i = 0; i < rows; i += MR) {
                const int mr = static_cast<int>(min_i64(MR, rows - i));
                I8PanelOf<MR>& p = x8 ? panels[i / MR] : panels[0];
                if constexpr (!x8) {
                    for (int r = 0; r < mr; ++r) i8_convert_row<U>(a, mb + i + r, k0, kc, p, r);
                    const bool last = i + mr >= rows;
                    const int64_t pr = last ? mb : mb + i + mr, pk = last ? k0 + kc : k0;
                    const int pn = pk < a.K ? static_cast<int>(min_i64(MR, last ? rows : rows - i - mr)) : 0;
                    const size_t b0 = a.w_stride * static_cast<size_t>(pk) / static_cast<size_t>(a.K);
                    const size_t len = a.w_stride * static_cast<size_t>(kI8Kc) / static_cast<size_t>(a.K);
                    for (int r = 0; r < pn; ++r)
                        for (size_t off = 0; off < len; off += 64)
                            _mm_prefetch(reinterpret_cast<const char*>(a.w + (pr + r) * a.w_stride + b0 + off),
                                         _MM_HINT_T1);
                }
                // cbuf layout: [panel i / MR][token tile][row][L]
                sweep(p, mr, kc / QK, X, tiles, cbuf + static_cast<size_t>(i) * tiles * L, k0 > 0);
            }
        }
        gemm_write_block(cbuf, tiles, L, MR, rows, a.n, a.y + mb, a.ldy, a.bias ? a.bias + mb : nullptr);
    }
}

// The tiles from tile j on.
inline I8Tiles tiles_from(I8Tiles X, int j) {
    X.q += j * X.qst;
    X.d += j * X.dst;
    if (X.c) X.c += j * X.gst;
    if (X.s) X.s += j * X.gst;
    return X;
}

template <class U>
void gemm_i8(const GemmI8Args& a, int64_t r0, int64_t r1) {
    gemm_i8_blocks<U, kI8Mr>(a, r0, r1, [](const I8Panel& p, int mr, int nb, const I8Tiles& X, int tiles, float* c,
                                           bool acc) {
        for (int j = 0; j < tiles; j += kI8Nv) {
            float* cj = c + static_cast<size_t>(j) * mr * kI8Lanes;
            const int nv = static_cast<int>(min_i64(kI8Nv, tiles - j));
            if (nv == kI8Nv) i8_micro_rows<U, kI8Nv>(mr, p, nb, tiles_from(X, j), cj, acc);
            else if (nv == 2) i8_micro_rows<U, 2>(mr, p, nb, tiles_from(X, j), cj, acc);
            else i8_micro_rows<U, 1>(mr, p, nb, tiles_from(X, j), cj, acc);
        }
    });
}

template <class U>
void set_i8(KernelTable* t, DType d) {
    static_assert(U::kSignedCodes ? kI8SignedCodes : U::kMaxCode <= kI8MaxCode, "codes these vectors can't multiply");
    const int id = static_cast<int>(d);
    t->gemm_i8[id] = gemm_i8<U>;
    t->gemm_i8_acts[id] = I8ActSpec{QK / U::G, U::kOff, U::kMins};
}

void fill_gemm_i8_table(KernelTable* t) {
    t->pack_i8 = pack_i8_activations;
    t->gemm_i8_tile_tokens = kI8Lanes;
    t->gemm_i8_row_block = kI8Rows;
    set_i8<I8Q4_0>(t, DType::Q4_0);
    set_i8<I8Legacy<LegacyQ4_1, 0>>(t, DType::Q4_1);
    set_i8<I8Legacy<LegacyQ5_0, 16>>(t, DType::Q5_0);
    set_i8<I8Legacy<LegacyQ5_1, 0>>(t, DType::Q5_1);
    set_i8<I8KQuant<KQ2>>(t, DType::Q2_K);
    set_i8<I8KQuant<KQ3>>(t, DType::Q3_K);
    set_i8<I8KQuant<KQ4>>(t, DType::Q4_K);
    set_i8<I8KQuant<KQ5>>(t, DType::Q5_K);
    set_i8<I8KQuant<KQ6>>(t, DType::Q6_K);
    t->gemm_i8_q4_0_x8_acts = I8ActSpec{QK, I8Q4_0x8::kOff, false};
#if defined(__AVX512F__) || defined(__AVXVNNI__)
    // AVX2 keeps Q4_0's interleaved row kernel for prefill: 354-361 against
    // 305-312 GOP/s for this GEMM (8192 x 3072, 128 tokens, 2 threads, Zen 5);
    // on AVX-512 this GEMM wins, 537 against 359-413, and with AVX-VNNI
    // (vpdpbusd in both) 429-502 against 352-375 (16384 x 3072)
    t->gemm_i8_q4_0_x8 = gemm_i8<I8Q4_0x8>;
#endif
    // codes up to 255 as unsigned: signed where maddubs would saturate (AVX2)
    constexpr int kWide = kI8SignedCodes ? 0 : 128;
    set_i8<I8Legacy<LegacyQ8_0, kWide>>(t, DType::Q8_0);
    set_i8<I8Legacy<LegacyIQ4_NL, kWide>>(t, DType::IQ4_NL);
    set_i8<I8IQ4XS<kI8SignedCodes>>(t, DType::IQ4_XS);
}

} // namespace
} // namespace phi::cpu
