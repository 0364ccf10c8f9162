// GGML block formats, byte for byte as GGUF stores them. A block packs
// block_size weights with its own scale(s); fp16 fields are raw uint16 bits.
// Legacy formats hold 32 weights, K-quants a super-block of 256 (QK_K) made of
// 16 or 8 sub-blocks with 6-bit (or 8-bit) quantized scales.
#pragma once
#include <cstdint>

namespace phi::quant {

constexpr int QK = 32;     // legacy block
constexpr int QK_K = 256;  // K-quant super-block

struct BlockQ4_0 { uint16_t d; uint8_t qs[QK / 2]; };               // x = d * (q - 8)
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[QK / 2]; };            // x = d * q + m
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[QK / 2]; };  // x = d * (q - 16), bit 4 in qh
struct BlockQ5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[QK / 2]; };
struct BlockQ8_0 { uint16_t d; int8_t qs[QK]; };                    // x = d * q
struct BlockQ8_1 { uint16_t d, s; int8_t qs[QK]; };                 // s = d * sum(q): activations only
struct BlockIQ4_NL { uint16_t d; uint8_t qs[QK / 2]; };             // x = d * kvalues_iq4nl[q]

// 16 sub-blocks of 16: 4-bit scale | 4-bit min per sub-block, 2-bit quants.
struct BlockQ2_K { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; uint16_t d, dmin; };
// 16 sub-blocks of 16: 6-bit signed scales packed in 12 bytes, 2 low bits in
// qs, the high bit in hmask (set means +0, clear means -4).
struct BlockQ3_K { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[12]; uint16_t d; };
// 8 sub-blocks of 32: 6-bit scale and 6-bit min each, packed in 12 bytes.
struct BlockQ4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[QK_K / 2]; };
struct BlockQ5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; };
// 16 sub-blocks of 16 with int8 scales; 4 low bits in ql, 2 high bits in qh; q - 32.
struct BlockQ6_K { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; };
// Activations for K-quant dot products: f32 scale, bsums = sums of 16 quants.
struct BlockQ8_K { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; };
// IQ4_NL values with 8 sub-blocks of 32 and 6-bit scales (low 4 bits, high 2 bits).
struct BlockIQ4_XS { uint16_t d; uint16_t scales_h; uint8_t scales_l[QK_K / 64]; uint8_t qs[QK_K / 2]; };

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20, "q4 layout");
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24, "q5 layout");
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36, "q8 layout");
static_assert(sizeof(BlockIQ4_NL) == 18 && sizeof(BlockIQ4_XS) == 136, "iq4 layout");
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110, "q2_K/q3_K layout");
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176, "q4_K/q5_K layout");
static_assert(sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292, "q6_K/q8_K layout");

// The 16 non-linear levels of IQ4_NL / IQ4_XS.
constexpr int8_t kValuesIQ4NL[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// Unpack sub-block j's 6-bit scale and min from the 12 packed bytes of a
// Q4_K / Q5_K block: j < 4 store the low 6 bits directly, j >= 4 split them.
inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
    }
}

} // namespace phi::quant
