// The weight formats as the CUDA kernels read them. Quantized tensors sit in
// the planar layout (quant/repack.h): plane 1 holds each block's quant bits in
// 16-byte runs, plane 2 the rest of the block. Every format is read in *units*
// of 32 consecutive elements: a unit becomes 8 ints of four signed bytes q
// (element 4i + j in byte j of q[i]) and, for each 16-element half h, a scale
// d[h] and offset m[h], so that element e of half h is d[h] * q_e + m[h].
// One description serves the integer dot products of decode (dp4a against
// 8-bit activations), dequantization for the prefill GEMM, and get_rows.
#pragma once
#include <cstdint>

#include "backend/cuda/common.cuh"
#include "core/dtype.h"

namespace phi::cuda {

// A planar tensor: bits(r, b) and rest(r, b) of block b of row r.
struct PlanarView {
    const uint8_t* bits = nullptr;
    const uint8_t* rest = nullptr;
    int64_t nb = 0;  // blocks per row
};

struct Unit {
    int q[8];
    float d[2], m[2];
};
// Element e (0..31) of an unpacked unit: d * q + m of its half.
__device__ __forceinline__ float unit_value(const Unit& u, int e) {
    return u.d[e / 16] * static_cast<float>(static_cast<int8_t>((u.q[e / 4] >> (8 * (e % 4))) & 0xFF)) + u.m[e / 16];
}

__device__ __forceinline__ uint32_t ld_u32(const uint8_t* p) { return *reinterpret_cast<const uint32_t*>(p); }
__device__ __forceinline__ uint16_t ld_u16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }
__device__ __forceinline__ uint4 ld_u4(const uint8_t* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }
__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}
// Each byte of x (all in [0, 2c), c <= 64) minus c, as signed bytes: one
// add that cannot carry between bytes and one xor (__vsub4 is several
// instructions on current GPUs).
template <uint32_t c>
__device__ __forceinline__ uint32_t sub_bytes(uint32_t x) {
    static_assert(c >= 1 && c <= 64, "bytes in [0, 2c) with c <= 64");
    return (x + (0x80u - c) * 0x01010101u) ^ 0x80808080u;
}
// A unit's codes from unpack_codes made signed: c taken from every one (unpack
// of the formats with a kZero).
template <uint32_t c>
__device__ __forceinline__ void codes_minus(int (&q)[8]) {
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] = static_cast<int>(sub_bytes<c>(static_cast<uint32_t>(q[i])));
}
// Bit k of the low 4 bits of b into bit 0 of byte k.
__device__ __forceinline__ uint32_t spread4(uint32_t b) { return ((b & 0xF) * 0x00204081u) & 0x01010101u; }

// The levels of the 8 nibbles of w, looked up with byte permutes: .x holds
// the low nibbles' (byte k: the level of w's byte k low nibble), .y the high
// ones'. A permute reads four selector nibbles (their low 3 bits pick one of 8
// bytes), so w's own nibbles index the two half-tables directly, four at a
// time; a third permute takes each byte from the half its nibble's bit 3 names,
// and two more separate the low nibbles' levels from the high ones'. About 2
// instructions a level, against 4 building a byte-wise selector per nibble.
__device__ __forceinline__ uint2 lut_iq4nl_x8(uint32_t w) {
    // the 16 levels (-127..113) as bytes: levels 0-7 in t0, t1, 8-15 in t2, t3
    constexpr uint32_t t0 = 0xBFAD9881u, t1 = 0xF6EADDCFu, t2 = 0x26190D01u, t3 = 0x71594535u;
    const uint32_t upper = 0x32103210u | ((w & 0x88888888u) >> 1);  // select 4-7 (the upper half's) where bit 3 is set
    uint32_t r[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {  // nibbles 4i..4i+3 of w: bytes 2i, 2i+1 of w, low nibble first
        const uint32_t s = w >> (16 * i);
        const uint32_t lo = __byte_perm(t0, t1, s), hi = __byte_perm(t2, t3, s);
        r[i] = __byte_perm(lo, hi, upper >> (16 * i));
    }
    return {__byte_perm(r[0], r[1], 0x6420), __byte_perm(r[0], r[1], 0x7531)};
}

// The 32 nibbles of 16 bytes as codes: low nibbles are elements 0..15 (q[0..3]),
// high ones 16..31 (q[4..7]); map turns four nibbles (one per byte) into four codes.
template <class Map>
__device__ __forceinline__ void nibbles(const uint4& v, Map map, int (&q)[8]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        q[i] = static_cast<int>(map(word(v, i) & 0x0F0F0F0Fu));
        q[4 + i] = static_cast<int>(map((word(v, i) >> 4) & 0x0F0F0F0Fu));
    }
}
// The same for the IQ4_NL levels.
__device__ __forceinline__ void iq4nl_levels(const uint4& v, int (&q)[8]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint2 l = lut_iq4nl_x8(word(v, i));
        q[i] = static_cast<int>(l.x);
        q[4 + i] = static_cast<int>(l.y);
    }
}

// What a format's unpack_codes gives the dot products, where it has one: a
// cheaper form of unpack's codes that ends in the same integer sums. Codes
// without the -kZero (subtracted once from a sum), or with bits left where
// they lie in their byte, so a power of two times their value, the inverse
// carried in the unit's d (which leaves every product exactly as it was);
// kUnsignedCodes: such bytes go up to 255 and the dot products read them as
// unsigned.
struct FmtDefaults {
    static constexpr bool kUnsignedCodes = false;
};
// Four unsigned bytes (codes up to 255) dotted with four signed ones, plus c.
__device__ __forceinline__ int dp4a_us(int w, int x, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(w), "r"(x), "r"(c));
    return d;
}

// Each format: block size (elements), units per block, plane-1 and plane-2
// bytes per block, the raw bytes of one unit (Raw, load) and their decoding.
// For dot products: kOneScale when both halves of a unit share d and m,
// kOffset when m can be nonzero, and kZero > 0 when unpack_codes gives the
// codes before unpack subtracts kZero from each (FmtDefaults above).
struct FmtQ4_0 : FmtDefaults {
    static constexpr int kBlock = 32, kUnits = 1, kBits = 16, kRest = 2;
    static constexpr bool kOneScale = true, kOffset = false;
    static constexpr int kZero = 8;
    struct Raw { uint4 v; uint16_t d; };
    __device__ static Raw load(const uint8_t* bits, const uint8_t* rest, int) { return {ld_u4(bits), ld_u16(rest)}; }
    __device__ static void unpack(const Raw& r, int, Unit& u) {
        nibbles(r.v, [](uint32_t x) { return sub_bytes<8>(x); }, u.q);
        u.d[0] = u.d[1] = h2f(r.d);
        u.m[0] = u.m[1] = 0.0f;
    }
    // the codes without the -kZero (a dot product subtracts it once from its sum)
    __device__ static void unpack_codes(const Raw& r, int, Unit& u) {
        nibbles(r.v, [](uint32_t x) { return x; }, u.q);
        u.d[0] = u.d[1] = h2f(r.d);
        u.m[0] = u.m[1] = 0.0f;
    }
};

struct FmtQ4_1 : FmtDefaults {
    static constexpr int kBlock = 32, kUnits = 1, kBits = 16, kRest = 4;
    static constexpr bool kOneScale = true, kOffset = true;
    static constexpr int kZero = 0;
    struct Raw { uint4 v; uint32_t dm; };
    __device__ static Raw load(const uint8_t* bits, const uint8_t* rest, int) { return {ld_u4(bits), ld_u32(rest)}; }
    __device__ static void unpack(const Raw& r, int, Unit& u) {
        nibbles(r.v, [](uint32_t x) { return x; }, u.q);
        u.d[0] = u.d[1] = h2f(r.dm & 0xFFFF);
        u.m[0] = u.m[1] = h2f(r.dm >> 16);
    }
};

struct FmtQ5_0 : FmtDefaults {
    static constexpr int kBlock = 32, kUnits = 1, kBits = 16, kRest = 6;
    static constexpr bool kOneScale = true, kOffset = false;
    static constexpr int kZero = 16;
    struct Raw { uint4 v; uint16_t d; uint32_t qh; };
    __device__ static Raw load(const uint8_t* bits, const uint8_t* rest, int) {
        return {ld_u4(bits), ld_u16(rest), ld_u16(rest + 2) | (static_cast<uint32_t>(ld_u16(rest + 4)) << 16)};
    }
    __device__ static void unpack_codes(const Raw& r, int, Unit& u) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint32_t lo = word(r.v, i) & 0x0F0F0F0Fu, hi = (word(r.v, i) >> 4) & 0x0F0F0F0Fu;
            u.q[i] = static_cast<int>(lo | (spread4(r.qh >> (4 * i)) << 4));
            u.q[4 + i] = static_cast<int>(hi | (spread4(r.qh >> (16 + 4 * i)) << 4));
        }
        u.d[0] = u.d[1] = h2f(r.d);
        u.m[0] = u.m[1] = 0.0f;
    }
    __device__ static void unpack(const Raw& r, int sub, Unit& u) {
        unpack_codes(r, sub, u);
        codes_minus<kZero>(u.q);
    }
};

struct FmtQ5_1 : FmtDefaults {
    static constexpr int kBlock = 32, kUnits = 1, kBits = 16, kRest = 8;
    static constexpr bool kOneScale = true, kOffset = true;
    static constexpr int kZero = 0;
    struct Raw { uint4 v; uint32_t dm, qh; };
    __device__ static Raw load(const uint8_t* bits, const uint8_t* rest, int) {
        return {ld_u4(bits), ld_u32(rest), ld_u32(rest + 4)};
    }
    __device__ static void unpack(const Raw& r, int, Unit& u) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint32_t lo = word(r.v, i) & 0x0F0F0F0Fu, hi = (word(r.v, i) >> 4) & 0x0F0F0F0Fu;
            u.q[i] = static_cast<int>(lo | (spread4(r.qh >> (4 * i)) << 4));
            u.q[4 + i] = static_cast<int>(hi | (spread4(r.qh >> (16 + 4 * i)) << 4));
        }
        u.d[0] = u.d[1] = h2f(r.dm & 0xFFFF);
        u.m[0] = u.m[1] = h2f(r.dm >> 16);
    }
};

struct FmtQ8_0 : FmtDefaults {
    static constexpr int kBlock = 32, kUnits = 1, kBits = 32, kRest = 2;
    static constexpr bool kOneScale = true, kOffset = false;
    static constexpr int kZero = 0;
    struct Raw { uint4 a, b; uint16_t d; };
    __device__ static Raw load(const uint8_t* bits, const uint8_t* rest, int) {
        return {ld_u4(bits), ld_u4(bits + 16), ld_u16(rest)};
    }
    __device__ static void unpack(const Raw& r, int, Unit& u) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            u.q[i] = static_cast<int>(word(r.a, i));
            u.q[4 + i] = static_cast<int>(word(r.b, i));
        }
        u.d[0] = u.d[1] = h2f(r.d);
        u.m[0] = u.m[1] = 0.0f;
    }
};

struct FmtIQ4_NL : FmtDefaults {
    static constexpr int kBlock = 32, kUnits = 1, kBits = 16, kRest = 2;
    static constexpr bool kOneScale = true, kOffset = false;
    static constexpr int kZero = 0;
    struct Raw { uint4 v; uint16_t d; };
    __device__ static Raw load(const uint8_t* bits, const uint8_t* rest, int) { return {ld_u4(bits), ld_u16(rest)}; }
    __device__ static void unpack(const Raw& r, int, Unit& u) {
        iq4nl_levels(r.v, u.q);
        u.d[0] = u.d[1] = h2f(r.d);
        u.m[0] = u.m[1] = 0.0f;
    }
};

// Q2_K: unit u of 8 takes bits 2(u%4).. of qs[32(u/4) ..+32]; 16-element
// sub-blocks 2u, 2u+1 with 4-bit scale | 4-bit min bytes; x = d sc q - dmin mn.
struct FmtQ2_K : FmtDefaults {
    static constexpr int kBlock = 256, kUnits = 8, kBits = 64, kRest = 20;
    static constexpr bool kOneScale = false, kOffset = true;
    static constexpr int kZero = 0;
    static constexpr bool kUnsignedCodes = true;
    struct Raw { uint4 a, b; uint16_t sc; uint32_t dd; };
    __device__ static Raw load(const uint8_t* bits, const uint8_t* rest, int u) {
        const uint8_t* q = bits + 32 * (u / 4);
        return {ld_u4(q), ld_u4(q + 16), ld_u16(rest + 2 * u), ld_u32(rest + 16)};
    }
    __device__ static void unpack(const Raw& r, int u, Unit& out) {
        const int shift = 2 * (u % 4);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            out.q[i] = static_cast<int>((word(r.a, i) >> shift) & 0x03030303u);
            out.q[4 + i] = static_cast<int>((word(r.b, i) >> shift) & 0x03030303u);
        }
        scales(r, 1.0f, out);
    }
    // the plane's bits left in place: 4^(u % 4) times the codes, the inverse in d
    __device__ static void unpack_codes(const Raw& r, int u, Unit& out) {
        const int shift = 2 * (u % 4);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            out.q[i] = static_cast<int>(word(r.a, i) & (0x03030303u << shift));
            out.q[4 + i] = static_cast<int>(word(r.b, i) & (0x03030303u << shift));
        }
        scales(r, 1.0f / static_cast<float>(1 << shift), out);  // (a power of two: exact)
    }
    // the two halves' d (times f) and m
    __device__ static void scales(const Raw& r, float f, Unit& out) {
        const float d = h2f(r.dd & 0xFFFF), dmin = h2f(r.dd >> 16);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const uint32_t s = (r.sc >> (8 * h)) & 0xFF;
            out.d[h] = d * static_cast<float>(s & 0xF) * f;
            out.m[h] = -dmin * static_cast<float>(s >> 4);
        }
    }
};

// Q3_K: low 2 bits as Q2_K, the high bit from hmask (bit u of hmask[i]; clear
// means -4); 16 6-bit scales packed in 12 bytes, stored +32.
struct FmtQ3_K : FmtDefaults {
    static constexpr int kBlock = 256, kUnits = 8, kBits = 96, kRest = 14;
    static constexpr bool kOneScale = false, kOffset = false;
    static constexpr int kZero = 4;
    struct Raw { uint4 ha, hb, a, b; uint32_t s[3]; uint16_t d; };
    // plane 2 runs of 14 bytes are only 2-byte aligned: read in halves
    __device__ static uint32_t ld_u32_2(const uint8_t* p) {
        return ld_u16(p) | (static_cast<uint32_t>(ld_u16(p + 2)) << 16);
    }
    __device__ static Raw load(const uint8_t* bits, const uint8_t* rest, int u) {
        const uint8_t* q = bits + 32 + 32 * (u / 4);
        return {ld_u4(bits), ld_u4(bits + 16), ld_u4(q), ld_u4(q + 16),
                {ld_u32_2(rest), ld_u32_2(rest + 4), ld_u32_2(rest + 8)}, ld_u16(rest + 12)};
    }
    // Scales 8k..8k+7 (quant::q3k_scale, +32: 0..63) as the bytes of two
    // words: scale j's low nibble is the low (k = 0) or high (k = 1) nibble of
    // byte j % 8, its two high bits those of byte 8 + j % 4 at 2 (j / 4).
    // Eight scales in ten operations; picking each scale's bytes out of the
    // twelve by selects had cost ~15% of the Q3_K matmuls (H100, the 128 of a
    // Phi-3-mini token: 1602 -> 1340 us).
    __device__ static uint2 scales8(const Raw& r, int k) {
        const int sh = 4 * k;
        const uint32_t hi0 = (r.s[2] >> sh) & 0x03030303u, hi1 = (r.s[2] >> (sh + 2)) & 0x03030303u;
        return {((r.s[0] >> sh) & 0x0F0F0F0Fu) | (hi0 << 4), ((r.s[1] >> sh) & 0x0F0F0F0Fu) | (hi1 << 4)};
    }
    // the 3-bit code of each byte: bits 2s, 2s + 1 of l, bit s of h (the
    // unit's half of hmask, already shifted down by 4 (u / 4)) above them
    __device__ static uint32_t code3(uint32_t l, uint32_t h, int s) {
        const uint32_t hi = s <= 2 ? h << (2 - s) : h >> (s - 2);
        return ((l >> (2 * s)) & 0x03030303u) | (hi & 0x04040404u);
    }
    // the codes without the -4 (kZero: the dot product subtracts it once per half)
    __device__ static void unpack_codes(const Raw& r, int u, Unit& out) {
        const int s = u % 4, k = u - s;  // (s is known at compile time in the unrolled loops)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            out.q[i] = static_cast<int>(code3(word(r.a, i), word(r.ha, i) >> k, s));
            out.q[4 + i] = static_cast<int>(code3(word(r.b, i), word(r.hb, i) >> k, s));
        }
        // scales 2u, 2u + 1: bytes 2 (u % 2), +1 of word (u % 4) / 2 of the unit's eight
        const uint2 w = scales8(r, u / 4);
        const uint32_t pair = ((u % 4) < 2 ? w.x : w.y) >> (16 * (u % 2));
        const float d = h2f(r.d);
        out.d[0] = d * static_cast<float>(static_cast<int>(pair & 0xFF) - 32);
        out.d[1] = d * static_cast<float>(static_cast<int>((pair >> 8) & 0xFF) - 32);
        out.m[0] = out.m[1] = 0.0f;
    }
    __device__ static void unpack(const Raw& r, int u, Unit& out) {
        unpack_codes(r, u, out);
        codes_minus<kZero>(out.q);
    }
};

// Q4_K / Q5_K: sub-block (= unit) u's 6-bit scale and min from the 12 packed
// bytes (quant::get_scale_min_k4), a word of four at a time: scales 0-3 are
// the low 6 bits of bytes 0-3, mins 0-3 those of bytes 4-7; scales 4-7 the
// low nibbles of bytes 8-11 with the top 2 bits of bytes 0-3 above them, mins
// 4-7 the high nibbles with the top bits of bytes 4-7. Nibbles of
// qs[32(u/2) ..+32], low for even u.
__device__ __forceinline__ void scale_min_k4(int j, const uint32_t (&s)[3], int& sc, int& mn) {
    const uint32_t scw = j < 4 ? s[0] & 0x3F3F3F3Fu : (s[2] & 0x0F0F0F0Fu) | ((s[0] >> 2) & 0x30303030u);
    const uint32_t mnw = j < 4 ? s[1] & 0x3F3F3F3Fu : ((s[2] >> 4) & 0x0F0F0F0Fu) | ((s[1] >> 2) & 0x30303030u);
    const int sh = 8 * (j % 4);
    sc = static_cast<int>((scw >> sh) & 0xFF);
    mn = static_cast<int>((mnw >> sh) & 0xFF);
}
// Unit u's d and m from a Q4_K/Q5_K block's d, dmin (dd) and packed scales.
__device__ __forceinline__ void unit_scales_k4(uint32_t dd, const uint32_t (&s)[3], int u, Unit& out) {
    int sc, mn;
    scale_min_k4(u, s, sc, mn);
    out.d[0] = out.d[1] = h2f(dd & 0xFFFF) * static_cast<float>(sc);
    out.m[0] = out.m[1] = -h2f(dd >> 16) * static_cast<float>(mn);
}

struct FmtQ4_K : FmtDefaults {
    static constexpr int kBlock = 256, kUnits = 8, kBits = 128, kRest = 16;
    static constexpr bool kOneScale = true, kOffset = true;
    static constexpr int kZero = 0;
    static constexpr bool kUnsignedCodes = true;
    struct Raw { uint4 a, b; uint32_t dd; uint32_t s[3]; };
    __device__ static Raw load(const uint8_t* bits, const uint8_t* rest, int u) {
        const uint8_t* q = bits + 32 * (u / 2);
        return {ld_u4(q), ld_u4(q + 16), ld_u32(rest), {ld_u32(rest + 4), ld_u32(rest + 8), ld_u32(rest + 12)}};
    }
    __device__ static void unpack(const Raw& r, int u, Unit& out) {
        const int shift = 4 * (u % 2);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            out.q[i] = static_cast<int>((word(r.a, i) >> shift) & 0x0F0F0F0Fu);
            out.q[4 + i] = static_cast<int>((word(r.b, i) >> shift) & 0x0F0F0F0Fu);
        }
        unit_scales_k4(r.dd, r.s, u, out);
    }
    // odd units' high nibbles left in place (16 times the codes, 1/16 in d)
    __device__ static void unpack_codes(const Raw& r, int u, Unit& out) {
        const uint32_t mask = u % 2 ? 0xF0F0F0F0u : 0x0F0F0F0Fu;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            out.q[i] = static_cast<int>(word(r.a, i) & mask);
            out.q[4 + i] = static_cast<int>(word(r.b, i) & mask);
        }
        // (written out, not through unit_scales_k4: that changed the 8-token build's SASS, measured as is)
        int sc, mn;
        scale_min_k4(u, r.s, sc, mn);
        out.d[0] = out.d[1] = h2f(r.dd & 0xFFFF) * static_cast<float>(sc) * (u % 2 ? 0.0625f : 1.0f);
        out.m[0] = out.m[1] = -h2f(r.dd >> 16) * static_cast<float>(mn);
    }
};

struct FmtQ5_K : FmtDefaults {
    static constexpr int kBlock = 256, kUnits = 8, kBits = 160, kRest = 16;
    static constexpr bool kOneScale = true, kOffset = true;
    static constexpr int kZero = 0;
    struct Raw { uint4 ha, hb, a, b; uint32_t dd; uint32_t s[3]; };
    __device__ static Raw load(const uint8_t* bits, const uint8_t* rest, int u) {
        const uint8_t* q = bits + 32 + 32 * (u / 2);
        return {ld_u4(bits), ld_u4(bits + 16), ld_u4(q), ld_u4(q + 16), ld_u32(rest),
                {ld_u32(rest + 4), ld_u32(rest + 8), ld_u32(rest + 12)}};
    }
    __device__ static void unpack(const Raw& r, int u, Unit& out) {
        const int shift = 4 * (u % 2);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint32_t ha = (word(r.ha, i) >> u) & 0x01010101u, hb = (word(r.hb, i) >> u) & 0x01010101u;
            out.q[i] = static_cast<int>(((word(r.a, i) >> shift) & 0x0F0F0F0Fu) | (ha << 4));
            out.q[4 + i] = static_cast<int>(((word(r.b, i) >> shift) & 0x0F0F0F0Fu) | (hb << 4));
        }
        unit_scales_k4(r.dd, r.s, u, out);
    }
};

// Q6_K: unit u lies in 128-element half u/4 at offset r0 = 32(u%4): low 4 bits
// from ql[64(u/4) + r0%64 + i] (high nibble when r0 >= 64), 2 high bits
// (r0/32)*2.. of qh[32(u/4) + i]; q - 32; int8 scales per 16 elements.
// unpack_codes leaves the -32 to the dot product (once per half, kZero) and
// moves the two high bits into place with one shift whose direction is known
// when u % 4 is (~3 operations a word instead of ~6).
struct FmtQ6_K : FmtDefaults {
    static constexpr int kBlock = 256, kUnits = 8, kBits = 192, kRest = 18;
    static constexpr bool kOneScale = false, kOffset = false;
    static constexpr int kZero = 32;
    struct Raw { uint4 la, lb, ha, hb; uint16_t sc; uint16_t d; };
    __device__ static Raw load(const uint8_t* bits, const uint8_t* rest, int u) {
        const uint8_t* ql = bits + 64 * (u / 4) + 32 * (u % 2);
        const uint8_t* qh = bits + 128 + 32 * (u / 4);
        return {ld_u4(ql), ld_u4(ql + 16), ld_u4(qh), ld_u4(qh + 16), ld_u16(rest + 2 * u), ld_u16(rest + 16)};
    }
    // the 6-bit code of each byte: low nibble from l, bits 2s, 2s + 1 of h above it (s = u % 4)
    __device__ static uint32_t code6(uint32_t l, uint32_t h, int s) {
        const uint32_t lo = s < 2 ? l : l >> 4;
        const uint32_t hi = s == 0 ? h << 4 : s == 1 ? h << 2 : s == 2 ? h : h >> 2;
        return (lo & 0x0F0F0F0Fu) | (hi & 0x30303030u);
    }
    __device__ static void unpack_codes(const Raw& r, int u, Unit& out) {
        const int s = u % 4;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            out.q[i] = static_cast<int>(code6(word(r.la, i), word(r.ha, i), s));
            out.q[4 + i] = static_cast<int>(code6(word(r.lb, i), word(r.hb, i), s));
        }
        const float d = h2f(r.d);
        out.d[0] = d * static_cast<float>(static_cast<int8_t>(r.sc & 0xFF));
        out.d[1] = d * static_cast<float>(static_cast<int8_t>(r.sc >> 8));
        out.m[0] = out.m[1] = 0.0f;
    }
    __device__ static void unpack(const Raw& r, int u, Unit& out) {
        unpack_codes(r, u, out);
        codes_minus<kZero>(out.q);
    }
};

// IQ4_XS: unit u = sub-block u: IQ4_NL levels of qs[16u ..+16] (low nibbles
// first), scale from 4 low bits in scales_l and 2 high bits in scales_h, +32.
struct FmtIQ4_XS : FmtDefaults {
    static constexpr int kBlock = 256, kUnits = 8, kBits = 128, kRest = 8;
    static constexpr bool kOneScale = true, kOffset = false;
    static constexpr int kZero = 0;
    struct Raw { uint4 v; uint32_t dsh; uint32_t sl; };
    __device__ static Raw load(const uint8_t* bits, const uint8_t* rest, int u) {
        return {ld_u4(bits + 16 * u), ld_u32(rest), ld_u32(rest + 4)};
    }
    __device__ static void unpack(const Raw& r, int u, Unit& out) {
        iq4nl_levels(r.v, out.q);
        const int lo = (r.sl >> (4 * u)) & 0xF, hi = (r.dsh >> (16 + 2 * u)) & 3;
        out.d[0] = out.d[1] = h2f(r.dsh & 0xFFFF) * static_cast<float>((lo | (hi << 4)) - 32);
        out.m[0] = out.m[1] = 0.0f;
    }
};

// Unit `unit` (of nb * kUnits) of row `row` of a planar tensor.
template <class F>
__device__ __forceinline__ typename F::Raw load_unit(const PlanarView& w, int64_t row, int unit) {
    const int64_t b = row * w.nb + unit / F::kUnits;
    return F::load(w.bits + b * F::kBits, w.rest + b * F::kRest, unit % F::kUnits);
}

// Plain float weights: elements [k, k + kVec) of a row of T.
template <class T>
struct FloatFmt;
template <>
struct FloatFmt<float> {
    __device__ static float get(const uint8_t* row, int64_t k) { return reinterpret_cast<const float*>(row)[k]; }
};
template <>
struct FloatFmt<__half> {
    __device__ static float get(const uint8_t* row, int64_t k) { return h2f(reinterpret_cast<const uint16_t*>(row)[k]); }
};
template <>
struct FloatFmt<__nv_bfloat16> {
    __device__ static float get(const uint8_t* row, int64_t k) { return bf2f(reinterpret_cast<const uint16_t*>(row)[k]); }
};

// The weight types the kernels read: on_float(TypeTag<T>{}) for a float type
// (T: float, __half, __nv_bfloat16), on_quant(TypeTag<F>{}) for a quantized
// one (F: its format above); what it returns, or an error for any other type.
template <class T>
struct TypeTag {
    using type = T;
};
template <class OnFloat, class OnQuant>
auto with_weight_format(DType t, OnFloat&& on_float, OnQuant&& on_quant) {
    switch (t) {
        case DType::F32: return on_float(TypeTag<float>{});
        case DType::F16: return on_float(TypeTag<__half>{});
        case DType::BF16: return on_float(TypeTag<__nv_bfloat16>{});
        case DType::Q4_0: return on_quant(TypeTag<FmtQ4_0>{});
        case DType::Q4_1: return on_quant(TypeTag<FmtQ4_1>{});
        case DType::Q5_0: return on_quant(TypeTag<FmtQ5_0>{});
        case DType::Q5_1: return on_quant(TypeTag<FmtQ5_1>{});
        case DType::Q8_0: return on_quant(TypeTag<FmtQ8_0>{});
        case DType::IQ4_NL: return on_quant(TypeTag<FmtIQ4_NL>{});
        case DType::Q2_K: return on_quant(TypeTag<FmtQ2_K>{});
        case DType::Q3_K: return on_quant(TypeTag<FmtQ3_K>{});
        case DType::Q4_K: return on_quant(TypeTag<FmtQ4_K>{});
        case DType::Q5_K: return on_quant(TypeTag<FmtQ5_K>{});
        case DType::Q6_K: return on_quant(TypeTag<FmtQ6_K>{});
        case DType::IQ4_XS: return on_quant(TypeTag<FmtIQ4_XS>{});
        default: fail(ErrorKind::unsupported, "no CUDA kernel for tensor type ", dtype_name(t));
    }
}

} // namespace phi::cuda
