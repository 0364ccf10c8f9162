// Hyperparameters of a Phi model, read from GGUF metadata with llama.cpp's
// keys. Architecture differences are fields here, not forks in the kernels.
#pragma once
#include <string>

#include "gguf/gguf.h"

namespace phi {

enum class Arch { phi2, phi3, phimoe };

struct ModelConfig {
    Arch arch = Arch::phi3;
    std::string arch_name;   // general.architecture
    int n_vocab = 0;         // rows of token_embd
    int n_embd = 0;
    int n_layer = 0;
    int n_head = 0;
    int n_head_kv = 0;
    int head_dim = 0;
    int n_ff = 0;
    int n_ctx_train = 0;
    int n_rot = 0;           // rotated dims per head (partial rotary: < head_dim)
    float norm_eps = 1e-5f;  // LayerNorm eps (phi2) or RMSNorm eps (phi3)
    float rope_base = 10000.0f;
    int sliding_window = 0;  // 0: full causal attention
    // LongRoPE (Phi-3 128K): factors chosen by context, cos/sin scaled by attn_factor
    int n_ctx_orig = 0;
    float rope_attn_factor = 1.0f;
    // phimoe: transformers rotates with the short factors at every length and
    // scales cos/sin by short_mscale up to n_ctx_orig, long_mscale past it
    bool rope_long_factors = true;  // whether past n_ctx_orig uses the long factors
    float rope_short_mscale = 1.0f, rope_long_mscale = 1.0f;
    // mixture of experts (phimoe): experts per layer and per token, and the
    // router's jitter (SparseMixer's masks depend on it)
    int n_expert = 0;
    int n_expert_used = 0;
    float router_jitter = 0.0f;
    bool router_jitter_default = false;  // the file had none: the published default

    int q_width() const { return n_head * head_dim; }
    int kv_width() const { return n_head_kv * head_dim; }

    // Reads and checks the hyperparameters; throws phi::Error naming the file
    // and key (format) or the architecture (unsupported).
    static ModelConfig from_gguf(const gguf::File& f);
    // The keys every tensor shape is derived from, with their values ("phi3.block_count = 32, ..."):
    // when a tensor is missing or misshapen, either side may be the one that is wrong.
    std::string shape_keys() const;
};

} // namespace phi
