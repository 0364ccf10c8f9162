// Legacy 32-element formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, and Q8_1 (the
// activation format of the _1 types). Quantizers follow ggml's
// quantize_row_*_ref exactly (same max search, same truncating casts), so the
// bytes match llama.cpp's and gguf-py's.
#include <cmath>
#include <cstring>

#include "quant/blocks.h"
#include "quant/formats.h"

namespace phi::quant {

namespace {

inline float h2f(uint16_t h) { return fp16_to_fp32(h); }
inline uint16_t f2h(float f) { return fp32_to_fp16(f); }
inline int min_int(int a, int b) { return a < b ? a : b; }
// float -> int8 / uint8 as the casts of ggml's reference code give them for any
// value a finite row produces; NaN (and the out-of-range values infinities
// make) saturate instead of an undefined cast: -128 / 0 for NaN. Activations
// of a broken model reach here at run time.
inline int8_t to_i8(float v) {
    return v > -129.0f && v < 128.0f ? static_cast<int8_t>(v) : static_cast<int8_t>(v > 0 ? 127 : -128);
}
inline uint8_t to_u8(float v) {
    return v > -1.0f && v < 256.0f ? static_cast<uint8_t>(v) : static_cast<uint8_t>(v > 0 ? 255 : 0);
}

// The element of largest magnitude, with its sign (first one on ties).
float signed_absmax(const float* x, int n) {
    float amax = 0, max = 0;
    for (int j = 0; j < n; ++j)
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
    return max;
}

void min_max(const float* x, int n, float* mn, float* mx) {
    float lo = 3.402823466e+38f, hi = -3.402823466e+38f;
    for (int j = 0; j < n; ++j) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}

// ---------------------------------------------------------------- Q4_0
void quantize_q4_0(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ4_0*>(dst);
    for (int64_t i = 0; i < n / QK; ++i, x += QK) {
        const float d = signed_absmax(x, QK) / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        for (int j = 0; j < QK / 2; ++j) {
            const uint8_t a = static_cast<uint8_t>(min_int(15, to_i8(x[j] * id + 8.5f)));
            const uint8_t b = static_cast<uint8_t>(min_int(15, to_i8(x[QK / 2 + j] * id + 8.5f)));
            y[i].qs[j] = static_cast<uint8_t>(a | (b << 4));
        }
    }
}
void dequantize_q4_0(const void* src, float* y, int64_t n) {
    const auto* b = static_cast<const BlockQ4_0*>(src);
    for (int64_t i = 0; i < n / QK; ++i, y += QK) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < QK / 2; ++j) {
            y[j] = ((b[i].qs[j] & 0xF) - 8) * d;
            y[j + QK / 2] = ((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}
float dot_q4_0(const void* w, const void* xq, int64_t n) {
    const auto* a = static_cast<const BlockQ4_0*>(w);
    const auto* b = static_cast<const BlockQ8_0*>(xq);
    float sum = 0;
    for (int64_t i = 0; i < n / QK; ++i) {
        int s = 0;
        for (int j = 0; j < QK / 2; ++j)
            s += ((a[i].qs[j] & 0xF) - 8) * b[i].qs[j] + ((a[i].qs[j] >> 4) - 8) * b[i].qs[j + QK / 2];
        sum += s * (h2f(a[i].d) * h2f(b[i].d));
    }
    return sum;
}

// ---------------------------------------------------------------- Q4_1
void quantize_q4_1(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ4_1*>(dst);
    for (int64_t i = 0; i < n / QK; ++i, x += QK) {
        float mn, mx;
        min_max(x, QK, &mn, &mx);
        const float d = (mx - mn) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        y[i].m = f2h(mn);
        for (int j = 0; j < QK / 2; ++j) {
            const uint8_t a = static_cast<uint8_t>(min_int(15, to_i8((x[j] - mn) * id + 0.5f)));
            const uint8_t b = static_cast<uint8_t>(min_int(15, to_i8((x[QK / 2 + j] - mn) * id + 0.5f)));
            y[i].qs[j] = static_cast<uint8_t>(a | (b << 4));
        }
    }
}
void dequantize_q4_1(const void* src, float* y, int64_t n) {
    const auto* b = static_cast<const BlockQ4_1*>(src);
    for (int64_t i = 0; i < n / QK; ++i, y += QK) {
        const float d = h2f(b[i].d), m = h2f(b[i].m);
        for (int j = 0; j < QK / 2; ++j) {
            y[j] = (b[i].qs[j] & 0xF) * d + m;
            y[j + QK / 2] = (b[i].qs[j] >> 4) * d + m;
        }
    }
}
float dot_q4_1(const void* w, const void* xq, int64_t n) {
    const auto* a = static_cast<const BlockQ4_1*>(w);
    const auto* b = static_cast<const BlockQ8_1*>(xq);
    float sum = 0;
    for (int64_t i = 0; i < n / QK; ++i) {
        int s = 0;
        for (int j = 0; j < QK / 2; ++j) s += (a[i].qs[j] & 0xF) * b[i].qs[j] + (a[i].qs[j] >> 4) * b[i].qs[j + QK / 2];
        // sum(d*q + m) * x = d*dx*sum(q*qx) + m * (dx*sum(qx)) and Q8_1 stores dx*sum(qx) in s
        sum += (h2f(a[i].d) * h2f(b[i].d)) * s + h2f(a[i].m) * h2f(b[i].s);
    }
    return sum;
}

// ---------------------------------------------------------------- Q5_0 / Q5_1
// Bit 4 of element j lives in bit j of the 32-bit qh (little endian).
inline uint32_t load_qh(const uint8_t* qh) {
    uint32_t v;
    std::memcpy(&v, qh, 4);
    return v;
}

void quantize_q5_0(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ5_0*>(dst);
    for (int64_t i = 0; i < n / QK; ++i, x += QK) {
        const float d = signed_absmax(x, QK) / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; ++j) {
            const uint8_t a = static_cast<uint8_t>(min_int(31, to_i8(x[j] * id + 16.5f)));
            const uint8_t b = static_cast<uint8_t>(min_int(31, to_i8(x[QK / 2 + j] * id + 16.5f)));
            y[i].qs[j] = static_cast<uint8_t>((a & 0xF) | ((b & 0xF) << 4));
            qh |= ((a & 0x10u) >> 4) << j;
            qh |= ((b & 0x10u) >> 4) << (j + QK / 2);
        }
        std::memcpy(y[i].qh, &qh, 4);
    }
}
void dequantize_q5_0(const void* src, float* y, int64_t n) {
    const auto* b = static_cast<const BlockQ5_0*>(src);
    for (int64_t i = 0; i < n / QK; ++i, y += QK) {
        const float d = h2f(b[i].d);
        const uint32_t qh = load_qh(b[i].qh);
        for (int j = 0; j < QK / 2; ++j) {
            y[j] = static_cast<int>(((b[i].qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - 16) * d;
            y[j + QK / 2] = static_cast<int>(((b[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16) * d;
        }
    }
}
float dot_q5_0(const void* w, const void* xq, int64_t n) {
    const auto* a = static_cast<const BlockQ5_0*>(w);
    const auto* b = static_cast<const BlockQ8_0*>(xq);
    float sum = 0;
    for (int64_t i = 0; i < n / QK; ++i) {
        const uint32_t qh = load_qh(a[i].qh);
        int s = 0;
        for (int j = 0; j < QK / 2; ++j) {
            const int q0 = static_cast<int>((a[i].qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - 16;
            const int q1 = static_cast<int>((a[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16;
            s += q0 * b[i].qs[j] + q1 * b[i].qs[j + QK / 2];
        }
        sum += s * (h2f(a[i].d) * h2f(b[i].d));
    }
    return sum;
}

void quantize_q5_1(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ5_1*>(dst);
    for (int64_t i = 0; i < n / QK; ++i, x += QK) {
        float mn, mx;
        min_max(x, QK, &mn, &mx);
        const float d = (mx - mn) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        y[i].m = f2h(mn);
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; ++j) {
            const uint8_t a = to_u8((x[j] - mn) * id + 0.5f);
            const uint8_t b = to_u8((x[QK / 2 + j] - mn) * id + 0.5f);
            y[i].qs[j] = static_cast<uint8_t>((a & 0xF) | ((b & 0xF) << 4));
            qh |= ((a & 0x10u) >> 4) << j;
            qh |= ((b & 0x10u) >> 4) << (j + QK / 2);
        }
        std::memcpy(y[i].qh, &qh, 4);
    }
}
void dequantize_q5_1(const void* src, float* y, int64_t n) {
    const auto* b = static_cast<const BlockQ5_1*>(src);
    for (int64_t i = 0; i < n / QK; ++i, y += QK) {
        const float d = h2f(b[i].d), m = h2f(b[i].m);
        const uint32_t qh = load_qh(b[i].qh);
        for (int j = 0; j < QK / 2; ++j) {
            y[j] = static_cast<int>((b[i].qs[j] & 0xF) | (((qh >> j) & 1) << 4)) * d + m;
            y[j + QK / 2] = static_cast<int>((b[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) * d + m;
        }
    }
}
float dot_q5_1(const void* w, const void* xq, int64_t n) {
    const auto* a = static_cast<const BlockQ5_1*>(w);
    const auto* b = static_cast<const BlockQ8_1*>(xq);
    float sum = 0;
    for (int64_t i = 0; i < n / QK; ++i) {
        const uint32_t qh = load_qh(a[i].qh);
        int s = 0;
        for (int j = 0; j < QK / 2; ++j) {
            const int q0 = static_cast<int>((a[i].qs[j] & 0xF) | (((qh >> j) & 1) << 4));
            const int q1 = static_cast<int>((a[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
            s += q0 * b[i].qs[j] + q1 * b[i].qs[j + QK / 2];
        }
        sum += (h2f(a[i].d) * h2f(b[i].d)) * s + h2f(a[i].m) * h2f(b[i].s);
    }
    return sum;
}

// ---------------------------------------------------------------- Q8_0 / Q8_1
void quantize_q8_0(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ8_0*>(dst);
    for (int64_t i = 0; i < n / QK; ++i, x += QK) {
        float amax = 0;
        for (int j = 0; j < QK; ++j) amax = std::fmax(amax, std::fabs(x[j]));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        for (int j = 0; j < QK; ++j) y[i].qs[j] = to_i8(std::round(x[j] * id));
    }
}
void dequantize_q8_0(const void* src, float* y, int64_t n) {
    const auto* b = static_cast<const BlockQ8_0*>(src);
    for (int64_t i = 0; i < n / QK; ++i, y += QK) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < QK; ++j) y[j] = b[i].qs[j] * d;
    }
}
float dot_q8_0(const void* w, const void* xq, int64_t n) {
    const auto* a = static_cast<const BlockQ8_0*>(w);
    const auto* b = static_cast<const BlockQ8_0*>(xq);
    float sum = 0;
    for (int64_t i = 0; i < n / QK; ++i) {
        int s = 0;
        for (int j = 0; j < QK; ++j) s += a[i].qs[j] * b[i].qs[j];
        sum += s * (h2f(a[i].d) * h2f(b[i].d));
    }
    return sum;
}

void quantize_q8_1(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ8_1*>(dst);
    for (int64_t i = 0; i < n / QK; ++i, x += QK) {
        float amax = 0;
        for (int j = 0; j < QK; ++j) amax = std::fmax(amax, std::fabs(x[j]));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        int sum = 0;
        for (int j = 0; j < QK; ++j) {
            y[i].qs[j] = to_i8(std::round(x[j] * id));
            sum += y[i].qs[j];
        }
        y[i].s = f2h(sum * d);
    }
}
void dequantize_q8_1(const void* src, float* y, int64_t n) {
    const auto* b = static_cast<const BlockQ8_1*>(src);
    for (int64_t i = 0; i < n / QK; ++i, y += QK) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < QK; ++j) y[j] = b[i].qs[j] * d;
    }
}

} // namespace

void register_legacy_formats(FormatOps* t) {
    t[static_cast<int>(DType::Q4_0)] = {quantize_q4_0, dequantize_q4_0, dot_q4_0, DType::Q8_0};
    t[static_cast<int>(DType::Q4_1)] = {quantize_q4_1, dequantize_q4_1, dot_q4_1, DType::Q8_1};
    t[static_cast<int>(DType::Q5_0)] = {quantize_q5_0, dequantize_q5_0, dot_q5_0, DType::Q8_0};
    t[static_cast<int>(DType::Q5_1)] = {quantize_q5_1, dequantize_q5_1, dot_q5_1, DType::Q8_1};
    t[static_cast<int>(DType::Q8_0)] = {quantize_q8_0, dequantize_q8_0, dot_q8_0, DType::Q8_0};
    // Q8_1 is an activation format: quantize/dequantize for tests, no weight kernels.
    t[static_cast<int>(DType::Q8_1)] = {quantize_q8_1, dequantize_q8_1, nullptr, DType::Q8_1};
}

} // namespace phi::quant
