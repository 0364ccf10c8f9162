// Attention for the CPU backend on x86, compiled twice with the flags of its
// includer: ops_avx2.cpp (AVX2 + FMA + F16C: 16 vector registers, blocks of 4
// queries) and ops_avx512.cpp (the same 256-bit code with AVX-512VL, whose 32
// registers take blocks of 8). Everything here has internal linkage, so each
// includer keeps its own copy, compiled for its ISA. No std:: containers or
// algorithms: an inline template instantiated here would be compiled with
// these flags and the linker may keep that copy for the whole program.
//
// The work is dealt as blocks of queries that read the same KV head; each
// query's sums are those it gets alone, in the same order (see QueryBlock), so
// both builds give the same bits, whatever the blocks.
#pragma once
#include <immintrin.h>

#include <math.h>

#include <new>

#include "backend/cpu/ops.h"
#include "quant/blocks.h"

namespace phi::cpu {
namespace {

inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// exp(x) for 8 floats, Cephes' expf: x = n ln2 + r with |r| <= ln2/2, a
// degree-6 polynomial for e^r (~1 ulp), 2^n built in the exponent bits.
// Inputs are clamped to [-87.3, 88.3] (the f32 range of normal results).
inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// Eight elements of a KV row (F32, F16, or Q8_0/Q4_0 blocks: quant/blocks.h)
// at element i, a multiple of 8; a block's values d * q exactly as
// quant::dequantize_row gives them.
inline __m256 load8(const void* row, DType t, int i) {
    if (t == DType::F16) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + i)));
    if (t == DType::F32) return _mm256_loadu_ps(static_cast<const float*>(row) + i);
    const int off = i % quant::QK;
    if (t == DType::Q8_0) {
        const auto* b = static_cast<const quant::BlockQ8_0*>(row) + i / quant::QK;
        const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b->qs + off)));
        return _mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(_cvtsh_ss(b->d)));
    }
    // Q4_0: values 0-15 the low nibbles of bytes 0-15, values 16-31 their high nibbles
    const auto* b = static_cast<const quant::BlockQ4_0*>(row) + i / quant::QK;
    __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b->qs + off % 16)));
    if (off >= 16) q = _mm256_srli_epi32(q, 4);
    q = _mm256_sub_epi32(_mm256_and_si256(q, _mm256_set1_epi32(0xF)), _mm256_set1_epi32(8));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(_cvtsh_ss(b->d)));
}
// One element of a float row (the tail of a head that is not a multiple of 8;
// a quantized head is whole blocks, so never one).
inline float load1(const void* row, DType t, int i) {
    return t == DType::F16 ? _cvtsh_ss(static_cast<const uint16_t*>(row)[i]) : static_cast<const float*>(row)[i];
}

// Per-thread scratch for one item. No std:: containers or algorithms in this
// file: an inline template instantiated here is compiled with AVX2 and the
// linker may keep this copy for the whole program.
struct FloatBuf {
    float* p = nullptr;
    int cap = 0;
    void reserve(int n) {
        if (cap >= n) return;
        ::operator delete(p);
        p = static_cast<float*>(::operator new(sizeof(float) * static_cast<size_t>(n)));
        cap = n;
    }
    ~FloatBuf() { ::operator delete(p); }
};
inline float max_f(float a, float b) { return a > b ? a : b; }
inline int max_i(int a, int b) { return a > b ? a : b; }
inline int min_i(int a, int b) { return a < b ? a : b; }

// Rows of one head in a KV cache: position j's row, or in a ring of `slots`
// rows, row j % slots. A query reads positions [lo, pos] with pos - lo < slots:
// with b0 the multiple of slots at or below lo, j - b0 < 2 slots, so the ring's
// row is one compare away (no division per key). head_bytes: the head's part
// of a row (what a key's prefetch covers).
struct HeadRows {
    const char* base;
    int64_t row_bytes;
    int head_bytes;
    int64_t slots;
    int64_t b0;
    const char* row(int64_t j) const {
        int64_t r = j;
        if (slots) {
            r -= b0;
            if (r >= slots) r -= slots;
        }
        return base + r * row_bytes;
    }
};

// A head's rows sit a whole cache row apart (n_head_kv heads per row: 6 KB
// for Phi-3-mini's f16 cache), a stride the hardware prefetchers do not
// follow: keys and values are requested this many positions ahead, and the
// values' passes over the columns run over chunks of keys small enough to stay
// in L1 from one pass to the next.
constexpr int kAhead = 16, kChunk = 64;
inline void prefetch_row(const char* p, int bytes) {
    for (int o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
    _mm_prefetch(p + bytes - 1, _MM_HINT_T0);
}

// An item of work: up to kBlock queries that read the same KV head (a few
// consecutive tokens of one head, or the query heads of a GQA group), so each
// key and value row loaded (and converted from f16) serves all of them.
// Query i sees keys [lo[i], pos[i]]; the block reads [lo_min, hi_max], and a
// key outside a query's range gets weight 0 in its sums, which leaves them
// exactly as they are over the query's own range.
constexpr int kMaxBlock = 8;
struct QueryBlock {
    int n = 0;
    int lo[kMaxBlock], pos[kMaxBlock];
    const float* q[kMaxBlock];  // the query rows (unscaled)
    float* o[kMaxBlock];        // where their outputs go
    int lo_min = 0, hi_max = 0;
};
struct AttnScratch {
    FloatBuf scores[kMaxBlock], q[kMaxBlock], acc[kMaxBlock];
    // for blocks of up to n queries (the score rows are the big ones: one float per key)
    void reserve(int n_keys, int hd, int n) {
        for (int i = 0; i < n; ++i) {
            scores[i].reserve(n_keys);
            q[i].reserve(hd);
            acc[i].reserve(hd);
        }
    }
};

// Scores of the Q queries with keys [j0, j0 + NK): Q * NK independent FMA
// chains (the FMA latency hidden), each key's row loaded once for all
// queries, then one horizontal sum each (in the order one query alone has).
template <int Q, int NK>
inline void scores_block(float* const* q, const HeadRows& K, DType type, int hd, int j0, int hi, float* const* sc) {
    const int hd8 = hd - hd % 8;
    const char* kr[NK];
    for (int u = 0; u < NK; ++u) kr[u] = K.row(j0 + u);
    for (int u = 0; u < NK; ++u)
        if (j0 + u + kAhead <= hi) prefetch_row(K.row(j0 + u + kAhead), K.head_bytes);
    __m256 a[Q][NK];
    for (int i = 0; i < Q; ++i)
        for (int u = 0; u < NK; ++u) a[i][u] = _mm256_setzero_ps();
    for (int c = 0; c < hd8; c += 8) {
        __m256 kv[NK];
        for (int u = 0; u < NK; ++u) kv[u] = load8(kr[u], type, c);
        for (int i = 0; i < Q; ++i) {
            const __m256 qv = _mm256_loadu_ps(q[i] + c);
            for (int u = 0; u < NK; ++u) a[i][u] = _mm256_fmadd_ps(qv, kv[u], a[i][u]);
        }
    }
    for (int i = 0; i < Q; ++i)
        for (int u = 0; u < NK; ++u) {
            float d = hsum8(a[i][u]);
            for (int c = hd8; c < hd; ++c) d += q[i][c] * load1(kr[u], type, c);
            sc[i][j0 + u] = d;
        }
}

// Where a values pass runs: keys [lo, hi] of the block's [.., end], adding
// to acc (first: starting from zero), prefetching the rows kAhead keys on
// (the first pass over a chunk).
struct ValuesRange {
    int lo, hi, end;
    bool first, prefetch;
};

// acc_i[c0, c0 + 8 NV) += sum over keys j in [lo, hi] of w_i[j] * V[j][c0, ...)
// for the Q queries: each V row's NV column vectors loaded once per pass for
// all queries, Q * NV independent FMA chains (carried across chunks through
// acc, so each sum is the same chain of FMAs over the keys in order).
template <int Q, int NV>
inline void values_pass(float* const* w, const HeadRows& V, DType type, const ValuesRange& r, int c0, float* const* acc) {
    __m256 a[Q][NV];
    for (int i = 0; i < Q; ++i)
        for (int u = 0; u < NV; ++u) a[i][u] = r.first ? _mm256_setzero_ps() : _mm256_loadu_ps(acc[i] + c0 + 8 * u);
    for (int j = r.lo; j <= r.hi; ++j) {
        if (r.prefetch && j + kAhead <= r.end) prefetch_row(V.row(j + kAhead), V.head_bytes);
        const char* v = V.row(j);
        __m256 vv[NV];
        for (int u = 0; u < NV; ++u) vv[u] = load8(v, type, c0 + 8 * u);
        for (int i = 0; i < Q; ++i) {
            const __m256 wj = _mm256_broadcast_ss(w[i] + j);
            for (int u = 0; u < NV; ++u) a[i][u] = _mm256_fmadd_ps(wj, vv[u], a[i][u]);
        }
    }
    for (int i = 0; i < Q; ++i)
        for (int u = 0; u < NV; ++u) _mm256_storeu_ps(acc[i] + c0 + 8 * u, a[i][u]);
}

// The column vectors a values pass takes at most for Q queries, and the keys
// a scores step takes: Q * NV (Q * NK) accumulators, the loaded vectors and a
// broadcast within the registers there are (16 with AVX2, as measured; 32 with
// AVX-512VL, whose EVEX forms reach ymm16-31). GCC keeps more accumulators of
// these loops in memory.
constexpr int min_c(int a, int b) { return a < b ? a : b; }
template <int Q, int kRegs>
constexpr int kMaxNV = kRegs == 16 ? (Q == 1 ? 8 : Q == 2 ? 5 : Q == 3 ? 3 : 2) : min_c(8, (kRegs - 2) / (Q + 1));
template <int Q, int kRegs>
constexpr int kKeys = kRegs == 16 ? (Q == 1 ? 4 : 2) : min_c(4, (kRegs - 2) / (Q + 1));

template <int Q, int kRegs>
inline void values_cols(int nv, float* const* w, const HeadRows& V, DType type, const ValuesRange& r, int c0,
                        float* const* acc) {
    switch (nv) {
        case 8: if constexpr (kMaxNV<Q, kRegs> >= 8) { values_pass<Q, 8>(w, V, type, r, c0, acc); break; } [[fallthrough]];
        case 7: if constexpr (kMaxNV<Q, kRegs> >= 7) { values_pass<Q, 7>(w, V, type, r, c0, acc); break; } [[fallthrough]];
        case 6: if constexpr (kMaxNV<Q, kRegs> >= 6) { values_pass<Q, 6>(w, V, type, r, c0, acc); break; } [[fallthrough]];
        case 5: if constexpr (kMaxNV<Q, kRegs> >= 5) { values_pass<Q, 5>(w, V, type, r, c0, acc); break; } [[fallthrough]];
        case 4: if constexpr (kMaxNV<Q, kRegs> >= 4) { values_pass<Q, 4>(w, V, type, r, c0, acc); break; } [[fallthrough]];
        case 3: if constexpr (kMaxNV<Q, kRegs> >= 3) { values_pass<Q, 3>(w, V, type, r, c0, acc); break; } [[fallthrough]];
        case 2: values_pass<Q, 2>(w, V, type, r, c0, acc); break;
        default: values_pass<Q, 1>(w, V, type, r, c0, acc); break;
    }
}

// Softmax weights of one query in place over its keys [lo, pos] (8 at a time),
// zero over the rest of the block's keys [lo_min, hi_max]; returns their sum.
inline double softmax_weights(float* sc, int lo, int pos, int lo_min, int hi_max) {
    // the largest score, 8 lanes at a time (max is exact: the order does not matter)
    __m256 vm = _mm256_set1_ps(-INFINITY);
    int j = lo;
    for (; j + 8 <= pos + 1; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(sc + j));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vm), _mm256_extractf128_ps(vm, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float mx = _mm_cvtss_f32(m4);
    for (; j <= pos; ++j) mx = max_f(mx, sc[j]);
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256 vsum = _mm256_setzero_ps();
    j = lo;
    for (; j + 8 <= pos + 1; j += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sc + j), vmx));
        _mm256_storeu_ps(sc + j, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    double sum = hsum8(vsum);
    for (; j <= pos; ++j) {
        sc[j] = expf(sc[j] - mx);
        sum += sc[j];
    }
    for (j = lo_min; j < lo; ++j) sc[j] = 0.0f;
    for (j = pos + 1; j <= hi_max; ++j) sc[j] = 0.0f;
    return sum;
}

template <int Q, int kRegs>
void attend_block(const QueryBlock& b, const HeadRows& K, const HeadRows& V, DType type, int hd, float scale,
                  AttnScratch& s) {
    float* q[Q];
    float* sc[Q];
    float* acc[Q];
    for (int i = 0; i < Q; ++i) {
        q[i] = s.q[i].p;
        sc[i] = s.scores[i].p;
        acc[i] = s.acc[i].p;
        for (int c = 0; c < hd; ++c) q[i][c] = b.q[i][c] * scale;
    }
    const int hd8 = hd - hd % 8;
    constexpr int NK = kKeys<Q, kRegs>;
    int j = b.lo_min;
    for (; j + NK <= b.hi_max + 1; j += NK) scores_block<Q, NK>(q, K, type, hd, j, b.hi_max, sc);
    for (; j <= b.hi_max; ++j) scores_block<Q, 1>(q, K, type, hd, j, b.hi_max, sc);
    double sum[Q];
    for (int i = 0; i < Q; ++i) sum[i] = softmax_weights(sc[i], b.lo[i], b.pos[i], b.lo_min, b.hi_max);
    // the head's 8-column vectors in as few passes over the keys as the
    // accumulators allow, split evenly (96 columns, one query: 2 x 48)
    const int nvec = hd8 / 8, passes = (nvec + kMaxNV<Q, kRegs> - 1) / kMaxNV<Q, kRegs>;
    for (int j0 = b.lo_min; j0 <= b.hi_max; j0 += kChunk) {
        ValuesRange r{j0, min_i(j0 + kChunk - 1, b.hi_max), b.hi_max, j0 == b.lo_min, true};
        for (int p = 0, c0 = 0; p < passes; ++p) {
            const int nv = (nvec - c0 / 8 + (passes - p) - 1) / (passes - p);
            values_cols<Q, kRegs>(nv, sc, V, type, r, c0, acc);
            r.prefetch = false;
            c0 += 8 * nv;
        }
    }
    for (int c = hd8; c < hd; ++c)
        for (int i = 0; i < Q; ++i) {
            float a = 0.0f;
            for (int jj = b.lo_min; jj <= b.hi_max; ++jj) a += sc[i][jj] * load1(V.row(jj), type, c);
            acc[i][c] = a;
        }
    for (int i = 0; i < Q; ++i) {
        const float inv = static_cast<float>(1.0 / sum[i]);
        for (int c = 0; c < hd; ++c) b.o[i][c] = acc[i][c] * inv;
    }
}

// Attention with blocks of up to kBlock queries (<= kMaxBlock) in kRegs registers.
template <int kBlock, int kRegs>
void attention_x86(const float* q, int64_t q_stride, const void* k_cache, const void* v_cache, DType cache_type,
                   int slots, int n_tok, int pos0, const AttentionParams& p, float* out, ThreadPool& pool) {
    static_assert(kBlock <= kMaxBlock, "blocks up to kMaxBlock queries");
    const int hd = p.head_dim;
    const int head_bytes = static_cast<int>(row_bytes(cache_type, hd));  // whole blocks when quantized
    const int64_t kv_row_bytes = static_cast<int64_t>(p.n_head_kv) * head_bytes;
    const int group = p.n_head / p.n_head_kv;
    // The queries of KV head g, in order: token t's heads g * group + 0..group-1,
    // then token t + 1's; items are blocks of bs of them: kBlock, or fewer where
    // that would leave threads without an item (a GQA model's decode step has
    // one block per KV head: 10 for Phi-3-medium, against 16 threads).
    const int64_t per_head = static_cast<int64_t>(n_tok) * group;
    int bs = kBlock;
    while (bs > 1 && (per_head + bs - 1) / bs * p.n_head_kv < pool.size()) bs /= 2;
    const int64_t blocks = (per_head + bs - 1) / bs;
    const int64_t n_items = blocks * p.n_head_kv;
    // Items are dealt round-robin: under the causal mask a late token costs
    // more than an early one, so contiguous chunks would leave one thread idle.
    auto job = [&](int ti, int nt) {
        thread_local AttnScratch s;
        s.reserve(pos0 + n_tok, hd, bs);
        for (int64_t it = ti; it < n_items; it += nt) {
            const int64_t blk = it / p.n_head_kv;
            const int kvh = static_cast<int>(it % p.n_head_kv);
            QueryBlock b;
            b.lo_min = pos0 + n_tok;
            for (int64_t r = blk * bs; r < per_head && b.n < bs; ++r, ++b.n) {
                const int t = static_cast<int>(r / group), h = kvh * group + static_cast<int>(r % group);
                const int pos = pos0 + t;
                b.pos[b.n] = pos;
                b.lo[b.n] = p.window > 0 ? max_i(0, pos - p.window + 1) : 0;
                b.q[b.n] = q + t * q_stride + static_cast<int64_t>(h) * hd;
                b.o[b.n] = out + t * static_cast<int64_t>(p.n_head) * hd + static_cast<int64_t>(h) * hd;
                b.lo_min = min_i(b.lo_min, b.lo[b.n]);
                b.hi_max = max_i(b.hi_max, pos);
            }
            const int64_t off = static_cast<int64_t>(kvh) * head_bytes;
            const int64_t b0 = slots ? b.lo_min - b.lo_min % slots : 0;
            const HeadRows K{static_cast<const char*>(k_cache) + off, kv_row_bytes, head_bytes, slots, b0};
            const HeadRows V{static_cast<const char*>(v_cache) + off, kv_row_bytes, head_bytes, slots, b0};
            switch (b.n) {
                case 8: if constexpr (kBlock >= 8) { attend_block<8, kRegs>(b, K, V, cache_type, hd, p.scale, s); break; } [[fallthrough]];
                case 7: if constexpr (kBlock >= 7) { attend_block<7, kRegs>(b, K, V, cache_type, hd, p.scale, s); break; } [[fallthrough]];
                case 6: if constexpr (kBlock >= 6) { attend_block<6, kRegs>(b, K, V, cache_type, hd, p.scale, s); break; } [[fallthrough]];
                case 5: if constexpr (kBlock >= 5) { attend_block<5, kRegs>(b, K, V, cache_type, hd, p.scale, s); break; } [[fallthrough]];
                case 4: attend_block<4, kRegs>(b, K, V, cache_type, hd, p.scale, s); break;
                case 3: attend_block<3, kRegs>(b, K, V, cache_type, hd, p.scale, s); break;
                case 2: attend_block<2, kRegs>(b, K, V, cache_type, hd, p.scale, s); break;
                default: attend_block<1, kRegs>(b, K, V, cache_type, hd, p.scale, s); break;
            }
        }
    };
    pool.run(JobRef(job));
}

} // namespace
} // namespace phi::cpu
