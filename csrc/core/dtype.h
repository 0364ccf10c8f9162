// Tensor element types. The ids are GGML's (they are what GGUF stores), so a
// DType read from a file needs no translation.
#pragma once
#include <cstddef>
#include <cstdint>

namespace phi {

enum class DType : uint32_t {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3,
    Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20,
    IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
    I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
    TQ1_0 = 34, TQ2_0 = 35,
};

struct DTypeTraits {
    const char* name;    // as llama.cpp prints it ("q4_K", "f16"); nullptr: unknown id
    int64_t block_size;  // elements per block (1 for plain types)
    size_t type_size;    // bytes per block
};

// Traits for a GGML type id; name == nullptr for ids GGML does not define.
const DTypeTraits& dtype_traits(uint32_t id);
inline const DTypeTraits& dtype_traits(DType t) { return dtype_traits(static_cast<uint32_t>(t)); }
inline const char* dtype_name(DType t) { const char* n = dtype_traits(t).name; return n ? n : "unknown"; }

// Bytes of a row of n elements; n must be a multiple of the block size.
inline size_t row_bytes(DType t, int64_t n) {
    const DTypeTraits& tr = dtype_traits(t);
    return static_cast<size_t>(n / tr.block_size) * tr.type_size;
}

// fp16 and bf16 <-> fp32, exact and portable (no F16C needed).
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);  // round to nearest even, as numpy
inline float bf16_to_fp32(uint16_t h) {
    uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}
uint16_t fp32_to_bf16(float f);  // round to nearest even, NaN kept quiet

} // namespace phi
