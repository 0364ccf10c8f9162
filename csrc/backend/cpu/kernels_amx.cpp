// The AVX-512 kernels with AMX tiles for the prefill GEMM of quantized
// weights (Sapphire Rapids and later Xeons). Compiled with the AVX-512 flags
// plus -mamx-tile -mamx-int8 -mamx-bf16; runs only on a backend whose ISA is
// "amx", which cpu_features.cpp offers only when cpuid reports AMX-TILE,
// AMX-INT8 and AMX-BF16, XCR0 says the OS saves the tile state, and the
// kernel granted this process the tile data (arch_prctl
// ARCH_REQ_XCOMP_PERM): without that permission the first tile instruction
// dies with SIGILL.
//
// The table is the AVX-512 one (compiled again here) plus a GEMM on bf16
// tiles for every quantized format: a panel of 32 weight rows is unpacked
// (the int8 GEMM's panel converters) and rounded to bf16 once per K block,
// the activations are rounded to bf16 once per call, and TDPBF16PS
// accumulates in f32 tiles across the whole row. The int8 tiles this file
// used before (TDPBUSD on 16 x 16 x 32 blocks) left each block's sums to be
// scaled by its weight and activation scales in vector code: 16 rows of
// convert / multiply / add per product, which bounded the GEMM (only 4% ahead
// of the AVX-512 VNNI kernel; the bf16 tiles: +30-80% per matmul, docs/CPU_KERNELS.md).
// Both operands round to bf16 (8 significant bits, relative 2^-9): less
// error than the int8 path's Q8_0 activations, and below every weight
// format's own.
#include "backend/cpu/kernels.h"

#if defined(PHICPP_X86)
#include "backend/cpu/kernels_x86_impl.h"

namespace phi::cpu {
namespace {

// A tile configuration (palette 1): rows and bytes per row of each register.
struct alignas(64) TileConfig {
    uint8_t palette_id = 1;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
};

#if !defined(PHICPP_AMX_EMULATE)
// The tile instructions as inline assembly with the memory they read and
// write declared: GCC 12's tile intrinsics pass only the address (no memory
// operand or clobber), so the compiler could move the stores that fill a
// panel past the load that reads it (and its _tile_loadconfig let GCC drop
// the stores that fill the configuration: llama.cpp's AMX build, docs/BENCHMARKS.md).
// Volatile asm statements keep their order. The tile registers are named in
// the instruction text.
inline void tile_config(const TileConfig* cfg) { __asm__ volatile("ldtilecfg %0" ::"m"(*cfg)); }
inline void tile_release() { __asm__ volatile("tilerelease" ::: "memory"); }
#define PHI_TILE_LOAD(T, p, s) \
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #T ::"r"(p), "r"(static_cast<long>(s)) : "memory")
#define PHI_TILE_STORE(T, p, s) \
    __asm__ volatile("tilestored %%tmm" #T ", (%0,%1,1)" ::"r"(p), "r"(static_cast<long>(s)) : "memory")
#define PHI_TILE_ZERO(T) __asm__ volatile("tilezero %%tmm" #T ::: "memory")
#define PHI_TDPBF16PS(C, A, B) __asm__ volatile("tdpbf16ps %%tmm" #B ", %%tmm" #A ", %%tmm" #C ::: "memory")
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
inline float emu_bf16(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline void emu_dpbf16(int c, int a, int b) {  // C[m][n] += sum_k A[m][2k + i] * B[k][2n + i]
    for (int m = 0; m < emu.cfg.rows[c]; ++m)
        for (int n = 0; n < emu.cfg.colsb[c] / 4; ++n) {
            float acc;
            std::memcpy(&acc, &emu.t[c][m][4 * n], 4);
            for (int k = 0; k < emu.cfg.colsb[a] / 4; ++k)
                for (int i = 0; i < 2; ++i)
                    acc += emu_bf16(&emu.t[a][m][4 * k + 2 * i]) * emu_bf16(&emu.t[b][k][4 * n + 2 * i]);
            std::memcpy(&emu.t[c][m][4 * n], &acc, 4);
        }
}
#define PHI_TILE_LOAD(T, p, s) emu_load(T, p, s)
#define PHI_TILE_STORE(T, p, s) emu_store(T, p, s)
#define PHI_TILE_ZERO(T) std::memset(emu.t[T], 0, sizeof emu.t[T])
#define PHI_TDPBF16PS(C, A, B) emu_dpbf16(C, A, B)
#endif

// ------------------------------------------------------------ bf16 tiles
//
// Tile registers: 0-3 sums (rows 0-15 x token tile j, rows 0-15 x tile j + 1,
// rows 16-31 x j, rows 16-31 x j + 1), 4-5 weights (16 rows x 32 bf16), 6-7
// activations (16 pairs of columns x 16 tokens x 2).
constexpr int kBfRows = 32;   // weight rows per panel (two A tiles)
constexpr int kBfKc = 256;    // columns per K block
constexpr int kBfLanes = kBf16TileTokens;  // tokens per tile
constexpr int kBfStep = 32;   // columns per tile product

inline void amx_configure_bf16() {
    TileConfig cfg;
    for (int t = 0; t < 8; ++t) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    tile_config(&cfg);
}

// 32 floats to bf16 (round to nearest even) at dst
inline void store_bf16x32(uint16_t* dst, __m512 lo, __m512 hi) {
    _mm512_storeu_si512(dst, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)));
}

void pack_bf16_activations(const float* x, int64_t K, int n, int tile0, int tile1, uint16_t* xb) {
    constexpr int L = kBfLanes;
    // pair p of a 32-column step goes to row p of the step's B tile: 16 uint32 apart
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(L));
    for (int tile = tile0; tile < tile1; ++tile) {
        uint32_t* dst = reinterpret_cast<uint32_t*>(xb) + static_cast<int64_t>(tile) * (K / 2) * L;
        for (int lane = 0; lane < L; ++lane) {
            const int t = tile * L + lane;
            const float* xr = x + static_cast<int64_t>(t) * K;
            for (int64_t k = 0; k < K; k += kBfStep) {
                const __m512i v = t < n ? reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(
                                              _mm512_loadu_ps(xr + k + 16), _mm512_loadu_ps(xr + k)))
                                        : _mm512_setzero_si512();
                _mm512_i32scatter_epi32(dst + (k / 2) * L + lane, idx, v, 4);
            }
        }
    }
}

// The sums of panel rows [0, 32) x token tiles [j, j + 2) (kTwo) or j alone,
// over the K block: c holds the row block's sums as [token tile][32 rows][16 tokens].
template <bool kTwo>
inline void bf16_tiles(const uint16_t* panel, int kc, const uint16_t* b0, size_t tile_stride, float* c0, bool acc) {
    constexpr int kC = kBfRows * kBfLanes;  // floats of one token tile's sums
    float* c1 = c0 + kC;
    const uint16_t* b1 = b0 + tile_stride;
    const long pst = 2L * kc;  // bytes between panel rows
    if (acc) {
        PHI_TILE_LOAD(0, c0, 64);
        PHI_TILE_LOAD(2, c0 + kC / 2, 64);
        if (kTwo) {
            PHI_TILE_LOAD(1, c1, 64);
            PHI_TILE_LOAD(3, c1 + kC / 2, 64);
        }
    } else {
        PHI_TILE_ZERO(0);
        PHI_TILE_ZERO(2);
        if (kTwo) {
            PHI_TILE_ZERO(1);
            PHI_TILE_ZERO(3);
        }
    }
    for (int k = 0; k < kc; k += kBfStep) {
        PHI_TILE_LOAD(4, panel + k, pst);
        PHI_TILE_LOAD(6, b0 + k * kBfLanes, 64);  // a step: 16 pairs x 16 tokens x 2
        PHI_TILE_LOAD(5, panel + 16 * kc + k, pst);
        PHI_TDPBF16PS(0, 4, 6);
        PHI_TDPBF16PS(2, 5, 6);
        if (kTwo) {
            PHI_TILE_LOAD(7, b1 + k * kBfLanes, 64);
            PHI_TDPBF16PS(1, 4, 7);
            PHI_TDPBF16PS(3, 5, 7);
        }
    }
    PHI_TILE_STORE(0, c0, 64);
    PHI_TILE_STORE(2, c0 + kC / 2, 64);
    if (kTwo) {
        PHI_TILE_STORE(1, c1, 64);
        PHI_TILE_STORE(3, c1 + kC / 2, 64);
    }
}

// Row r of an int8 panel (quant codes u, per group of 32 / G columns a scale
// A and for formats with mins B: weight = A (u - off) + B) as bf16.
template <class U, int MR>
inline void panel_row_bf16(const I8PanelOf<MR>& p, int r, int kc, uint16_t* dst) {
    constexpr int kChunks = 2 / U::G;  // 16-column chunks per group
    const __m512i off = _mm512_set1_epi32(U::kOff);
    const auto chunk = [&](int i) {
        const __m512 u = _mm512_cvtepi32_ps(_mm512_sub_epi32(
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(&p.q[r][16 * i]))), off));
        const int g = i / kChunks;
        if constexpr (U::kMins) return _mm512_fmadd_ps(u, _mm512_set1_ps(p.A[r][g]), _mm512_set1_ps(p.B[r][g]));
        return _mm512_mul_ps(u, _mm512_set1_ps(p.A[r][g]));
    };
    for (int i = 0; i < kc / 16; i += 2) store_bf16x32(dst + 16 * i, chunk(i), chunk(i + 1));
}

// The legacy formats straight from their blocks into bf16 (weight = d q, or
// d u + m), without the int8 panel in between: Bf16Direct<U>::kOn for the
// GEMM's U (the file-layout Q4_0 through LegacyQ4_0's signed codes).
template <class F>
struct Bf16Legacy {
    static constexpr bool kOn = true;
    static void row(const uint8_t* row, int64_t k0, int kc, uint16_t* dst) {
        const auto* b = reinterpret_cast<const typename F::Block*>(row) + k0 / QK;
        for (int ib = 0; ib < kc / QK; ++ib) {
            const __m256i q = F::load(b[ib]);
            const __m128i q0 = _mm256_castsi256_si128(q), q1 = _mm256_extracti128_si256(q, 1);
            const __m512 d = _mm512_set1_ps(h2f(b[ib].d));
            if constexpr (F::kSigned) {
                store_bf16x32(dst + ib * QK, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)), d),
                              _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)), d));
            } else {
                const __m512 m = _mm512_set1_ps(min_of(b[ib]));
                store_bf16x32(dst + ib * QK, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q0)), d, m),
                              _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q1)), d, m));
            }
        }
    }
};
template <class U>
struct Bf16Direct {
    static constexpr bool kOn = false;
};
template <class F, int Off>
struct Bf16Direct<I8Legacy<F, Off>> : Bf16Legacy<F> {};
template <>
struct Bf16Direct<I8Q4_0> : Bf16Legacy<LegacyQ4_0> {};

// Sums [token tile][32 rows][16 tokens] of rows mb.. (rows of them) into y, with the bias.
inline void bf16_write_block(const float* cbuf, int rows, int n, float* y0, int64_t ldy, const float* bias) {
    constexpr int L = kBfLanes;
    const __m512i col = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(L));  // a token's sums: a column, 16 floats apart
    for (int t = 0; t < n; ++t) {
        float* y = y0 + t * ldy;
        const float* c = cbuf + static_cast<size_t>(t / L) * kBfRows * L + t % L;
        for (int r = 0; r < rows; r += 16) {
            const __mmask16 m = rows - r >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (rows - r)) - 1);
            __m512 v = _mm512_i32gather_ps(col, c + r * L, 4);
            if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + r));
            _mm512_mask_storeu_ps(y + r, m, v);
        }
    }
}

// The weight bytes of the panel after this one (the next K block of these
// rows, or the first of the next row block) into L2 while this one is swept:
// a panel's rows are short runs a file row apart, which the hardware
// prefetcher does not follow (as in gemm_i8_blocks). Spread over the sweep,
// part(i, parts) at a time: issued all at once they filled the line fill
// buffers and stalled the core.
struct NextPanel {
    const uint8_t* w = nullptr;  // the next panel's first row, at its K block
    size_t stride = 0, len = 0;  // bytes between its rows, bytes of each
    int rows = 0;
    void part(int i, int parts) const {
        for (int r = rows * i / parts; r < rows * (i + 1) / parts; ++r) {
            const char* p = reinterpret_cast<const char*>(w + r * stride);
            for (size_t off = 0; off < len; off += 64) asm volatile("prefetcht1 %0" : : "m"(p[off]));
        }
    }
};
inline NextPanel next_panel(const GemmI8Args& a, int64_t mb, int rows, int64_t k0, int kc, int64_t r1) {
    int64_t row0 = mb, kn = k0 + kc;
    if (kn >= a.K) {
        row0 = mb + rows;
        kn = 0;
        rows = static_cast<int>(min_i64(kBfRows, r1 - row0));
    }
    NextPanel np;
    np.w = a.w + row0 * a.w_stride + a.w_stride * static_cast<size_t>(kn) / static_cast<size_t>(a.K);
    np.stride = a.w_stride;
    np.len = a.w_stride * static_cast<size_t>(min_i64(kBfKc, a.K - kn)) / static_cast<size_t>(a.K);
    np.rows = rows > 0 ? rows : 0;
    return np;
}

// Output rows [r0, r1): row block by row block (32 rows), K block by K block:
// the panel's rows unpacked (U::row, as the int8 GEMM's panels; interleaved
// Q4_0 a group of 8 rows at a time) and rounded to bf16, then every pair of
// token tiles swept over it, their sums kept in memory between K blocks (a
// tile load and store per 8 products).
template <class U>
void gemm_amx_bf16(const GemmArgs& a, int64_t r0, int64_t r1) {
    constexpr int L = kBfLanes, MR = 16;
    constexpr bool x8 = std::is_same_v<U, I8Q4_0x8>;
    const int tiles = (a.n + L - 1) / L;
    const size_t tile_stride = static_cast<size_t>(a.K) * L;  // uint16 between token tiles
    thread_local AlignedBytes pbuf, cbuf_store, ibuf;
    auto* panel = reinterpret_cast<uint16_t*>(pbuf.get(sizeof(uint16_t) * kBfRows * kBfKc));
    float* cbuf = reinterpret_cast<float*>(cbuf_store.get(sizeof(float) * kBfRows * L * (tiles + 1)));
    auto* ip = reinterpret_cast<I8PanelOf<MR>*>(ibuf.get(sizeof(I8PanelOf<MR>) * (kBfRows / MR)));
    GemmI8Args ia;  // what the int8 panel converters read
    ia.w = a.w;
    ia.w_stride = a.w_stride;
    ia.K = a.K;
    amx_configure_bf16();
    for (int64_t mb = r0; mb < r1; mb += kBfRows) {
        const int rows = static_cast<int>(min_i64(kBfRows, r1 - mb));
        for (int64_t k0 = 0; k0 < a.K; k0 += kBfKc) {
            const int kc = static_cast<int>(min_i64(kBfKc, a.K - k0));
            if constexpr (Bf16Direct<U>::kOn) {
                for (int r = 0; r < rows; ++r) Bf16Direct<U>::row(a.w + (mb + r) * a.w_stride, k0, kc, panel + r * kc);
            } else {
                if constexpr (x8) {
                    convert_q4_0_x8_block<MR>(ia, mb, rows, k0, kc, ip);
                } else {
                    for (int r = 0; r < rows; ++r) i8_convert_row<U>(ia, mb + r, k0, kc, ip[r / MR], r % MR);
                }
                for (int r = 0; r < rows; ++r) panel_row_bf16<U>(ip[r / MR], r % MR, kc, panel + r * kc);
            }
            if (rows < kBfRows) std::memset(panel + rows * kc, 0, sizeof(uint16_t) * (kBfRows - rows) * kc);
            if constexpr (x8) prefetch_q4_0_x8_next(ia, mb, rows, k0, kc, r1);
            const NextPanel np = x8 ? NextPanel{} : next_panel(ia, mb, rows, k0, kc, r1);
            const uint16_t* xb = a.xb + k0 * L;
            for (int j = 0; j < tiles; j += 2) {
                np.part(j / 2, (tiles + 1) / 2);
                float* c = cbuf + static_cast<size_t>(j) * kBfRows * L;
                if (j + 1 < tiles) bf16_tiles<true>(panel, kc, xb + j * tile_stride, tile_stride, c, k0 > 0);
                else bf16_tiles<false>(panel, kc, xb + j * tile_stride, tile_stride, c, k0 > 0);
            }
        }
        bf16_write_block(cbuf, rows, a.n, a.y + mb, a.ldy, a.bias ? a.bias + mb : nullptr);
    }
    tile_release();
}

void fill_amx_table(KernelTable* t) {
    fill_x86_table(t);  // the int8 GEMM stays AVX-512 VNNI's (reached with PHICPP_GEMM_BF16=0)
    t->gemm_bf16[static_cast<int>(DType::Q4_0)] = gemm_amx_bf16<I8Q4_0>;
    t->gemm_bf16[static_cast<int>(DType::Q4_1)] = gemm_amx_bf16<I8Legacy<LegacyQ4_1, 0>>;
    t->gemm_bf16[static_cast<int>(DType::Q5_0)] = gemm_amx_bf16<I8Legacy<LegacyQ5_0, 16>>;
    t->gemm_bf16[static_cast<int>(DType::Q5_1)] = gemm_amx_bf16<I8Legacy<LegacyQ5_1, 0>>;
    t->gemm_bf16[static_cast<int>(DType::Q8_0)] = gemm_amx_bf16<I8Legacy<LegacyQ8_0, 128>>;
    t->gemm_bf16[static_cast<int>(DType::IQ4_NL)] = gemm_amx_bf16<I8Legacy<LegacyIQ4_NL, 128>>;
    t->gemm_bf16[static_cast<int>(DType::IQ4_XS)] = gemm_amx_bf16<I8IQ4XS<false>>;
    t->gemm_bf16[static_cast<int>(DType::Q2_K)] = gemm_amx_bf16<I8KQuant<KQ2>>;
    t->gemm_bf16[static_cast<int>(DType::Q3_K)] = gemm_amx_bf16<I8KQuant<KQ3>>;
    t->gemm_bf16[static_cast<int>(DType::Q4_K)] = gemm_amx_bf16<I8KQuant<KQ4>>;
    t->gemm_bf16[static_cast<int>(DType::Q5_K)] = gemm_amx_bf16<I8KQuant<KQ5>>;
    t->gemm_bf16[static_cast<int>(DType::Q6_K)] = gemm_amx_bf16<I8KQuant<KQ6>>;
    t->gemm_bf16_q4_0_x8 = gemm_amx_bf16<I8Q4_0x8>;
    t->pack_bf16 = pack_bf16_activations;
    t->gemm_bf16_row_block = 2 * kBfRows;
}

} // namespace
} // namespace phi::cpu
#endif

namespace phi::cpu {
PHI_ISA_KERNEL_TABLE(kernels_amx, fill_amx_table)
} // namespace phi::cpu
