// Matrix products on the CPU for every weight type: the hot path of decode
// (n == 1, matrix x vector) and prefill (n > 1, matrix x matrix).
#pragma once
#include "backend/backend.h"
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/threadpool.h"

namespace phi::cpu {

// From this many tokens on (prefill), an ISA with a GEMM kernel multiplies
// weight panels dequantized to f32 with the f32 activations; below it (decode)
// quantized weights meet activations quantized to 8 bits (as in llama.cpp).
constexpr int kGemmMinTokens = 8;

// Whether matmul() of W with n tokens takes the GEMM path on `isa` (f32
// activations against dequantized weight panels) rather than the row kernels
// (8-bit activations for quantized weights). Q4_0 in the interleaved layout
// stays on its row kernel where that is faster (see kernels_x86_impl.h).
bool gemm_applies(const Tensor& W, int n, Isa isa);

// Which kernels matmul() gives W with n tokens on `isa`: the row kernels
// (8-bit activations, one weight row group at a time), the f32 GEMM
// (dequantized panels x f32 activations), the int8 GEMM (8-bit panels x
// activations quantized per call in blocks of 32, gemm_i8_x86_impl.h) or, on
// AMX, the bf16 tile GEMM (panels and activations rounded to bf16, kernels_amx.cpp).
enum class PrefillPath { rows, gemm_f32, gemm_i8, gemm_bf16 };
PrefillPath prefill_path(const Tensor& W, int n, Isa isa);

// y[n, W.ne1] = x[n, W.ne0] . W^T (+ bias) with the kernels of `isa` (or the
// next weaker one that has a kernel). Splits output rows across the pool.
// allow_gemm = false keeps the row kernels at any n, whose arithmetic for a
// row of x does not depend on the others. Throws phi::Error(unsupported) for
// a weight type without a kernel.
// walk: how decode walks a thread's rows (the backend's decode_walk()).
void matmul(const Tensor& W, const float* x, int n, float* y, const float* bias, ThreadPool& pool, Isa isa,
            bool allow_gemm = true, DecodeWalk walk = {});

// Whether W's type and shape can be held in `layout` (always for rows).
bool layout_fits(const Tensor& W, WeightLayout layout);

// Whether the CPU backend copies matmul weights into its own memory at load
// (repacking those with an interleaved layout); PHICPP_REPACK=0: no, every
// weight is read in place from the file mapping (as llama.cpp's --no-repack
// with mmap), for comparisons.
bool weights_copied();

// The layout matmul() is fastest with for a weight of this type and shape on
// `isa` (WeightLayout::rows when no interleaved kernel applies, or with
// PHICPP_REPACK=0).
WeightLayout preferred_layout(const Tensor& W, Isa isa);

// W (file layout) reordered into `layout` at dst (W.nbytes() bytes), split
// over the pool. Returns W with data = dst and the new layout.
Tensor repack_weight(const Tensor& W, WeightLayout layout, void* dst, ThreadPool& pool);

// W copied as it is to dst (W.nbytes() bytes), split over the pool. Returns W
// with data = dst.
Tensor copy_weight(const Tensor& W, void* dst, ThreadPool& pool);

// Convert n elements of one row of `type` to f32 (get_rows, tests).
void dequantize_row(DType type, const void* src, float* dst, int64_t n);

} // namespace phi::cpu
