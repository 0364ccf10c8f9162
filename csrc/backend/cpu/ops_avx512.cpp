// Attention compiled for AVX-512 (attention_x86_impl.h): the 256-bit code of
// the AVX2 build with AVX-512VL's 32 vector registers, so a block of 8 queries
// shares each key and value row (4 with AVX2's 16).
#include "backend/cpu/ops.h"

#if defined(PHICPP_X86)
#include "backend/cpu/attention_x86_impl.h"

namespace phi::cpu {

void attention_avx512(const float* q, int64_t q_stride, const void* k_cache, const void* v_cache, DType cache_type,
                      int slots, int n_tok, int pos0, const AttentionParams& p, float* out, ThreadPool& pool) {
    attention_x86<8, 32>(q, q_stride, k_cache, v_cache, cache_type, slots, n_tok, pos0, p, out, pool);
}

} // namespace phi::cpu
#endif
