// PLACEHOLDER reference matmul for F32/F16/BF16 (scalar); the quant work
// replaces this with per-type, per-ISA kernels.
#include "backend/cpu/matmul.h"

#include <vector>

#include "core/error.h"

namespace phi::cpu {

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
    switch (type) {
        case DType::F32: for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<const float*>(src)[i]; return;
        case DType::F16: for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(static_cast<const uint16_t*>(src)[i]); return;
        case DType::BF16: for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(static_cast<const uint16_t*>(src)[i]); return;
        default: fail(ErrorKind::unsupported, "no CPU kernel for tensor type ", dtype_name(type));
    }
}

void matmul(const Tensor& W, const float* x, int n, float* y, const float* bias, ThreadPool& pool) {
    const int64_t K = W.ne0, M = W.ne1;
    dequantize_row(W.type, W.data, nullptr, 0);  // type check
    pool.parallel_for(M, 16, [&](int64_t r0, int64_t r1) {
        std::vector<float> w(K);
        for (int64_t r = r0; r < r1; ++r) {
            dequantize_row(W.type, static_cast<const char*>(W.data) + r * W.row_bytes(), w.data(), K);
            for (int t = 0; t < n; ++t) {
                const float* xt = x + static_cast<int64_t>(t) * K;
                double acc = 0;
                for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(w[k]) * xt[k];
                y[static_cast<int64_t>(t) * M + r] = static_cast<float>(acc) + (bias ? bias[r] : 0.0f);
            }
        }
    });
}

} // namespace phi::cpu
