// Q4_0 in the interleaved x8 layout (quant/repack.h), included by
// kernels_x86_impl.h (compiled once per ISA).
//
// Why: in the file layout a decode kernel gets one row's block sums in
// separate registers and must fold them (horizontal adds) and gather the
// rows' scales before it can scale them; for Q4_0 that bookkeeping, not the
// multiply-adds, bounded the kernel (~11 GB/s on one core from cache). With
// 8 rows interleaved, quad j of a block of all 8 rows is one 32-byte load,
// the maddubs results land one row per 32-bit lane, and the 8 scales are one
// 16-byte load: per block of 8 rows, 4 loads, 8 multiply-adds and one FMA.
#pragma once

#include "quant/repack.h"

namespace phi::cpu {
namespace {

using quant::BlockQ4_0x8;
using quant::kQ4_0x8Rows;

// One block of 8 rows as unsigned nibbles u = q + 8 in 0..15: quad j of the
// low nibbles (elements 4j..4j+3 of every row) in lo[j], of the high ones in hi[j].
struct Q4x8Nibbles {
    __m256i lo[4], hi[4];
};
inline Q4x8Nibbles q4_0_x8_unpack(const BlockQ4_0x8& b) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    Q4x8Nibbles u;
    for (int j = 0; j < 4; ++j) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs[j]));
        u.lo[j] = _mm256_and_si256(v, m4);
        u.hi[j] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
    return u;
}

// Sum over one block of 8 rows: lane r = sum_i u[r][i] * y[i] (exact integers,
// so any token's sums are the same however the tokens are grouped).
inline __m256i q4_0_x8_block_sums(const Q4x8Nibbles& u, const int8_t* yq) {
    auto acts = [&](int j, __m256i* ya, __m256i* yb) {
        int32_t a, c;  // activations of quad j (low nibbles) and of quad j + 4 (high nibbles), to every lane
        std::memcpy(&a, yq + 4 * j, 4);
        std::memcpy(&c, yq + 16 + 4 * j, 4);
        *ya = _mm256_set1_epi32(a);
        *yb = _mm256_set1_epi32(c);
    };
#if defined(PHI_DPBUSD256)
    __m256i s = _mm256_setzero_si256();
    for (int j = 0; j < 4; ++j) {
        __m256i ya, yb;
        acts(j, &ya, &yb);
        s = PHI_DPBUSD256(PHI_DPBUSD256(s, u.lo[j], ya), u.hi[j], yb);
    }
    return s;
#else
    // int16 lanes hold 16 products of |u * y| <= 15 * 128: at most 30720, no overflow
    __m256i s16 = _mm256_setzero_si256();
    for (int j = 0; j < 4; ++j) {
        __m256i ya, yb;
        acts(j, &ya, &yb);
        s16 = _mm256_add_epi16(s16, _mm256_add_epi16(_mm256_maddubs_epi16(u.lo[j], ya), _mm256_maddubs_epi16(u.hi[j], yb)));
    }
    return _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
#endif
}

// The same sums straight from the block (decode's one-token loop).
inline __m256i q4_0_x8_block_sums(const BlockQ4_0x8& b, const int8_t* yq) {
    return q4_0_x8_block_sums(q4_0_x8_unpack(b), yq);
}

// One token's activations, prepared once per call: the block scale, and
// 8 * sum(q) (the "- 8" of every weight, the same for all rows).
struct Q4x8Act {
    float d;
    int32_t m8;
};

inline void prep_q4_0_x8_act(const BlockQ8_0* y, int64_t nb, Q4x8Act* out) {
    for (int64_t ib = 0; ib < nb; ++ib) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[ib].qs));
        const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
        out[ib].d = h2f(y[ib].d);
        out[ib].m8 = 8 * _mm_cvtsi128_si32(t);
    }
}

// N tokens (from t) against one group of 8 rows: each block's nibbles are
// unpacked once for all of them; a token's arithmetic is the same for any N.
template <int N>
inline void q4_0_x8_tile(const MatmulArgs& a, const BlockQ4_0x8* w, int64_t nb, const Q4x8Act* act, int64_t r, int t) {
    const __m256 bias = a.bias ? _mm256_loadu_ps(a.bias + r) : _mm256_setzero_ps();
    __m256 acc[N];
    const BlockQ8_0* y[N];
    for (int i = 0; i < N; ++i) {
        acc[i] = bias;
        y[i] = reinterpret_cast<const BlockQ8_0*>(a.x + (t + i) * a.x_stride);
    }
    for (int64_t ib = 0; ib < nb; ++ib) {
        // One sequential stream per thread, so a fixed distance works. One core,
        // 226 MB matrix (Zen 3): one prefetch per record (every third line
        // missed) 5.7-6.1 GB/s, all three lines 9.4-12.2 GB/s, 2-32 KiB ahead all
        // within noise. A 2-core Xeon with AMX wants it short: Phi-3-mini Q4_0
        // decode 9.4 t/s at 4 KiB, 12.1-12.3 at 2 KiB, 10.8 at 576 bytes
        // (docs/BENCHMARKS.md, issue 17).
        if (t == 0) {  // the 144-byte record spans three cache lines
            const char* pb = reinterpret_cast<const char*>(w + ib) + kQ4x8PrefetchAhead;
            _mm_prefetch(pb, _MM_HINT_T0);
            _mm_prefetch(pb + 64, _MM_HINT_T0);
            _mm_prefetch(pb + 128, _MM_HINT_T0);
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[ib].d)));
        const Q4x8Nibbles u = q4_0_x8_unpack(w[ib]);
        for (int i = 0; i < N; ++i) {
            const Q4x8Act& p = act[(t + i) * nb + ib];
            const __m256i s = _mm256_sub_epi32(q4_0_x8_block_sums(u, y[i][ib].qs), _mm256_set1_epi32(p.m8));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(p.d)), acc[i]);
        }
    }
    for (int i = 0; i < N; ++i) _mm256_storeu_ps(a.y + (t + i) * a.ldy + r, acc[i]);
}

// Decode: one token against G consecutive groups of 8 rows at once: each
// block's activations are broadcast once for 8G rows, and the G streams' loads
// and multiply-adds interleave. Each row's arithmetic is q4_0_x8_tile<1>'s.
// kPrefetch: each stream's records a.walk.q4x8_prefetch bytes ahead are prefetched
// (the CPU's choice: cpu_features.h).
template <int G, bool kPrefetch>
inline void q4_0_x8_decode_groups(const MatmulArgs& a, const BlockQ4_0x8* w, int64_t nb, const Q4x8Act* act,
                                  int64_t r) {
    __m256 acc[G];
    for (int g = 0; g < G; ++g)
        acc[g] = a.bias ? _mm256_loadu_ps(a.bias + r + g * kQ4_0x8Rows) : _mm256_setzero_ps();
    const auto* y = reinterpret_cast<const BlockQ8_0*>(a.x);
    for (int64_t ib = 0; ib < nb; ++ib) {
        const __m256 dy = _mm256_set1_ps(act[ib].d);
        const __m256i m8 = _mm256_set1_epi32(act[ib].m8);
        for (int g = 0; g < G; ++g) {
            const BlockQ4_0x8& b = w[g * nb + ib];
            if constexpr (kPrefetch) {  // the 144-byte record's three lines, per stream
                const char* pb = reinterpret_cast<const char*>(&b) + a.walk.q4x8_prefetch;
                _mm_prefetch(pb, _MM_HINT_T0);
                _mm_prefetch(pb + 64, _MM_HINT_T0);
                _mm_prefetch(pb + 128, _MM_HINT_T0);
            }
            const __m256i s = _mm256_sub_epi32(q4_0_x8_block_sums(b, y[ib].qs), m8);
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.d)));
            acc[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, dy), acc[g]);
        }
    }
    for (int g = 0; g < G; ++g) _mm256_storeu_ps(a.y + r + g * kQ4_0x8Rows, acc[g]);
}

// The last n < kTile tokens as one tile of n.
template <int kMax>
inline void q4_0_x8_rest(int n, const MatmulArgs& a, const BlockQ4_0x8* w, int64_t nb, const Q4x8Act* act, int64_t r,
                         int t) {
    if constexpr (kMax >= 1) {
        if (n == kMax) return q4_0_x8_tile<kMax>(a, w, nb, act, r, t);
        q4_0_x8_rest<kMax - 1>(n, a, w, nb, act, r, t);
    }
}

// Rows [r0, r1) (multiples of 8) for every token. Tokens go in tiles inside a
// group, so a batch of a few tokens reads each group's 8 rows from memory once
// and unpacks each block once per tile.
void rows_q4_0_x8(const MatmulArgs& a, int64_t r0, int64_t r1) {
    const int64_t nb = a.K / QK;
    thread_local AlignedBytes buf;
    auto* act = reinterpret_cast<Q4x8Act*>(buf.get(sizeof(Q4x8Act) * static_cast<size_t>(nb * a.n)));
    for (int t = 0; t < a.n; ++t)
        prep_q4_0_x8_act(reinterpret_cast<const BlockQ8_0*>(a.x + t * a.x_stride), nb, act + t * nb);
    const size_t group_bytes = kQ4_0x8Rows * a.w_stride;
    // Prefill too goes through here, not through the f32 GEMM: with each block
    // unpacked once per tile, the 8-bit products win (1B Phi-3 shape, 2 threads,
    // Zen 5: pp64 / pp256 378 / 357 t/s against the GEMM's 237 / 270 with
    // AVX-512, 275 / 262 against 227 / 221 with AVX2 and tiles of 2)
#if defined(__AVX512F__)
    constexpr int kTile = 8;  // 32 vector registers: 8 of nibbles, 8 accumulators, temporaries
#else
    constexpr int kTile = 4;  // 16 registers: 8 of nibbles, 4 accumulators, temporaries
#endif
    // Decode takes 4 groups (32 rows) at a time, or one where the CPU reads a single stream
    // faster (DecodeWalk). Phi-3-mini Q4_0, 2 threads, a 2-vCPU Xeon (AVX-512, 480 MiB L3):
    // 12.1-12.3 t/s one group at a time, 13.1-13.5 two, 13.9-14.5 four, 13.2-13.3 eight (AVX2
    // kernels: 14.0 four, 12.8 eight); a 2-vCPU Zen 4: 22.4-23.0 one, 13.4-14.6 two, 16.8-17.8 four
    constexpr int kDecodeGroups = 4;
    int64_t r = r0;
    auto group = [&](int64_t row) {  // rows row..row + 7
        return reinterpret_cast<const BlockQ4_0x8*>(a.w + row / kQ4_0x8Rows * group_bytes);
    };
    if (a.n == 1) {  // decode: kDecodeGroups groups at a time (unless one stream), then the rest one by one
        auto decode = [&](auto prefetch) {
            if (!a.walk.one_stream)
                for (; r + kDecodeGroups * kQ4_0x8Rows <= r1; r += kDecodeGroups * kQ4_0x8Rows)
                    q4_0_x8_decode_groups<kDecodeGroups, prefetch.value>(a, group(r), nb, act, r);
            for (; r < r1; r += kQ4_0x8Rows) q4_0_x8_decode_groups<1, prefetch.value>(a, group(r), nb, act, r);
        };
        if (a.walk.q4x8_prefetch > 0) decode(std::true_type{});
        else decode(std::false_type{});
        return;
    }
    for (; r < r1; r += kQ4_0x8Rows) {
        const BlockQ4_0x8* w = group(r);
        int t = 0;  // full tiles, then the rest in one (a token's arithmetic is the same in any)
        for (; t + kTile <= a.n; t += kTile) q4_0_x8_tile<kTile>(a, w, nb, act, r, t);
        if (t < a.n) q4_0_x8_rest<kTile - 1>(a.n - t, a, w, nb, act, r, t);
    }
}

} // namespace
} // namespace phi::cpu
