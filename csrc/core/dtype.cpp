#include "core/dtype.h"

#include <cmath>
#include <cstring>

namespace phi {

namespace {
constexpr DTypeTraits kUnknown{nullptr, 1, 0};

struct Table {
    DTypeTraits t[40];
    constexpr Table() : t{} {
        for (auto& e : t) e = kUnknown;
        t[0] = {"f32", 1, 4};        t[1] = {"f16", 1, 2};
        t[2] = {"q4_0", 32, 18};     t[3] = {"q4_1", 32, 20};
        t[6] = {"q5_0", 32, 22};     t[7] = {"q5_1", 32, 24};
        t[8] = {"q8_0", 32, 34};     t[9] = {"q8_1", 32, 36};
        t[10] = {"q2_K", 256, 84};   t[11] = {"q3_K", 256, 110};
        t[12] = {"q4_K", 256, 144};  t[13] = {"q5_K", 256, 176};
        t[14] = {"q6_K", 256, 210};  t[15] = {"q8_K", 256, 292};
        t[16] = {"iq2_xxs", 256, 66}; t[17] = {"iq2_xs", 256, 74};
        t[18] = {"iq3_xxs", 256, 98}; t[19] = {"iq1_s", 256, 50};
        t[20] = {"iq4_nl", 32, 18};  t[21] = {"iq3_s", 256, 110};
        t[22] = {"iq2_s", 256, 82};  t[23] = {"iq4_xs", 256, 136};
        t[24] = {"i8", 1, 1};        t[25] = {"i16", 1, 2};
        t[26] = {"i32", 1, 4};       t[27] = {"i64", 1, 8};
        t[28] = {"f64", 1, 8};       t[29] = {"iq1_m", 256, 56};
        t[30] = {"bf16", 1, 2};
        t[34] = {"tq1_0", 256, 54};  t[35] = {"tq2_0", 256, 66};
    }
};
constexpr Table kTable;
} // namespace

const DTypeTraits& dtype_traits(uint32_t id) {
    return id < 40 ? kTable.t[id] : kUnknown;
}

float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = (h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    const uint32_t mant = h & 0x3ff;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else {  // subnormal: value = mant * 2^-24
            float f = std::ldexp(static_cast<float>(mant), -24);
            std::memcpy(&u, &f, 4);
            u |= sign;
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

uint16_t fp32_to_fp16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u) {  // inf or nan
        return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0));
    }
    if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
    if (abs < 0x38800000u) {  // subnormal or zero in fp16
        float a;
        std::memcpy(&a, &abs, 4);
        // a * 2^24 rounded to nearest even gives the subnormal mantissa
        const float m = std::nearbyint(a * 16777216.0f);
        return static_cast<uint16_t>(sign | static_cast<uint32_t>(m));
    }
    // normal: rebias exponent, round mantissa to nearest even
    uint32_t h = ((abs >> 13) - (112u << 10));
    const uint32_t rem = abs & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h += 1;
    return static_cast<uint16_t>(sign | h);
}

uint16_t fp32_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 64);
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
}

} // namespace phi
