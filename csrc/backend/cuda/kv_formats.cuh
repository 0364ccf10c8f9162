// The KV cache's element formats as the attention kernels write and read
// them: f32, f16, and the 32-value blocks of Q8_0 and Q4_0 (llama.cpp's
// -ctk/-ctv q8_0/q4_0), byte for byte the blocks the CPU backend writes
// (quant/legacy.cpp follows ggml's reference quantizers).
//
// A quantized block is written by a whole warp, a value per lane, so the
// block's maximum is one warp reduction; a head is hd / 32 whole blocks
// (the model checks hd % 32 == 0), so a head's slice of a row reads alone.
// Blocks are 34 or 18 bytes, only 2-byte aligned: written a byte per lane
// (Q4_0: a nibble pair per low lane), read by a half-warp, two values a lane.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/common.cuh"

namespace phi::cuda {

enum class KvFormat : uint8_t { f32, f16, q8_0, q4_0 };

__host__ __device__ constexpr bool kv_quantized(KvFormat f) { return f == KvFormat::q8_0 || f == KvFormat::q4_0; }
// bytes of a block of 32 values (quantized formats)
__host__ __device__ constexpr int kv_block_bytes(KvFormat f) { return f == KvFormat::q8_0 ? 34 : 18; }
// bytes of a head's slice of a cache row (quantized formats)
__host__ __device__ constexpr int64_t kv_head_bytes(KvFormat f, int hd) { return int64_t{hd} / 32 * kv_block_bytes(f); }

// Copies of a chunk of quantized rows go through shared memory in pieces of
// g bytes (16, 8 or 4: the largest that divides a cache row; 0 when none does),
// a head's slice rounded out to g on both sides: every row's slice starts the
// same `mis` bytes past a piece boundary. A staged row is kv_stage_row bytes.
__host__ __device__ constexpr int kv_piece(int64_t row_bytes) {
    return row_bytes % 16 == 0 ? 16 : row_bytes % 8 == 0 ? 8 : row_bytes % 4 == 0 ? 4 : 0;
}
__host__ __device__ constexpr int kv_stage_row(KvFormat f, int hd) {
    // pieces of up to 16 bytes over the slice and up to 14 bytes before it (mis is even)
    return kv_quantized(f) ? static_cast<int>((kv_head_bytes(f, hd) + 14 + 15) / 16 * 16) : 0;
}

// float -> int8 as the CPU quantizer's cast gives it (truncation; NaN and
// out-of-range values saturate).
__device__ __forceinline__ int kv_to_i8(float v) {
    return v > -129.0f && v < 128.0f ? static_cast<int>(static_cast<int8_t>(static_cast<int>(v))) : (v > 0 ? 127 : -128);
}

// The warp writes one block at dst from x (this lane's value, lane = its
// index in the block) and returns the value the block now holds for the lane
// (what a read gives back).
template <KvFormat F>
__device__ __forceinline__ float kv_store_block(uint8_t* dst, float x) {
    static_assert(kv_quantized(F), "a block format");
    const int lane = threadIdx.x % kWarp;
    // largest magnitude (NaN ignored, as the CPU's fmax/compare loops do)
    const float amax = warp_max(fmaxf(0.0f, fabsf(x)));
    float d;
    if constexpr (F == KvFormat::q8_0) {
        d = amax / 127;
    } else {  // the value of largest magnitude with its sign, the first one on ties
        const unsigned at = __ballot_sync(0xffffffffu, amax > 0.0f && fabsf(x) == amax);
        const float mx = __shfl_sync(0xffffffffu, x, at ? __ffs(at) - 1 : 0);
        d = (at ? mx : 0.0f) / -8;
    }
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const __half dh = __float2half_rn(d);
    if (lane == 0) *reinterpret_cast<__half*>(dst) = dh;
    const float dq = __half2float(dh);
    if constexpr (F == KvFormat::q8_0) {
        const int q = kv_to_i8(roundf(x * id));
        dst[2 + lane] = static_cast<uint8_t>(q);
        return static_cast<float>(q) * dq;
    } else {
        const int q = static_cast<uint8_t>(min(15, kv_to_i8(x * id + 8.5f)));
        const int hi = __shfl_down_sync(0xffffffffu, q, 16), lo = __shfl_up_sync(0xffffffffu, q, 16);
        if (lane < 16) dst[2 + lane] = static_cast<uint8_t>(q | (hi << 4));
        // the nibble a read finds (q > 15 only for NaN, whose byte then mixes both halves)
        const int b = lane < 16 ? q : static_cast<uint8_t>(lo | (q << 4)) >> 4;
        return static_cast<float>((b & 0xF) - 8) * dq;
    }
}

// Value `lane` of the block at src.
template <KvFormat F>
__device__ __forceinline__ float kv_load_block(const uint8_t* src, int lane) {
    static_assert(kv_quantized(F), "a block format");
    const float d = __half2float(*reinterpret_cast<const __half*>(src));
    if constexpr (F == KvFormat::q8_0) {
        return static_cast<float>(static_cast<int8_t>(src[2 + lane])) * d;
    } else {
        const int b = src[2 + (lane & 15)];
        return static_cast<float>((lane < 16 ? b & 0xF : b >> 4) - 8) * d;
    }
}

// Values 2i and 2i + 1 (i < 16) of the block at src, from one 2-byte load (a
// half-warp reads a block).
template <KvFormat F>
__device__ __forceinline__ float2 kv_load_pair(const uint8_t* src, int i) {
    static_assert(kv_quantized(F), "a block format");
    const float d = __half2float(*reinterpret_cast<const __half*>(src));
    if constexpr (F == KvFormat::q8_0) {
        const uint16_t two = *reinterpret_cast<const uint16_t*>(src + 2 + 2 * i);
        return make_float2(static_cast<float>(static_cast<int8_t>(two & 0xFF)) * d,
                           static_cast<float>(static_cast<int8_t>(two >> 8)) * d);
    } else {  // values 0-15 are the low nibbles of bytes 0-15, values 16-31 their high nibbles
        const int two = *reinterpret_cast<const uint16_t*>(src + 2 + 2 * (i & 7));
        const int sh = i < 8 ? 0 : 4;
        return make_float2(static_cast<float>(((two >> sh) & 0xF) - 8) * d,
                           static_cast<float>(((two >> (8 + sh)) & 0xF) - 8) * d);
    }
}

} // namespace phi::cuda
