// Type dispatch for the reference (de)quantizers and dot products.
#include "quant/quant.h"

#include "core/error.h"
#include "quant/formats.h"

namespace phi::quant {

namespace {

void quantize_f32(const float* x, void* dst, int64_t n) { __builtin_memcpy(dst, x, n * sizeof(float)); }
void dequantize_f32(const void* src, float* dst, int64_t n) { __builtin_memcpy(dst, src, n * sizeof(float)); }
void quantize_f16(const float* x, void* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = fp32_to_fp16(x[i]);
}
void dequantize_f16(const void* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(static_cast<const uint16_t*>(src)[i]);
}
void quantize_bf16(const float* x, void* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = fp32_to_bf16(x[i]);
}
void dequantize_bf16(const void* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(static_cast<const uint16_t*>(src)[i]);
}

// Float weights meet f32 activations; the dot is a plain f32 one in double
// (this path is only the reference for tests, never the hot path).
template <DequantizeFn deq>
float dot_float(const void* w, const void* x, int64_t n) {
    double acc = 0;
    float buf[256];
    for (int64_t i = 0; i < n; i += 256) {
        const int64_t m = n - i < 256 ? n - i : 256;
        const int64_t es = deq == dequantize_f32 ? 4 : 2;
        deq(static_cast<const char*>(w) + i * es, buf, m);
        for (int64_t j = 0; j < m; ++j) acc += static_cast<double>(buf[j]) * static_cast<const float*>(x)[i + j];
    }
    return static_cast<float>(acc);
}

struct Registry {
    FormatOps ops[40];
    Registry() {
        ops[static_cast<int>(DType::F32)] = {quantize_f32, dequantize_f32, dot_float<dequantize_f32>, DType::F32};
        ops[static_cast<int>(DType::F16)] = {quantize_f16, dequantize_f16, dot_float<dequantize_f16>, DType::F32};
        ops[static_cast<int>(DType::BF16)] = {quantize_bf16, dequantize_bf16, dot_float<dequantize_bf16>, DType::F32};
        register_legacy_formats(ops);
        register_kquant_formats(ops);
        register_iq4_formats(ops);
    }
};

const FormatOps& ops_of(DType t) {
    static const Registry registry;
    static const FormatOps none;
    const uint32_t id = static_cast<uint32_t>(t);
    return id < 40 ? registry.ops[id] : none;
}

const FormatOps& require(DType t, bool need_quantize) {
    const FormatOps& o = ops_of(t);
    if (!o.dequantize || (need_quantize && !o.quantize))
        fail(ErrorKind::unsupported, need_quantize ? "cannot quantize to " : "no kernels for tensor type ", dtype_name(t));
    return o;
}

} // namespace

DType activation_type(DType w) { return require(w, false).act; }
bool can_quantize(DType t) { return ops_of(t).quantize != nullptr; }
bool can_dequantize(DType t) { return ops_of(t).dequantize != nullptr; }
bool can_matmul(DType t) { return ops_of(t).dot != nullptr; }

std::vector<std::string> type_names(bool (*has)(DType)) {
    std::vector<std::string> out;
    for (uint32_t id = 0; id < 40; ++id)
        if (dtype_traits(id).name && has(static_cast<DType>(id))) out.emplace_back(dtype_traits(id).name);
    return out;
}

void check_row_length(DType t, int64_t n) {
    const DTypeTraits& tr = dtype_traits(t);
    if (!tr.name) fail(ErrorKind::unsupported, "unknown tensor type id ", static_cast<uint32_t>(t));
    if (n <= 0 || n % tr.block_size != 0)
        fail(ErrorKind::invalid_arg, "row length ", n, " is not a positive multiple of the ", tr.name,
             " block size ", tr.block_size);
}

void quantize_row(DType t, const float* x, void* dst, int64_t n) { require(t, true).quantize(x, dst, n); }
void dequantize_row(DType t, const void* src, float* dst, int64_t n) { require(t, false).dequantize(src, dst, n); }
float vec_dot(DType w, const void* wrow, const void* xrow, int64_t n) {
    const FormatOps& o = require(w, false);
    if (!o.dot) fail(ErrorKind::unsupported, dtype_name(w), " is an activation format, not a weight type");
    return o.dot(wrow, xrow, n);
}

} // namespace phi::quant
