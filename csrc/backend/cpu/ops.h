// Row-wise CPU ops (norms, rope, activations, attention). Plain C++ the
// compiler vectorizes for baseline x86-64 is the reference; attention and the
// exp-based activations dispatch to AVX2 versions (ops_avx2.cpp; attention
// to its AVX-512 build, ops_avx512.cpp, on AVX-512 and AMX) when the selected
// ISA allows. The matmul has its own per-ISA kernels (matmul.h).
#pragma once
#include <cstddef>
#include <cstdint>

#include "backend/backend.h"
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/threadpool.h"

namespace phi::cpu {

void layer_norm(const float* x, const float* w, const float* b, float eps, int n_rows, int dim, float* y);
void rms_norm(const float* x, const float* w, float eps, int n_rows, int dim, float* y);
void rope_neox(float* x, int n_tok, int64_t row_stride, int n_heads, int head_dim, int pos0,
               const RopeParams& rope);
void gelu_tanh(float* x, size_t n);
void swiglu(const float* gate_up, int n_rows, int ff, float* out);

// Causal attention over a KV cache of f32, f16, q8_0 or q4_0 rows (slots: as
// KVCache::slots); parallel over (token, head).
void attention(const float* q, int64_t q_stride, const void* k_cache, const void* v_cache, DType cache_type,
               int slots, int n_tok, int pos0, const AttentionParams& p, float* out, ThreadPool& pool);

#if defined(PHICPP_X86)
void attention_avx2(const float* q, int64_t q_stride, const void* k_cache, const void* v_cache, DType cache_type,
                    int slots, int n_tok, int pos0, const AttentionParams& p, float* out, ThreadPool& pool);
void attention_avx512(const float* q, int64_t q_stride, const void* k_cache, const void* v_cache, DType cache_type,
                      int slots, int n_tok, int pos0, const AttentionParams& p, float* out, ThreadPool& pool);
void gelu_tanh_avx2(float* x, size_t n);
void swiglu_avx2(const float* gate_up, int n_rows, int ff, float* out);
void f32_to_f16_avx2(const float* src, uint16_t* dst, size_t n);
#endif

// Dispatching entry points (the plain names above are the scalar reference):
// the AVX2 versions wherever `isa` is not scalar (attention: the AVX-512 one
// from avx512 up).
void attention_auto(const float* q, int64_t q_stride, const void* k_cache, const void* v_cache, DType cache_type,
                    int slots, int n_tok, int pos0, const AttentionParams& p, float* out, ThreadPool& pool, Isa isa);
void gelu_tanh_auto(float* x, size_t n, Isa isa);
void swiglu_auto(const float* gate_up, int n_rows, int ff, float* out, Isa isa);
void f32_to_f16_auto(const float* src, uint16_t* dst, size_t n, Isa isa);  // KV cache rows

} // namespace phi::cpu
