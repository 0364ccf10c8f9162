// AVX2 + FMA + F16C versions of the CPU ops whose scalar form costs real time
// in a forward pass: attention (O(n^2) in the prompt), and the activations
// built on exp (GELU-tanh, SwiGLU). ops.cpp keeps the scalar definitions,
// which the tests use as the reference, and dispatches here on AVX2 CPUs.
#include "backend/cpu/ops.h"

#if defined(PHICPP_X86)
#include <immintrin.h>

#include <math.h>

#include <new>

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

// Eight elements of a KV row (f32 or f16) at element i.
inline __m256 load8(const void* row, bool f16, int i) {
    if (f16) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + i)));
    return _mm256_loadu_ps(static_cast<const float*>(row) + i);
}
inline float load1(const void* row, bool f16, int i) {
    return f16 ? _cvtsh_ss(static_cast<const uint16_t*>(row)[i]) : static_cast<const float*>(row)[i];
}

// Per-thread scratch for one (token, head) item. No std:: containers or
// algorithms in this file: an inline template instantiated here is compiled
// with AVX2 and the linker may keep this copy for the whole program.
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
struct AttnScratch {
    FloatBuf scores, acc, q;
    void reserve(int n_keys, int hd) {
        scores.reserve(n_keys);
        acc.reserve(hd);
        q.reserve(hd);
    }
};
inline float max_f(float a, float b) { return a > b ? a : b; }
inline int max_i(int a, int b) { return a > b ? a : b; }

// Rows of one head in a KV cache: position j's row, or in a ring of `slots`
// rows, row j % slots. A query reads positions [lo, pos] with pos - lo < slots:
// with b0 the multiple of slots at or below lo, j - b0 < 2 slots, so the ring's
// row is one compare away (no division per key).
struct HeadRows {
    const char* base;
    int64_t row_bytes;
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

// The dot products of q with keys [j0, j0 + NK): one accumulator chain per key
// (NK independent FMA chains, so the FMA latency is hidden), then one
// horizontal sum each.
template <int NK>
inline void scores_block(const float* q, const HeadRows& K, bool f16, int hd, int j0, float* sc) {
    const int hd8 = hd - hd % 8;
    const char* kr[NK];
    for (int u = 0; u < NK; ++u) kr[u] = K.row(j0 + u);
    __m256 a[NK];
    for (int u = 0; u < NK; ++u) a[u] = _mm256_setzero_ps();
    for (int i = 0; i < hd8; i += 8) {
        const __m256 qv = _mm256_loadu_ps(q + i);
        for (int u = 0; u < NK; ++u) a[u] = _mm256_fmadd_ps(qv, load8(kr[u], f16, i), a[u]);
    }
    for (int u = 0; u < NK; ++u) {
        float d = hsum8(a[u]);
        for (int i = hd8; i < hd; ++i) d += q[i] * load1(kr[u], f16, i);
        sc[j0 + u] = d;
    }
}

// acc[c0, c0 + 8 NV) = sum over keys j in [lo, hi] of w[j] * V[j][c0, ...): all
// NV column vectors of a key in one pass (each V row read once per pass, NV
// independent FMA chains).
template <int NV>
inline void values_pass(const float* w, const HeadRows& V, bool f16, int lo, int hi, int c0, float* acc) {
    __m256 a[NV];
    for (int u = 0; u < NV; ++u) a[u] = _mm256_setzero_ps();
    for (int j = lo; j <= hi; ++j) {
        const char* v = V.row(j);
        const __m256 wj = _mm256_broadcast_ss(w + j);
        for (int u = 0; u < NV; ++u) a[u] = _mm256_fmadd_ps(wj, load8(v, f16, c0 + 8 * u), a[u]);
    }
    for (int u = 0; u < NV; ++u) _mm256_storeu_ps(acc + c0 + 8 * u, a[u]);
}

// Columns [c0, c0 + 8 nv) with nv <= 8 (GCC keeps more accumulators of this loop in memory).
inline void values_cols(int nv, const float* w, const HeadRows& V, bool f16, int lo, int hi, int c0, float* acc) {
    switch (nv) {
        case 8: values_pass<8>(w, V, f16, lo, hi, c0, acc); break;
        case 7: values_pass<7>(w, V, f16, lo, hi, c0, acc); break;
        case 6: values_pass<6>(w, V, f16, lo, hi, c0, acc); break;
        case 5: values_pass<5>(w, V, f16, lo, hi, c0, acc); break;
        case 4: values_pass<4>(w, V, f16, lo, hi, c0, acc); break;
        case 3: values_pass<3>(w, V, f16, lo, hi, c0, acc); break;
        case 2: values_pass<2>(w, V, f16, lo, hi, c0, acc); break;
        default: values_pass<1>(w, V, f16, lo, hi, c0, acc); break;
    }
}

void attend_one(const float* qh, const HeadRows& K, const HeadRows& V, bool f16, int lo, int pos, int hd,
                float scale, AttnScratch& s, float* o) {
    float* q = s.q.p;
    for (int i = 0; i < hd; ++i) q[i] = qh[i] * scale;
    const int hd8 = hd - hd % 8;
    float* sc = s.scores.p;
    int j = lo;
    for (; j + 4 <= pos + 1; j += 4) scores_block<4>(q, K, f16, hd, j, sc);
    for (; j <= pos; ++j) scores_block<1>(q, K, f16, hd, j, sc);
    float mx = -INFINITY;
    for (j = lo; j <= pos; ++j) mx = max_f(mx, sc[j]);
    // softmax weights, 8 at a time
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
    // weighted sum of values: the head's 8-column vectors in as few passes
    // over the keys as 8 accumulators allow, split evenly (96 columns: 2 x 48)
    float* acc = s.acc.p;
    const int nvec = hd8 / 8, passes = (nvec + 7) / 8;
    for (int p = 0, c0 = 0; p < passes; ++p) {
        const int nv = (nvec - c0 / 8 + (passes - p) - 1) / (passes - p);
        values_cols(nv, sc, V, f16, lo, pos, c0, acc);
        c0 += 8 * nv;
    }
    for (int c = hd8; c < hd; ++c) {
        float a = 0.0f;
        for (int jj = lo; jj <= pos; ++jj) a += sc[jj] * load1(V.row(jj), f16, c);
        acc[c] = a;
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int c = 0; c < hd; ++c) o[c] = acc[c] * inv;
}

} // namespace

void attention_avx2(const float* q, int64_t q_stride, const void* k_cache, const void* v_cache, DType cache_type,
                    int slots, int n_tok, int pos0, const AttentionParams& p, float* out, ThreadPool& pool) {
    const int hd = p.head_dim;
    const bool f16 = cache_type == DType::F16;
    const int64_t row_bytes = static_cast<int64_t>(p.n_head_kv) * hd * (f16 ? 2 : 4);
    const int group = p.n_head / p.n_head_kv;
    const int64_t n_items = static_cast<int64_t>(n_tok) * p.n_head;
    // Items are dealt round-robin: under the causal mask a late token costs
    // more than an early one, so contiguous chunks would leave one thread idle.
    auto job = [&](int ti, int nt) {
        thread_local AttnScratch s;
        s.reserve(pos0 + n_tok, hd);
        for (int64_t it = ti; it < n_items; it += nt) {
            const int t = static_cast<int>(it / p.n_head), h = static_cast<int>(it % p.n_head);
            const int kvh = h / group;
            const int pos = pos0 + t;
            const int lo = p.window > 0 ? max_i(0, pos - p.window + 1) : 0;
            const int64_t off = static_cast<int64_t>(kvh) * hd * (f16 ? 2 : 4);
            const int64_t b0 = slots ? lo - lo % slots : 0;
            const HeadRows K{static_cast<const char*>(k_cache) + off, row_bytes, slots, b0};
            const HeadRows V{static_cast<const char*>(v_cache) + off, row_bytes, slots, b0};
            attend_one(q + t * q_stride + static_cast<int64_t>(h) * hd, K, V, f16, lo, pos, hd, p.scale, s,
                       out + t * static_cast<int64_t>(p.n_head) * hd + static_cast<int64_t>(h) * hd);
        }
    };
    pool.run(JobRef(job));
}

// x * sigmoid(2u) with u = sqrt(2/pi) (x + 0.044715 x^3): the same function as
// 0.5 x (1 + tanh(u)), written so that no cancellation occurs for x << 0.
void gelu_tanh_avx2(float* x, size_t n) {
    const __m256 k2 = _mm256_set1_ps(-2.0f * 0.7978845608028654f), c = _mm256_set1_ps(0.044715f);
    const __m256 one = _mm256_set1_ps(1.0f), limit = _mm256_set1_ps(80.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 inner = _mm256_fmadd_ps(_mm256_mul_ps(c, v), _mm256_mul_ps(v, v), v);
        const __m256 arg = _mm256_mul_ps(k2, inner);
        const __m256 y = _mm256_div_ps(v, _mm256_add_ps(one, exp8(arg)));
        // past e^80 the result is 0 to f32 precision; exp8's clamp would leave v / 2e38 for huge |v|
        _mm256_storeu_ps(x + i, _mm256_andnot_ps(_mm256_cmp_ps(arg, limit, _CMP_GT_OQ), y));
    }
    if (i < n) gelu_tanh(x + i, n - i);
}

void swiglu_avx2(const float* gate_up, int n_rows, int ff, float* out) {
    const __m256 one = _mm256_set1_ps(1.0f), neg = _mm256_set1_ps(-1.0f), limit = _mm256_set1_ps(80.0f);
    for (int r = 0; r < n_rows; ++r) {
        const float* g = gate_up + static_cast<int64_t>(r) * 2 * ff;
        const float* u = g + ff;
        float* o = out + static_cast<int64_t>(r) * ff;
        int i = 0;
        for (; i + 8 <= ff; i += 8) {
            const __m256 gv = _mm256_loadu_ps(g + i);
            const __m256 arg = _mm256_mul_ps(neg, gv);
            const __m256 silu = _mm256_andnot_ps(_mm256_cmp_ps(arg, limit, _CMP_GT_OQ),
                                                 _mm256_div_ps(gv, _mm256_add_ps(one, exp8(arg))));
            _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(u + i), silu));
        }
        for (; i < ff; ++i) o[i] = u[i] * (g[i] / (1.0f + expf(-g[i])));
    }
}

void f32_to_f16_avx2(const float* src, uint16_t* dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)  // F16C rounds to nearest even, as the scalar fp32_to_fp16
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; ++i) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

} // namespace phi::cpu
#endif
