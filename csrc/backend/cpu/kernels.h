// The per-ISA kernel tables behind phi::cpu::matmul. Each ISA file
// (kernels_scalar.cpp, kernels_avx2.cpp, kernels_avxvnni.cpp, kernels_avx512.cpp, kernels_amx.cpp) fills a table;
// a missing entry falls back to the next weaker ISA, so a format can gain a
// fast path one ISA at a time while the scalar reference always exists.
#pragma once
#include <cstddef>
#include <cstdint>

#include "backend/cpu/cpu_features.h"
#include "core/dtype.h"

namespace phi::cpu {

constexpr int kNumTypes = 40;  // GGML type ids are < 40

// One matmul, as a row kernel sees it: for every output row r in [r0, r1)
// and token t in [0, n): y[t * ldy + r] = dot(W row r, x row t) (+ bias[r]).
// x holds the activations already converted to activation_type(type): f32
// rows for float weights, Q8_0 / Q8_1 / Q8_K blocks for quantized weights.
struct MatmulArgs {
    const uint8_t* w = nullptr;  // weight rows
    size_t w_stride = 0;         // bytes per weight row
    DType type = DType::F32;
    int64_t K = 0;               // elements per row
    const uint8_t* x = nullptr;  // activation rows
    size_t x_stride = 0;         // bytes per activation row
    int n = 0;                   // tokens
    float* y = nullptr;
    int64_t ldy = 0;             // floats between consecutive tokens' outputs
    const float* bias = nullptr; // may be null
    DecodeWalk walk;             // how decode walks the rows (cpu_features.h)
};

using RowsKernel = void (*)(const MatmulArgs& a, int64_t r0, int64_t r1);

// Elements [k0, k0 + n) of row `row` of the weight at w (w_stride bytes per
// row of the file layout) as f32; k0 and n are multiples of the type's block
// size (n may end at the row's end for float types).
using DequantRangeFn = void (*)(DType type, const uint8_t* w, size_t w_stride, int64_t row, int64_t k0, int64_t n,
                                float* dst);

// Prefill as a blocked GEMM: weight panels are dequantized to f32 once per
// call and multiplied with every token, so the cost per weight element is
// amortized over n tokens and the inner loop is pure FMA.
struct GemmArgs {
    const uint8_t* w = nullptr;
    size_t w_stride = 0;
    int64_t K = 0;
    DType type = DType::F32;
    DequantRangeFn dequant = nullptr;
    const float* xp = nullptr;   // activations packed as [ceil(n/T)][K][T], T = gemm_tile_tokens, zero-padded tokens
    const uint16_t* xb = nullptr;  // the bf16 GEMM's instead: [ceil(n/T)][K/2][T][2] bf16, T = kBf16TileTokens
    int n = 0;
    float* y = nullptr;
    int64_t ldy = 0;
    const float* bias = nullptr;
};
using GemmKernel = void (*)(const GemmArgs& a, int64_t r0, int64_t r1);
// Prefill in 8-bit integers (gemm_i8_x86_impl.h): activations quantized per
// call in blocks of 32 (Q8_0's arithmetic) and packed in tiles of L tokens
// (L = gemm_i8_tile_tokens), per tile:
//   xq [K/4][L][4] signed codes, xd [K/32][L] block scales,
//   xc [K/gs][L] -off * sum of the codes over each group of gs columns (off != 0),
//   xs [K/gs][L] scale * sum of the codes over each group (formats with mins),
// zero for tokens past n. gs, off and mins are the weight format's (I8ActSpec).
struct GemmI8Args {
    const uint8_t* w = nullptr;
    size_t w_stride = 0;
    int64_t K = 0;
    const int8_t* xq = nullptr;
    const float* xd = nullptr;
    const int32_t* xc = nullptr;
    const float* xs = nullptr;
    int n = 0;
    float* y = nullptr;
    int64_t ldy = 0;
    const float* bias = nullptr;
};
using GemmI8Kernel = void (*)(const GemmI8Args& a, int64_t r0, int64_t r1);
struct I8ActSpec {
    int group;  // columns per group of the sums (16 or 32)
    int off;    // the weight codes' offset (xc = -off * sum); 0: no xc
    bool mins;  // xs wanted
};
// Token tiles [tile0, tile1) of x (n rows of K floats) into the layout above
// (xc null when off == 0, xs null when not wanted).
using PackI8Fn = void (*)(const float* x, int64_t K, int n, int gs, int off, int tile0, int tile1, int8_t* xq,
                          float* xd, int32_t* xc, float* xs);
// Prefill on AMX-BF16 tiles (kernels_amx.cpp), a GemmKernel reading GemmArgs::xb:
// token tiles [tile0, tile1) of x (n rows of K floats, K % 32 == 0) rounded to
// bf16 and packed as B tiles want them (pairs of columns side by side), tiles
// of kBf16TileTokens tokens.
constexpr int kBf16TileTokens = 16;
using PackBf16Fn = void (*)(const float* x, int64_t K, int n, int tile0, int tile1, uint16_t* xb);
// Convert one activation row of K floats to a quantized activation type.
using QuantizeRowFn = void (*)(const float* x, void* dst, int64_t K);

// Trivial on purpose (no member initializers): the ISA files fill tables in
// static storage, which is zeroed without running code compiled for that ISA.
struct KernelTable {
    RowsKernel rows[kNumTypes];             // indexed by weight type id; null: none
    QuantizeRowFn quantize_act[kNumTypes];  // indexed by activation type id
    DequantRangeFn dequant[kNumTypes];      // indexed by weight type id; null: use quant::dequantize_row
    RowsKernel rows_q4_0_x8;                // Q4_0 in WeightLayout::q4_0_x8 (any n, prefill too); null: none
    GemmKernel gemm;                        // null: prefill uses `rows` too
    int gemm_row_block;                     // rows a gemm call should get at a time
    int gemm_tile_tokens;                   // tokens per packed activation tile (the vector width)
    GemmI8Kernel gemm_i8[kNumTypes];        // indexed by weight type id; null: the f32 GEMM
    GemmI8Kernel gemm_i8_q4_0_x8;           // Q4_0 in WeightLayout::q4_0_x8
    I8ActSpec gemm_i8_acts[kNumTypes];      // what a type's int8 GEMM reads besides the codes
    I8ActSpec gemm_i8_q4_0_x8_acts;
    PackI8Fn pack_i8;
    int gemm_i8_tile_tokens;
    int gemm_i8_row_block;
    GemmKernel gemm_bf16[kNumTypes];        // indexed by weight type id; null: none
    GemmKernel gemm_bf16_q4_0_x8;           // Q4_0 in WeightLayout::q4_0_x8
    PackBf16Fn pack_bf16;
    int gemm_bf16_row_block;
    // Kernels whose arithmetic for one token does not depend on the other tokens
    // of the call (bit = type id; the other kernels have a dedicated one-token
    // path or accumulate differently for several tokens); tests/test_matmul.py checks it.
    uint64_t rows_token_invariant;
    bool q4_0_x8_token_invariant;
};

// Defines an ISA file's `const KernelTable& name()`: on x86 builds filled once
// by fill(&table) with the kernels that file compiled, elsewhere empty.
#if defined(PHICPP_X86)
#define PHI_ISA_KERNEL_TABLE(name, fill)                \
    const KernelTable& name() {                         \
        static KernelTable table; /* zero-initialized */ \
        static const bool filled = (fill(&table), true); \
        (void)filled;                                    \
        return table;                                    \
    }
#else
#define PHI_ISA_KERNEL_TABLE(name, fill) \
    const KernelTable& name() {          \
        static KernelTable empty;        \
        return empty;                    \
    }
#endif

const KernelTable& kernels_scalar();
const KernelTable& kernels_avx2();    // entries null when built without x86
const KernelTable& kernels_avxvnni();
const KernelTable& kernels_avx512();
const KernelTable& kernels_amx();     // the AVX-512 table with the AMX-BF16 prefill GEMM

} // namespace phi::cpu
