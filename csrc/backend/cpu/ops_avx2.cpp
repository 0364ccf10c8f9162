// AVX2 + FMA + F16C versions of the CPU ops whose scalar form costs real time
// in a forward pass: attention (O(n^2) in the prompt; attention_x86_impl.h),
// and the activations built on exp (GELU-tanh, SwiGLU). ops.cpp keeps the
// scalar definitions, which the tests use as the reference, and dispatches
// here on AVX2 CPUs.
#include "backend/cpu/ops.h"

#if defined(PHICPP_X86)
#include "backend/cpu/attention_x86_impl.h"

namespace phi::cpu {

void attention_avx2(const float* q, int64_t q_stride, const void* k_cache, const void* v_cache, DType cache_type,
                    int slots, int n_tok, int pos0, const AttentionParams& p, float* out, ThreadPool& pool) {
    attention_x86<4, 16>(q, q_stride, k_cache, v_cache, cache_type, slots, n_tok, pos0, p, out, pool);
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
