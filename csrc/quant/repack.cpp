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

} // namespace phi::quant
