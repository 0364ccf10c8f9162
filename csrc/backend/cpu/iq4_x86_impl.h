// IQ4_XS decode, included by kernels_x86_impl.h (compiled once per ISA).
//
// An IQ4_XS super-block is 256 weights: an fp16 d, eight 6-bit sub-block
// scales (ls - 32) and 128 bytes of 4-bit indices into the 16 non-linear
// levels kValuesIQ4NL (-127..113). One byte shuffle turns 32 or 64 indices into
// levels. The activations are Q8_K (codes -127..127: quantize_q8_K's -127 / max
// scale never rounds past 127), so the levels meet them either by the sign
// trick (maddubs on |level| and the code with the level's sign, pairs at most
// 2 * 127 * 127) or, with VNNI, as unsigned level + 128 in vpdpbusd, less 128
// times the sub-block's code sum (exact in int32). Per block the sub-block
// sums are scaled and summed in integers and meet d * dy in one FMA into eight
// lanes, as the scalar reference's per-block float product does.
//
// Each token goes through the one-token kernel, so a token's result does not
// depend on the other tokens of the call.
#pragma once

namespace phi::cpu {
namespace {

// The activations of one token per super-block, in the order the index bytes
// unpack: a 64-byte vector of indices holds sub-blocks 4h..4h+3 (16 bytes
// each; low nibbles elements 0-15, high nibbles 16-31), so half h of a block is
// the low-nibble partners [y(4h)[0..15] .. y(4h+3)[0..15]], then the high
// ones [y(4h)[16..31] ..]. (A 32-byte vector of indices, sub-blocks 2p and
// 2p+1, meets the 32-byte pieces at 128 * (p / 2) + 32 * (p % 2), and + 64.)
// Then, for vpdpbusd's offset (AVX-512 only: the AVX2 path's sign trick needs
// none), per half 16 int32: lane 4j holds -128 times the code sum of
// sub-block 4h + j, the other lanes 0.
#if defined(__AVX512BW__)
constexpr bool kIQ4XSInit = true;
#else
constexpr bool kIQ4XSInit = false;
#endif
constexpr size_t kIQ4XSActBytes = QK_K + (kIQ4XSInit ? 128 : 0);
inline void regroup_iq4_xs(const BlockQ8_K* y, int64_t nb, int8_t* out) {
    for (int64_t ib = 0; ib < nb; ++ib) {
        int8_t* o = out + kIQ4XSActBytes * ib;
        int32_t init[32] = {};
        for (int s = 0; s < 8; ++s) {
            const int h = s / 4, j = s % 4;
            std::memcpy(o + 128 * h + 16 * j, y[ib].qs + 32 * s, 16);
            std::memcpy(o + 128 * h + 64 + 16 * j, y[ib].qs + 32 * s + 16, 16);
            if (kIQ4XSInit) init[16 * h + 4 * j] = -128 * (y[ib].bsums[2 * s] + y[ib].bsums[2 * s + 1]);
        }
        if (kIQ4XSInit) std::memcpy(o + QK_K, init, sizeof(init));
    }
}

// The eight sub-block scales ls - 32 of a block as int16: the low nibbles of
// scales_l (sub-block 2i in the low nibble of byte i, 2i+1 in the high one),
// the high two bits from bits 2s..2s+1 of scales_h (moved to the top of each
// 16-bit lane by a multiply, then down).
inline __m128i iq4_xs_scales16(const BlockIQ4_XS& b) {
    uint32_t sl;
    std::memcpy(&sl, b.scales_l, 4);
    const __m128i x = _mm_cvtsi32_si128(static_cast<int>(sl));
    const __m128i m4 = _mm_set1_epi8(0x0F);
    const __m128i low = _mm_cvtepu8_epi16(_mm_unpacklo_epi8(_mm_and_si128(x, m4), _mm_and_si128(_mm_srli_epi16(x, 4), m4)));
    const __m128i top = _mm_mullo_epi16(_mm_set1_epi16(static_cast<short>(b.scales_h)),
                                        _mm_setr_epi16(1 << 14, 1 << 12, 1 << 10, 1 << 8, 1 << 6, 1 << 4, 1 << 2, 1));
    const __m128i high = _mm_slli_epi16(_mm_srli_epi16(top, 14), 4);
    return _mm_sub_epi16(_mm_or_si128(low, high), _mm_set1_epi16(32));
}

#if defined(__AVX512BW__)
// Levels + 128 (unsigned) for vpdpbusd; the init lanes of the regrouped
// activations take the 128 back off. One vpmulld a half applies the four
// sub-blocks' scales to their lanes.
inline float dot1_iq4_xs(const BlockIQ4_XS* w, const BlockQ8_K* y, const int8_t* yw, int64_t nb) {
    const __m512i table = _mm512_xor_si512(  // (+ 128 is the sign bit flipped)
        _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kValuesIQ4NL))), _mm512_set1_epi8(-128));
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    // int32 lanes 4j..4j+3 take scale 4h + j
    const __m512i pick[2] = {_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                             _mm512_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7)};
    __m256 acc = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
        const BlockIQ4_XS& b = w[ib];
        prefetch_block(&b, sizeof(b));
        const int8_t* yb = yw + kIQ4XSActBytes * ib;
        const __m512i ls = _mm512_castsi256_si512(_mm256_cvtepi16_epi32(iq4_xs_scales16(b)));
        __m512i sumi = _mm512_setzero_si512();
        for (int h = 0; h < 2; ++h) {
            const __m512i q = _mm512_loadu_si512(b.qs + 64 * h);
            const __m512i lo = _mm512_shuffle_epi8(table, _mm512_and_si512(q, m4));
            const __m512i hi = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(q, 4), m4));
            __m512i s = _mm512_loadu_si512(yb + QK_K + 64 * h);
            s = _mm512_dpbusd_epi32(s, lo, _mm512_loadu_si512(yb + 128 * h));
            s = _mm512_dpbusd_epi32(s, hi, _mm512_loadu_si512(yb + 128 * h + 64));
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(s, _mm512_permutexvar_epi32(pick[h], ls)));
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(fold_halves(sumi)), _mm256_set1_ps(h2f(b.d) * y[ib].d), acc);
    }
    return hsum(acc);
}
#else
// The sign trick on 32-byte vectors (sub-blocks 2p, 2p+1); the int16 pair sums
// meet the scales in madd, one vector at a time (two would overflow int16).
inline float dot1_iq4_xs(const BlockIQ4_XS* w, const BlockQ8_K* y, const int8_t* yw, int64_t nb) {
    const __m256i table = iq4nl_table();
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    auto products = [](__m256i v, const int8_t* yp) {  // int16 pair sums of levels v with codes at yp
        const __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(yp));
        return _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(yv, v));
    };
    __m256 acc = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
        const BlockIQ4_XS& b = w[ib];
        prefetch_block(&b, sizeof(b));
        const int8_t* yb = yw + kIQ4XSActBytes * ib;
        const __m256i ls = _mm256_broadcastsi128_si256(iq4_xs_scales16(b));
        __m256i sumi = _mm256_setzero_si256();
        for (int p = 0; p < 4; ++p) {
            const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * p));
            const __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(q, m4));
            const __m256i hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
            const int8_t* yp = yb + 128 * (p / 2) + 32 * (p % 2);
            const __m256i sc = _mm256_shuffle_epi8(ls, lane16_pattern(2 * p, 2 * p + 1));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(products(lo, yp), sc));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(products(hi, yp + 64), sc));
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(h2f(b.d) * y[ib].d), acc);
    }
    return hsum(acc);
}
#endif

// Every token, one row after another (one stream per thread, as the K-quants
// decode): a row's blocks stay in L1 while the other tokens of the call meet
// them. Tokens go in blocks whose regrouped activations fit in L2 (the scratch
// stays that size), as the tiles' token blocks do.
void rows_iq4_xs(const MatmulArgs& a, int64_t r0, int64_t r1) {
    const int64_t nb = a.K / QK_K;
    const size_t tok_bytes = static_cast<size_t>(nb) * kIQ4XSActBytes;
    const int tb = token_block(static_cast<int64_t>(tok_bytes), a.n, 1);
    thread_local AlignedBytes buf;  // this thread's regrouped activations of a block of tokens
    int8_t* yw = reinterpret_cast<int8_t*>(buf.get(static_cast<size_t>(tb) * tok_bytes));
    for (int t0 = 0; t0 < a.n; t0 += tb) {
        const int t1 = static_cast<int>(min_i64(a.n, t0 + tb));
        for (int t = t0; t < t1; ++t)
            regroup_iq4_xs(reinterpret_cast<const BlockQ8_K*>(a.x + t * a.x_stride), nb, yw + (t - t0) * tok_bytes);
        for (int64_t r = r0; r < r1; ++r) {
            const auto* w = reinterpret_cast<const BlockIQ4_XS*>(a.w + r * a.w_stride);
            const float bias = a.bias ? a.bias[r] : 0.0f;
            for (int t = t0; t < t1; ++t) {
                const auto* y = reinterpret_cast<const BlockQ8_K*>(a.x + t * a.x_stride);
                a.y[t * a.ldy + r] = dot1_iq4_xs(w, y, yw + (t - t0) * tok_bytes, nb) + bias;
            }
        }
    }
}

} // namespace
} // namespace phi::cpu
