// Prefill matmuls through cuBLASLt (cublaslt.h), for F16 and quantized
// weights: cuBLAS's Hopper GEMMs run at several times the tensor-core rate of
// gemm.cu's mma.sync kernel. Quantized weights are dequantized to f16 a slice
// of rows at a time, into a buffer small enough to stay in L2 for the GEMM
// that reads it right after, so that HBM sees mostly the quantized bytes.
//
// The activations are converted as for gemm.cu (each token scaled by its own
// power of two, so none overflows f16 and each is as accurate as at unit
// scale); cuBLAS writes the scaled product, and one pass undoes the scales and
// applies bias and epilogue (SwiGLU included: no separate pass for it).
#include <algorithm>

#include "backend/cuda/cublaslt.h"
#include "backend/cuda/formats.cuh"
#include "backend/cuda/kernels.h"

namespace phi::cuda {
namespace {

// Rows [r0, r0 + rows) of planar quantized W (K columns) as f16 rows: a
// thread a 32-element unit (a warp's loads are a row's consecutive units).
template <class F>
__global__ void dequant_rows_kernel(PlanarView w, int64_t r0, int rows, int K, __half* out) {
    pdl_wait();  // (out may still be read by the GEMM before)
    pdl_launch_dependents();
    const int units = K / 32;
    const int64_t total = static_cast<int64_t>(rows) * units;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t r = i / units;
        const int unit = static_cast<int>(i % units);
        Unit u;
        F::unpack(load_unit<F>(w, r0 + r, unit), unit % F::kUnits, u);
        uint32_t h[16];
#pragma unroll
        for (int e = 0; e < 32; e += 2) h[e / 2] = pack_half2(unit_value(u, e), unit_value(u, e + 1));
        uint4* dst = reinterpret_cast<uint4*>(out + r * K + unit * 32);
#pragma unroll
        for (int j = 0; j < 4; ++j) dst[j] = make_uint4(h[4 * j], h[4 * j + 1], h[4 * j + 2], h[4 * j + 3]);
    }
}

// y = epilogue(z / scale[t] + bias) for z [n, M] (the product of the scaled
// activations); swiglu: y [n, M / 2] from the gate half and the up half.
// CTA row blockIdx.y takes tokens blockIdx.y, + gridDim.y, ...; a thread
// takes kV consecutive columns (4 where the widths allow 16-byte accesses).
template <int kV>
__global__ void lt_epilogue_kernel(const float* z, int n, int M, const float* scale, const float* bias, int ep,
                                   float* y) {
    pdl_wait();
    pdl_launch_dependents();
    const bool swiglu = ep == static_cast<int>(Epilogue::swiglu);
    const int width = swiglu ? M / 2 : M;
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) * kV;
    if (c >= width) return;
    float b[kV], bu[kV];  // the bias of these columns (and of their up half)
#pragma unroll
    for (int i = 0; i < kV; ++i) {
        b[i] = bias ? bias[c + i] : 0.0f;
        bu[i] = bias && swiglu ? bias[width + c + i] : 0.0f;
    }
    for (int64_t t = blockIdx.y; t < n; t += gridDim.y) {
        const float unscale = 1.0f / scale[t];  // exact: a power of two
        float v[kV], out[kV];
        load_floats(z + t * M + c, v);
        if (swiglu) {
            float u[kV];
            load_floats(z + t * M + width + c, u);
#pragma unroll
            for (int i = 0; i < kV; ++i) out[i] = silu(v[i] * unscale + b[i]) * (u[i] * unscale + bu[i]);
        } else if (ep == static_cast<int>(Epilogue::add)) {
            load_floats(y + t * width + c, out);
#pragma unroll
            for (int i = 0; i < kV; ++i) out[i] += v[i] * unscale + b[i];
        } else {
            const bool gelu = ep == static_cast<int>(Epilogue::gelu);
#pragma unroll
            for (int i = 0; i < kV; ++i) out[i] = gelu ? gelu_tanh(v[i] * unscale + b[i]) : v[i] * unscale + b[i];
        }
        store_floats(y + t * width + c, out);
    }
}

} // namespace

bool lt_takes(const Tensor& W) {
    if (W.ne0 % 8 != 0) return false;  // rows of 16-byte multiples
    if (W.type == DType::F16) return reinterpret_cast<uintptr_t>(W.data) % 16 == 0;
    return W.type != DType::F32 && W.type != DType::BF16 && W.ne0 % 32 == 0;
}

size_t lt_workspace(int n, int64_t K) {
    return (static_cast<size_t>(n) * converted_ld(K) * sizeof(__half) + 255) / 256 * 256 + n * sizeof(float) + 256;
}

void lt_epilogue(const LtHeld& h, const Launch& l) {
    const int64_t width = h.ep == Epilogue::swiglu ? h.M / 2 : h.M;
    const bool vec4 = width % 4 == 0 && reinterpret_cast<uintptr_t>(h.y) % 16 == 0;  // (product: aligned, M even)
    const int v = vec4 ? 4 : 1;
    const dim3 grid(static_cast<unsigned>((width / v + 255) / 256), static_cast<unsigned>(std::min(h.n, 65535)));
    launch(vec4 ? lt_epilogue_kernel<4> : lt_epilogue_kernel<1>, grid, dim3(256), 0, l, static_cast<const float*>(h.product),
           h.n, static_cast<int>(h.M), h.scale, h.bias, static_cast<int>(h.ep), h.y);
}

bool gemm_lt(CublasLt& lt, const Tensor& W, const float* x, const RowNorm& norm, int n, float* y, const float* bias,
             Epilogue ep, const LtBuffers& b, const Launch& l, bool x_converted, LtHeld* held) {
    if (!lt_takes(W)) return false;
    const int K = static_cast<int>(W.ne0);
    const int64_t M = W.ne1, ld = converted_ld(K);
    auto* xh = static_cast<__half*>(b.ws);
    auto* scale = reinterpret_cast<float*>(static_cast<uint8_t*>(b.ws) +
                                           (static_cast<size_t>(n) * ld * sizeof(__half) + 255) / 256 * 256);
    const float one = 1.0f, zero = 0.0f;
    const LtHeld product{b.product, scale, n, M, bias, ep, y};
    // a plain store may be held for the op after it (LtHeld)
    auto epilogue = [&] {
        if (held && ep == Epilogue::store) *held = product;
        else lt_epilogue(product, l);
    };
    if (!x_converted) convert_rows(x, norm, n, K, xh, scale, l);
    if (W.type == DType::F16) {
        if (!lt.matmul(static_cast<const __half*>(W.data), M, K, K, xh, n, ld, b.product, M, &one, &zero,
                       b.cublas_ws, b.cublas_ws_bytes, l.stream))
            return false;
        epilogue();
        return true;
    }
    // quantized: slices of rows, a multiple of 128, that fit the slice buffer
    const int64_t slice_rows = std::max<int64_t>(128, static_cast<int64_t>(b.slice_bytes / (2 * K)) / 128 * 128);
    if (static_cast<size_t>(std::min(slice_rows, M)) * K * 2 > b.slice_bytes) return false;
    auto* slice = static_cast<__half*>(b.slice);
    const bool done = with_weight_format(
        W.type, [](auto) { return false; },
        [&](auto tag) {
            using F = typename decltype(tag)::type;
            PlanarView w;
            w.nb = K / F::kBlock;
            w.bits = static_cast<const uint8_t*>(W.data);
            w.rest = w.bits + M * w.nb * F::kBits;
            for (int64_t r0 = 0; r0 < M; r0 += slice_rows) {
                const int rows = static_cast<int>(std::min(slice_rows, M - r0));
                launch(dequant_rows_kernel<F>, dim3(element_ctas(static_cast<int64_t>(rows) * (K / 32), 4096)),
                       dim3(256), 0, l, w, r0, rows, K, slice);
                if (!lt.matmul(slice, rows, K, K, xh, n, ld, b.product + r0, M, &one, &zero, b.cublas_ws,
                               b.cublas_ws_bytes, l.stream))
                    return false;  // (y untouched: the product is scratch)
            }
            return true;
        });
    if (done) epilogue();
    return done;
}

} // namespace phi::cuda
