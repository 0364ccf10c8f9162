// Scalar reference (de)quantization and dot products for every supported
// weight type. These define the numbers: the SIMD kernels in
// backend/cpu/kernels_*.cpp are tested against them, and the quantizers match
// ggml's quantize_row_*_ref bit for bit so files we write load in llama.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace phi::quant {

// Type the activations are converted to before a dot product with a weight of
// type w: F32 for float weights, Q8_0 / Q8_1 / Q8_K for quantized ones (as
// ggml's vec_dot_type). Throws phi::Error(unsupported) for unknown types.
DType activation_type(DType w);

bool can_quantize(DType t);    // quantize_row supports t
bool can_dequantize(DType t);  // dequantize_row supports t
bool can_matmul(DType t);      // vec_dot supports t as a weight type
// The names of the types for which has(t) holds ("f32", "q4_0", ...), in id order.
std::vector<std::string> type_names(bool (*has)(DType));

// n must be a multiple of t's block size (callers check: phi::Error(invalid_arg)).
void quantize_row(DType t, const float* x, void* dst, int64_t n);
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

// Reference dot product of one weight row of type w with one activation row
// of type activation_type(w), both of n elements. For quantized types this is
// the integer dot product ggml's CPU backend computes (not dequantize + f32).
float vec_dot(DType w, const void* wrow, const void* xrow, int64_t n);

// Throws phi::Error(invalid_arg) unless n is a positive multiple of t's block size.
void check_row_length(DType t, int64_t n);

} // namespace phi::quant
