#include "backend/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_features.h"
#include "core/error.h"
#include "quant/quant.h"

namespace phi::cpu {

void layer_norm(const float* x, const float* w, const float* b, float eps, int n_rows, int dim, float* y) {
    for (int r = 0; r < n_rows; ++r) {
        const float* xr = x + static_cast<int64_t>(r) * dim;
        float* yr = y + static_cast<int64_t>(r) * dim;
        // two passes in double: the mean is subtracted before squaring, as torch does
        double mean = 0;
        for (int i = 0; i < dim; ++i) mean += xr[i];
        mean /= dim;
        double var = 0;
        for (int i = 0; i < dim; ++i) {
            const double d = xr[i] - mean;
            var += d * d;
        }
        var /= dim;
        const float inv = static_cast<float>(1.0 / std::sqrt(var + eps));
        const float m = static_cast<float>(mean);
        for (int i = 0; i < dim; ++i) yr[i] = (xr[i] - m) * inv * w[i] + (b ? b[i] : 0.0f);
    }
}

void rms_norm(const float* x, const float* w, float eps, int n_rows, int dim, float* y) {
    for (int r = 0; r < n_rows; ++r) {
        const float* xr = x + static_cast<int64_t>(r) * dim;
        float* yr = y + static_cast<int64_t>(r) * dim;
        double ss = 0;
        for (int i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
        const float inv = static_cast<float>(1.0 / std::sqrt(ss / dim + eps));
        for (int i = 0; i < dim; ++i) yr[i] = xr[i] * inv * w[i];
    }
}

void rope_neox(float* x, int n_tok, int64_t row_stride, int n_heads, int head_dim, int pos0,
               const RopeParams& rope) {
    const int half = rope.n_rot / 2;
    std::vector<float> cs(static_cast<size_t>(half) * 2);
    for (int t = 0; t < n_tok; ++t) {
        // angle computed in f32 like transformers (position * inv_freq), then cos/sin
        const float pos = static_cast<float>(pos0 + t);
        for (int i = 0; i < half; ++i) {
            const float theta = pos * rope.inv_freq[i];
            cs[2 * i] = std::cos(theta) * rope.mscale;
            cs[2 * i + 1] = std::sin(theta) * rope.mscale;
        }
        float* row = x + static_cast<int64_t>(t) * row_stride;
        for (int h = 0; h < n_heads; ++h) {
            float* v = row + static_cast<int64_t>(h) * head_dim;
            for (int i = 0; i < half; ++i) {
                const float a = v[i], b = v[i + half];
                const float c = cs[2 * i], s = cs[2 * i + 1];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

void gelu_tanh(float* x, size_t n) {
    const float k = 0.7978845608028654f;  // sqrt(2/pi)
    for (size_t i = 0; i < n; ++i) {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + std::tanh(k * (v + 0.044715f * v * v * v)));
    }
}

void swiglu(const float* gate_up, int n_rows, int ff, float* out) {
    for (int r = 0; r < n_rows; ++r) {
        const float* g = gate_up + static_cast<int64_t>(r) * 2 * ff;
        const float* u = g + ff;
        float* o = out + static_cast<int64_t>(r) * ff;
        for (int i = 0; i < ff; ++i) o[i] = u[i] * (g[i] / (1.0f + std::exp(-g[i])));
    }
}

void attention(const float* q, int64_t q_stride, const void* k_cache, const void* v_cache, DType cache_type,
               int slots, int n_tok, int pos0, const AttentionParams& p, float* out, ThreadPool& pool) {
    if (cache_type != DType::F32 && cache_type != DType::F16 && cache_type != DType::Q8_0 && cache_type != DType::Q4_0)
        fail(ErrorKind::unsupported, "KV cache type ", dtype_name(cache_type), " is not supported on the CPU");
    const int hd = p.head_dim;
    const int kv_width = p.n_head_kv * hd;
    // bytes of a cache row and of a head's slice of it (whole blocks when quantized)
    const size_t row_b = row_bytes(cache_type, kv_width), head_b = row_bytes(cache_type, hd);
    const int group = p.n_head / p.n_head_kv;
    const int64_t n_items = static_cast<int64_t>(n_tok) * p.n_head;
    pool.parallel_for(n_items, 1, [&](int64_t b, int64_t e) {
        std::vector<float> scores(static_cast<size_t>(pos0 + n_tok));
        std::vector<float> acc(hd), qf(hd), row(hd);
        // a head's slice of a cache row in f32: the row itself, or converted into `row`
        auto head = [&](const char* slice) -> const float* {
            if (cache_type == DType::F32) return reinterpret_cast<const float*>(slice);
            quant::dequantize_row(cache_type, slice, row.data(), hd);
            return row.data();
        };
        for (int64_t it = b; it < e; ++it) {
            const int t = static_cast<int>(it / p.n_head), h = static_cast<int>(it % p.n_head);
            const int kvh = h / group;
            const int pos = pos0 + t;
            const int lo = p.window > 0 ? std::max(0, pos - p.window + 1) : 0;
            const float* qh = q + t * q_stride + static_cast<int64_t>(h) * hd;
            for (int i = 0; i < hd; ++i) qf[i] = qh[i] * p.scale;
            // the row of position j: j, or in a ring j % slots (kept incrementally)
            const int r0 = slots ? lo % slots : lo;
            auto next = [&](int r) { return slots && r + 1 == slots ? 0 : r + 1; };
            float mx = -INFINITY;
            for (int j = lo, r = r0; j <= pos; ++j, r = next(r)) {
                const float* k = head(static_cast<const char*>(k_cache) + r * row_b + kvh * head_b);
                float s = 0;
                for (int i = 0; i < hd; ++i) s += qf[i] * k[i];
                scores[j] = s;
                mx = std::max(mx, s);
            }
            double sum = 0;
            for (int j = lo; j <= pos; ++j) {
                scores[j] = std::exp(scores[j] - mx);
                sum += scores[j];
            }
            std::fill(acc.begin(), acc.end(), 0.0f);
            for (int j = lo, r = r0; j <= pos; ++j, r = next(r)) {
                const float* v = head(static_cast<const char*>(v_cache) + r * row_b + kvh * head_b);
                const float w = scores[j];
                for (int i = 0; i < hd; ++i) acc[i] += w * v[i];
            }
            const float inv = static_cast<float>(1.0 / sum);
            float* o = out + t * static_cast<int64_t>(p.n_head) * hd + static_cast<int64_t>(h) * hd;
            for (int i = 0; i < hd; ++i) o[i] = acc[i] * inv;
        }
    });
}

namespace {
bool use_avx2(Isa isa) {
#if defined(PHICPP_X86)
    return isa != Isa::scalar;
#else
    return false;
#endif
}
} // namespace

void attention_auto(const float* q, int64_t q_stride, const void* k_cache, const void* v_cache, DType cache_type,
                    int slots, int n_tok, int pos0, const AttentionParams& p, float* out, ThreadPool& pool, Isa isa) {
#if defined(PHICPP_X86)
    if (use_avx2(isa) && (cache_type == DType::F32 || cache_type == DType::F16 || cache_type == DType::Q8_0 ||
                          cache_type == DType::Q4_0)) {
        if (isa >= Isa::avx512)
            return attention_avx512(q, q_stride, k_cache, v_cache, cache_type, slots, n_tok, pos0, p, out, pool);
        return attention_avx2(q, q_stride, k_cache, v_cache, cache_type, slots, n_tok, pos0, p, out, pool);
    }
#endif
    attention(q, q_stride, k_cache, v_cache, cache_type, slots, n_tok, pos0, p, out, pool);
}

void gelu_tanh_auto(float* x, size_t n, Isa isa) {
#if defined(PHICPP_X86)
    if (use_avx2(isa)) return gelu_tanh_avx2(x, n);
#endif
    gelu_tanh(x, n);
}

void swiglu_auto(const float* gate_up, int n_rows, int ff, float* out, Isa isa) {
#if defined(PHICPP_X86)
    if (use_avx2(isa)) return swiglu_avx2(gate_up, n_rows, ff, out);
#endif
    swiglu(gate_up, n_rows, ff, out);
}

void f32_to_f16_auto(const float* src, uint16_t* dst, size_t n, Isa isa) {
#if defined(PHICPP_X86)
    if (use_avx2(isa)) return f32_to_f16_avx2(src, dst, n);
#endif
    for (size_t i = 0; i < n; ++i) dst[i] = fp32_to_fp16(src[i]);
}

} // namespace phi::cpu
