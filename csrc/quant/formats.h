// Internal to csrc/quant: the reference functions of each format, gathered
// into one table by quant.cpp. Each takes whole rows (n a multiple of the
// block size) and is a straight transcription of the format's definition.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace phi::quant {

using QuantizeFn = void (*)(const float* x, void* dst, int64_t n);
using DequantizeFn = void (*)(const void* src, float* dst, int64_t n);
using DotFn = float (*)(const void* w, const void* x, int64_t n);

struct FormatOps {
    QuantizeFn quantize = nullptr;
    DequantizeFn dequantize = nullptr;
    DotFn dot = nullptr;  // weight row . activation row of type `act`
    DType act = DType::F32;
};

// Registered by the format files (legacy.cpp, kquants.cpp, iq4.cpp).
void register_legacy_formats(FormatOps* table);
void register_kquant_formats(FormatOps* table);
void register_iq4_formats(FormatOps* table);

// ggml's nearest_int: round half to even via the 1.5*2^23 trick, so ties
// break exactly as in llama.cpp's quantizers (|x| < 2^22).
inline int nearest_int(float f) {
    float v = f + 12582912.f;
    int i;
    __builtin_memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

} // namespace phi::quant
