#include "quant/repack.h"

#include <cstring>

namespace phi::quant {

void repack_q4_0_x8(const void* src, void* dst, int64_t K, int64_t g0, int64_t g1) {
    const int64_t nb = K / QK;
    const auto* in = static_cast<const BlockQ4_0*>(src);
    auto* out = static_cast<BlockQ4_0x8*>(dst);
    for (int64_t g = g0; g < g1; ++g) {
        const BlockQ4_0* rows = in + g * kQ4_0x8Rows * nb;  // row r, block ib: rows[r * nb + ib]
        BlockQ4_0x8* o = out + g * nb;
        for (int64_t ib = 0; ib < nb; ++ib) {
            for (int r = 0; r < kQ4_0x8Rows; ++r) {
                const BlockQ4_0& b = rows[r * nb + ib];
                o[ib].d[r] = b.d;
                for (int j = 0; j < 4; ++j) std::memcpy(o[ib].qs[j][r], b.qs + 4 * j, 4);
            }
        }
    }
}

void unpack_row_q4_0_x8(const void* packed, int64_t K, int64_t row, int64_t ib0, int64_t nb, BlockQ4_0* out) {
    const int r = static_cast<int>(row % kQ4_0x8Rows);
    const BlockQ4_0x8* g = static_cast<const BlockQ4_0x8*>(packed) + row / kQ4_0x8Rows * (K / QK) + ib0;
    for (int64_t ib = 0; ib < nb; ++ib) {
        out[ib].d = g[ib].d[r];
        for (int j = 0; j < 4; ++j) std::memcpy(out[ib].qs + 4 * j, g[ib].qs[j][r], 4);
    }
}

PlanarSplit planar_split(DType t) {
    switch (t) {
        case DType::Q4_0: return {2, 16};
        case DType::Q4_1: return {4, 16};
        case DType::Q5_0: return {6, 16};
        case DType::Q5_1: return {8, 16};
        case DType::Q8_0: return {2, 32};
        case DType::IQ4_NL: return {2, 16};
        case DType::Q2_K: return {16, 64};   // scales[16] | qs[64] | d, dmin
        case DType::Q3_K: return {0, 96};    // hmask[32] qs[64] | scales[12] d
        case DType::Q4_K: return {16, 128};  // d dmin scales[12] | qs[128]
        case DType::Q5_K: return {16, 160};  // d dmin scales[12] | qh[32] qs[128]
        case DType::Q6_K: return {0, 192};   // ql[128] qh[64] | scales[16] d
        case DType::IQ4_XS: return {8, 128}; // d scales_h scales_l[4] | qs[128]
        default: return {};
    }
}

void repack_planar_rows(const void* src, void* bits_dst, void* rest_dst, DType t, int64_t n_rows, int64_t K) {
    const PlanarSplit sp = planar_split(t);
    const DTypeTraits& tr = dtype_traits(t);
    const size_t bs = tr.type_size, bits = sp.bits_bytes, rest = bs - bits;
    const size_t head = sp.bits_offset, tail = bs - head - bits;
    const int64_t blocks = n_rows * (K / tr.block_size);
    const auto* in = static_cast<const uint8_t*>(src);
    auto* ob = static_cast<uint8_t*>(bits_dst);
    auto* orest = static_cast<uint8_t*>(rest_dst);
    for (int64_t i = 0; i < blocks; ++i, in += bs, ob += bits, orest += rest) {
        std::memcpy(ob, in + head, bits);
        std::memcpy(orest, in, head);
        std::memcpy(orest + head, in + head + bits, tail);
    }
}

void repack_planar(const void* src, void* dst, DType t, int64_t M, int64_t K) {
    const size_t bits_plane = static_cast<size_t>(M) * (K / dtype_traits(t).block_size) * planar_split(t).bits_bytes;
    repack_planar_rows(src, dst, static_cast<uint8_t*>(dst) + bits_plane, t, M, K);
}

} // namespace phi::quant
