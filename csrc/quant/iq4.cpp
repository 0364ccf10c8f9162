// Non-linear 4-bit formats: IQ4_NL (blocks of 32, one fp16 scale) and IQ4_XS
// (super-blocks of 256, 6-bit sub-block scales). Each nibble indexes the
// 16-entry table kValuesIQ4NL. Dequantize and dot only: we read these files,
// we do not write them (llama.cpp's IQ quantizers need an importance matrix
// to be worthwhile anyway).
#include "quant/blocks.h"
#include "quant/formats.h"

namespace phi::quant {

namespace {

inline float h2f(uint16_t h) { return fp16_to_fp32(h); }

void dequantize_iq4_nl(const void* src, float* y, int64_t n) {
    const auto* b = static_cast<const BlockIQ4_NL*>(src);
    for (int64_t i = 0; i < n / QK; ++i, y += QK) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < QK / 2; ++j) {
            y[j] = d * kValuesIQ4NL[b[i].qs[j] & 0xF];
            y[j + QK / 2] = d * kValuesIQ4NL[b[i].qs[j] >> 4];
        }
    }
}

float dot_iq4_nl(const void* w, const void* xq, int64_t n) {
    const auto* a = static_cast<const BlockIQ4_NL*>(w);
    const auto* b = static_cast<const BlockQ8_0*>(xq);
    float sum = 0;
    for (int64_t i = 0; i < n / QK; ++i) {
        int s = 0;
        for (int j = 0; j < QK / 2; ++j)
            s += kValuesIQ4NL[a[i].qs[j] & 0xF] * b[i].qs[j] + kValuesIQ4NL[a[i].qs[j] >> 4] * b[i].qs[j + QK / 2];
        sum += (h2f(a[i].d) * h2f(b[i].d)) * s;
    }
    return sum;
}

// Sub-block ib's scale: low 4 bits from scales_l, high 2 bits from scales_h, stored +32.
inline int iq4xs_scale(const BlockIQ4_XS& b, int ib) {
    return (((b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((b.scales_h >> (2 * ib)) & 3) << 4)) - 32;
}

void dequantize_iq4_xs(const void* src, float* y, int64_t n) {
    const auto* b = static_cast<const BlockIQ4_XS*>(src);
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = h2f(b[i].d);
        for (int ib = 0; ib < QK_K / 32; ++ib, y += 32) {
            const float dl = d * iq4xs_scale(b[i], ib);
            const uint8_t* qs = b[i].qs + 16 * ib;
            for (int j = 0; j < 16; ++j) {
                y[j] = dl * kValuesIQ4NL[qs[j] & 0xF];
                y[j + 16] = dl * kValuesIQ4NL[qs[j] >> 4];
            }
        }
    }
}

float dot_iq4_xs(const void* w, const void* xq, int64_t n) {
    const auto* a = static_cast<const BlockIQ4_XS*>(w);
    const auto* b = static_cast<const BlockQ8_K*>(xq);
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        int sumi = 0;
        for (int ib = 0; ib < QK_K / 32; ++ib) {
            const uint8_t* qs = a[i].qs + 16 * ib;
            const int8_t* q8 = b[i].qs + 32 * ib;
            int s = 0;
            for (int j = 0; j < 16; ++j) s += kValuesIQ4NL[qs[j] & 0xF] * q8[j] + kValuesIQ4NL[qs[j] >> 4] * q8[j + 16];
            sumi += iq4xs_scale(a[i], ib) * s;
        }
        sum += (h2f(a[i].d) * b[i].d) * sumi;
    }
    return sum;
}

} // namespace

void register_iq4_formats(FormatOps* t) {
    t[static_cast<int>(DType::IQ4_NL)] = {nullptr, dequantize_iq4_nl, dot_iq4_nl, DType::Q8_0};
    t[static_cast<int>(DType::IQ4_XS)] = {nullptr, dequantize_iq4_xs, dot_iq4_xs, DType::Q8_K};
}

} // namespace phi::quant
