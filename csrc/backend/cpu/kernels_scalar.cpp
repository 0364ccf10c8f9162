// Portable kernels: the reference every SIMD path is tested against, and the
// fallback for CPUs without AVX2. Float weights are widened to f32 once per
// row and dotted with every token; quantized weights use the reference
// integer dot products of csrc/quant.
#include <cmath>
#include <algorithm>
#include <vector>

#include "backend/cpu/kernels.h"
#include "quant/blocks.h"
#include "quant/quant.h"
#include "quant/repack.h"

namespace phi::cpu {

namespace {

// Eight independent partial sums: keeps f32 rounding error ~ sqrt(K) ulp
// (relative ~1e-6 for model-sized rows) and lets the compiler vectorize.
float dot_f32(const float* a, const float* b, int64_t K) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = 0;
    for (; k + 8 <= K; k += 8)
        for (int j = 0; j < 8; ++j) acc[j] += a[k + j] * b[k + j];
    for (; k < K; ++k) acc[k & 7] += a[k] * b[k];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

void rows_float(const MatmulArgs& a, int64_t r0, int64_t r1) {
    thread_local std::vector<float> wrow;  // grows once per thread, reused by every call
    if (static_cast<int64_t>(wrow.size()) < a.K) wrow.resize(a.K);
    for (int64_t r = r0; r < r1; ++r) {
        const float* w;
        if (a.type == DType::F32) {
            w = reinterpret_cast<const float*>(a.w + r * a.w_stride);
        } else {
            quant::dequantize_row(a.type, a.w + r * a.w_stride, wrow.data(), a.K);
            w = wrow.data();
        }
        const float b = a.bias ? a.bias[r] : 0.0f;
        for (int t = 0; t < a.n; ++t) {
            const float* x = reinterpret_cast<const float*>(a.x + t * a.x_stride);
            a.y[t * a.ldy + r] = dot_f32(w, x, a.K) + b;
        }
    }
}

void rows_quant(const MatmulArgs& a, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
        const float b = a.bias ? a.bias[r] : 0.0f;
        for (int t = 0; t < a.n; ++t)
            a.y[t * a.ldy + r] = quant::vec_dot(a.type, a.w + r * a.w_stride, a.x + t * a.x_stride, a.K) + b;
    }
}

// Q4_0 in the x8 layout: each row gathered back into GGUF blocks.
void rows_q4_0_x8(const MatmulArgs& a, int64_t r0, int64_t r1) {
    thread_local std::vector<quant::BlockQ4_0> row;
    row.resize(static_cast<size_t>(a.K / quant::QK));
    for (int64_t r = r0; r < r1; ++r) {
        quant::unpack_row_q4_0_x8(a.w, a.K, r, 0, a.K / quant::QK, row.data());
        const float b = a.bias ? a.bias[r] : 0.0f;
        for (int t = 0; t < a.n; ++t)
            a.y[t * a.ldy + r] = quant::vec_dot(DType::Q4_0, row.data(), a.x + t * a.x_stride, a.K) + b;
    }
}

// Activations are quantized with the arithmetic of ggml's x86 path
// (scale 127/amax, round half to even), not the reference quantizer's
// (1/(amax/127), round half away), so a matmul sees the same activation
// codes as llama.cpp's x86 build would for the same input.
void quantize_q8_0(const float* x, void* dst, int64_t K) {
    auto* y = static_cast<quant::BlockQ8_0*>(dst);
    for (int64_t i = 0; i < K / 32; ++i, x += 32) {
        float amax = 0;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
        y[i].d = fp32_to_fp16(amax / 127.f);
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        // codes within [-127, 127] unless the row holds NaN or infinity (a broken
        // file's weights): those are -128, as the vector conversion gives them,
        // not a float-to-int cast of NaN (undefined)
        for (int j = 0; j < 32; ++j) {
            const float r = std::nearbyint(x[j] * id);
            y[i].qs[j] = r >= -128.f && r <= 127.f ? static_cast<int8_t>(r) : int8_t{-128};
        }
    }
}
void quantize_q8_1(const float* x, void* dst, int64_t K) { quant::quantize_row(DType::Q8_1, x, dst, K); }
void quantize_q8_K(const float* x, void* dst, int64_t K) { quant::quantize_row(DType::Q8_K, x, dst, K); }

KernelTable make_table() {
    KernelTable t{};
    for (DType d : {DType::F32, DType::F16, DType::BF16}) t.rows[static_cast<int>(d)] = rows_float;
    for (int id = 0; id < kNumTypes; ++id) {
        const DType d = static_cast<DType>(id);
        if (t.rows[id] == nullptr && quant::can_matmul(d) && quant::activation_type(d) != DType::F32)
            t.rows[id] = rows_quant;
    }
    t.rows_q4_0_x8 = rows_q4_0_x8;
    t.rows_token_invariant = ~uint64_t{0};  // one loop per token, the same for any n
    t.q4_0_x8_token_invariant = true;
    t.quantize_act[static_cast<int>(DType::Q8_0)] = quantize_q8_0;
    t.quantize_act[static_cast<int>(DType::Q8_1)] = quantize_q8_1;
    t.quantize_act[static_cast<int>(DType::Q8_K)] = quantize_q8_K;
    return t;
}

} // namespace

const KernelTable& kernels_scalar() {
    static const KernelTable table = make_table();
    return table;
}

} // namespace phi::cpu
