// The AVX-512 kernels with AMX-INT8 tiles for the prefill GEMM of quantized
// weights (Sapphire Rapids and later Xeons). Compiled with the AVX-512 flags
// plus -mamx-tile -mamx-int8; runs only on a backend whose ISA is "amx",
// which cpu_features.cpp offers only when cpuid reports AMX-TILE and
// AMX-INT8, XCR0 says the OS saves the tile state, and the kernel granted
// this process the tile data (arch_prctl ARCH_REQ_XCOMP_PERM): without that
// permission the first tile instruction dies with SIGILL.
//
// The table is the AVX-512 one (compiled again here) with the int8 GEMM of
// the formats with one scale per 32 columns replaced: per block of 32
// columns, one TDPBUSD multiplies a 16-row x 32-byte tile of weight codes
// (unsigned) with an 8 x 64-byte tile of 16 tokens' activation codes
// (signed; the packed layout of gemm_i8_x86_impl.h is already the VNNI
// layout a B tile wants), into 16 x 16 int32 sums; the sums are stored and
// scaled into 16 float accumulators (one per row, tokens in the lanes) with
// the AVX-512 epilogue of the VNNI kernel. Formats with scales per 16
// columns (Q2_K, Q3_K, Q6_K) keep the VNNI kernel: a 16-column tile would
// halve the tile's work for the same epilogue.
#include "backend/cpu/kernels.h"

#if defined(PHICPP_X86)
#include "backend/cpu/kernels_x86_impl.h"

namespace phi::cpu {
namespace {

constexpr int kAmxMr = 16;  // weight rows per tile

// Tile registers: 0 the sums, 2 the weights, 4 the activations.
struct alignas(64) TileConfig {
    uint8_t palette_id = 1;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
};

#if !defined(PHICPP_AMX_EMULATE)
// The tile instructions as inline assembly with the memory they read and
// write declared: GCC 12's _tile_loadd passes only the address (no memory
// operand or clobber), so the compiler could move the stores that fill a
// panel past the load that reads it. Volatile asm statements keep their order.
// Two sets of registers, so that one block's products run on the tile unit
// while the other's sums are scaled: set S has its sums in tmm(0+S), weights
// (A) in tmm(2+S), activations (B) in tmm(4+S). (The tile registers are
// named in the instruction text, so each set is its own function.)
inline void tile_config(const TileConfig* cfg) { __asm__ volatile("ldtilecfg %0" ::"m"(*cfg)); }
inline void tile_release() { __asm__ volatile("tilerelease" ::: "memory"); }
template <int S> void tile_block(const void* a, long a_stride, const void* b, void* sums);
template <> inline void tile_block<0>(const void* a, long a_stride, const void* b, void* sums) {
    __asm__ volatile(
        "tilezero %%tmm0\n\t"
        "tileloadd (%0,%1,1), %%tmm2\n\t"
        "tileloadd (%2,%3,1), %%tmm4\n\t"
        "tdpbusd %%tmm4, %%tmm2, %%tmm0\n\t"  // tmm0 += tmm2 . tmm4
        "tilestored %%tmm0, (%4,%3,1)"
        ::"r"(a), "r"(a_stride), "r"(b), "r"(64L), "r"(sums) : "memory");
}
template <> inline void tile_block<1>(const void* a, long a_stride, const void* b, void* sums) {
    __asm__ volatile(
        "tilezero %%tmm1\n\t"
        "tileloadd (%0,%1,1), %%tmm3\n\t"
        "tileloadd (%2,%3,1), %%tmm5\n\t"
        "tdpbusd %%tmm5, %%tmm3, %%tmm1\n\t"
        "tilestored %%tmm1, (%4,%3,1)"
        ::"r"(a), "r"(a_stride), "r"(b), "r"(64L), "r"(sums) : "memory");
}
#else
// Scalar stand-ins for the tile instructions, so that the AMX kernels' layout
// and indexing can be tested on a CPU without AMX (cmake -DPHICPP_AMX_EMULATE=ON:
// a test build only; it also makes cpu_features offer "amx" on any AVX-512 CPU).
struct EmuTiles {
    TileConfig cfg;
    uint8_t t[8][16][64];
};
thread_local EmuTiles emu;
inline void tile_config(const TileConfig* cfg) { std::memcpy(&emu.cfg, cfg, sizeof *cfg); }
inline void tile_release() { std::memset(&emu, 0, sizeof emu); }
inline void emu_load(int t, const void* p, long stride) {
    for (int r = 0; r < emu.cfg.rows[t]; ++r)
        std::memcpy(emu.t[t][r], static_cast<const uint8_t*>(p) + r * stride, emu.cfg.colsb[t]);
}
inline void emu_store(int t, void* p, long stride) {
    for (int r = 0; r < emu.cfg.rows[t]; ++r)
        std::memcpy(static_cast<uint8_t*>(p) + r * stride, emu.t[t][r], emu.cfg.colsb[t]);
}
inline void emu_dpbusd(int c, int a, int b) {  // C[m][n] += sum_k u8 A[m][k] * s8 B[k/4][4n + k%4]
    for (int m = 0; m < emu.cfg.rows[c]; ++m)
        for (int n = 0; n < emu.cfg.colsb[c] / 4; ++n) {
            int32_t acc;
            std::memcpy(&acc, &emu.t[c][m][4 * n], 4);
            for (int k = 0; k < emu.cfg.colsb[a]; ++k)
                acc += static_cast<int32_t>(emu.t[a][m][k]) * static_cast<int8_t>(emu.t[b][k / 4][4 * n + k % 4]);
            std::memcpy(&emu.t[c][m][4 * n], &acc, 4);
        }
}
template <int S> inline void tile_block(const void* a, long a_stride, const void* b, void* sums) {
    std::memset(emu.t[0 + S], 0, sizeof emu.t[0 + S]);
    emu_load(2 + S, a, a_stride);
    emu_load(4 + S, b, 64);
    emu_dpbusd(0 + S, 2 + S, 4 + S);
    emu_store(0 + S, sums, 64);
}
#endif

// Every thread that runs tile instructions loads its own configuration (the
// tile state is per thread); released at the end of each call, so an idle
// pool thread carries no tile state through context switches.
inline void amx_configure() {
    TileConfig cfg;
    for (int s = 0; s < 2; ++s) {
        cfg.rows[0 + s] = kAmxMr;
        cfg.colsb[0 + s] = kI8Lanes * 4;  // 16 int32 sums per row
        cfg.rows[2 + s] = kAmxMr;
        cfg.colsb[2 + s] = QK;            // 32 weight codes per row
        cfg.rows[4 + s] = QK / 4;         // 8 rows of 4 columns x 16 tokens
        cfg.colsb[4 + s] = kI8Lanes * 4;
    }
    tile_config(&cfg);
}

// The sums of block b (16 rows x 16 tokens, from tilestored) scaled into acc.
template <class U>
inline void amx_scale(const I8PanelOf<kAmxMr>& p, const int32_t (*sums)[kI8Lanes], int b, const I8Tiles& X,
                      __m512* acc) {
    using V = I8Vec;
    constexpr int L = kI8Lanes;
    const __m512 dv = V::loadf(X.d + b * L);
    const __m512i c0 = U::kOff ? _mm512_loadu_si512(X.c + b * L) : _mm512_setzero_si512();
    const __m512 sv = U::kMins ? V::loadf(X.s + b * L) : V::zerof();
    for (int r = 0; r < kAmxMr; ++r) {
        const __m512i s = _mm512_add_epi32(_mm512_load_si512(sums[r]), c0);
        acc[r] = V::fma(V::cvt(s), V::mul(dv, V::bcastf(&p.A[r][b])), acc[r]);
        if (U::kMins) acc[r] = V::fma(V::bcastf(&p.B[r][b]), sv, acc[r]);
    }
}

// c[mr rows][L] (+)= panel rows x the nb 32-column blocks of one token tile,
// two blocks at a time: both blocks' tile products are issued before either
// is scaled, so the tile unit computes the second while the vector units
// scale the first.
template <class U>
void amx_micro(const I8PanelOf<kAmxMr>& p, int mr, int nb, const I8Tiles& X, float* c, bool accumulate) {
    using V = I8Vec;
    constexpr int L = kI8Lanes;
    // written by tilestored before every read (the asm statements declare that
    // they touch memory, so the compiler assumes they may write these); not
    // zeroed: clearing both 1 KiB buffers on every call was 4% of a Q8_0 prefill
    alignas(64) int32_t sums0[kAmxMr][L], sums1[kAmxMr][L];
    __m512 acc[kAmxMr];
    for (int r = 0; r < kAmxMr; ++r) acc[r] = accumulate && r < mr ? V::loadf(c + r * L) : V::zerof();
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        tile_block<0>(&p.q[0][b * QK], kI8Kc, X.q + b * QK * L, sums0);
        tile_block<1>(&p.q[0][(b + 1) * QK], kI8Kc, X.q + (b + 1) * QK * L, sums1);
        amx_scale<U>(p, sums0, b, X, acc);
        amx_scale<U>(p, sums1, b + 1, X, acc);
    }
    if (b < nb) {
        tile_block<0>(&p.q[0][b * QK], kI8Kc, X.q + b * QK * L, sums0);
        amx_scale<U>(p, sums0, b, X, acc);
    }
    for (int r = 0; r < mr; ++r) V::storef(c + r * L, acc[r]);
}

template <class U>
void gemm_amx(const GemmI8Args& a, int64_t r0, int64_t r1) {
    static_assert(U::G == 1, "one scale per 32 columns");
    amx_configure();
    gemm_i8_blocks<U, kAmxMr>(a, r0, r1, [](I8PanelOf<kAmxMr>& p, int mr, int nb, const I8Tiles& X, int tiles, float* c,
                                            bool acc) {
        // the tile still multiplies 16 rows: the missing ones get zero codes and scales
        for (int r = mr; r < kAmxMr; ++r) {
            std::memset(p.q[r], 0, sizeof p.q[r]);
            std::memset(p.A[r], 0, sizeof p.A[r]);
            std::memset(p.B[r], 0, sizeof p.B[r]);
        }
        for (int j = 0; j < tiles; ++j)
            amx_micro<U>(p, mr, nb, tiles_from(X, j), c + static_cast<size_t>(j) * mr * kI8Lanes, acc);
    });
    tile_release();
}

void fill_amx_table(KernelTable* t) {
    fill_x86_table(t);
    // a thread's chunk: whole AMX panels (16 rows) and whole row blocks of the
    // VNNI kernel the 16-column-scale formats keep (48 rows)
    t->gemm_i8_row_block = 96;
    t->gemm_i8[static_cast<int>(DType::Q4_0)] = gemm_amx<I8Q4_0>;
    t->gemm_i8[static_cast<int>(DType::Q4_1)] = gemm_amx<I8Legacy<LegacyQ4_1, 0>>;
    t->gemm_i8[static_cast<int>(DType::Q5_0)] = gemm_amx<I8Legacy<LegacyQ5_0, 16>>;
    t->gemm_i8[static_cast<int>(DType::Q5_1)] = gemm_amx<I8Legacy<LegacyQ5_1, 0>>;
    t->gemm_i8[static_cast<int>(DType::Q8_0)] = gemm_amx<I8Legacy<LegacyQ8_0, 128>>;
    t->gemm_i8[static_cast<int>(DType::IQ4_NL)] = gemm_amx<I8Legacy<LegacyIQ4_NL, 128>>;
    t->gemm_i8[static_cast<int>(DType::IQ4_XS)] = gemm_amx<I8IQ4XS>;
    t->gemm_i8[static_cast<int>(DType::Q4_K)] = gemm_amx<I8KQuant<KQ4>>;
    t->gemm_i8[static_cast<int>(DType::Q5_K)] = gemm_amx<I8KQuant<KQ5>>;
    t->gemm_i8_q4_0_x8 = gemm_amx<I8Q4_0x8>;
}

} // namespace
} // namespace phi::cpu
#endif

namespace phi::cpu {
PHI_ISA_KERNEL_TABLE(kernels_amx, fill_amx_table)
} // namespace phi::cpu
