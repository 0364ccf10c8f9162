// Model weights: tensors found by llama.cpp name, shape-checked against the
// config at load so a wrong file fails there, not mid-forward.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "gguf/gguf.h"
#include "model/config.h"

namespace phi {

struct LayerWeights {
    const float* attn_norm_w = nullptr;  // [n_embd] LayerNorm (phi2) or RMSNorm (phi3)
    const float* attn_norm_b = nullptr;  // [n_embd] phi2 only
    const float* ffn_norm_w = nullptr;   // [n_embd] phi3 only (phi2 feeds one norm to both)
    Tensor wqkv;                          // [n_embd -> q + 2 kv] fused, or the three below
    const float* bqkv = nullptr;
    Tensor wq, wk, wv;                    // [n_embd -> q], [n_embd -> kv], [n_embd -> kv]
    const float *bq = nullptr, *bk = nullptr, *bv = nullptr;
    const float *q_norm_w = nullptr, *q_norm_b = nullptr;  // [head_dim] per-head QK-LayerNorm
    const float *k_norm_w = nullptr, *k_norm_b = nullptr;
    Tensor wo;                            // [q -> n_embd]
    const float* bo = nullptr;
    Tensor ffn_up;                        // [n_embd -> n_ff] (phi2) or [n_embd -> 2 n_ff] gate|up (phi3)
    const float* ffn_up_b = nullptr;
    Tensor ffn_down;                      // [n_ff -> n_embd]
    const float* ffn_down_b = nullptr;
    // mixture of experts (phimoe): the norm's bias, the router [n_embd -> n_expert],
    // and each expert's gate and up [n_embd -> n_ff] and down [n_ff -> n_embd]
    const float* ffn_norm_b = nullptr;
    Tensor ffn_gate_inp;
    std::vector<Tensor> exp_gate, exp_up, exp_down;

    bool fused_qkv() const { return wqkv.data != nullptr; }
    bool qk_norm() const { return q_norm_w != nullptr; }
};

struct Weights {
    Tensor token_embd;                   // [n_embd x n_vocab]
    const float* out_norm_w = nullptr;   // [n_embd]
    const float* out_norm_b = nullptr;
    Tensor output;                        // [n_embd -> n_vocab]; token_embd when tied
    const float* output_b = nullptr;
    std::vector<float> rope_long, rope_short;  // [n_rot/2] LongRoPE factors (host), empty if none
    std::vector<LayerWeights> layers;
};

// Hands tensors of the file to the backend, checking names and shapes.
class WeightLoader {
public:
    // progress (may be empty) is told (bytes loaded, bytes of all tensors) after each matrix.
    WeightLoader(const gguf::File& f, Backend& be, std::vector<void*>& owned,
                 std::function<void(size_t, size_t)> progress = {});

    bool has(const std::string& name) const { return f_.find_tensor(name) != nullptr; }
    // A 2-D weight of ne0 inputs and ne1 outputs; throws if absent or misshapen.
    // `use`: WeightUse::rows for tables also read by rows (token embeddings).
    Tensor matrix(const std::string& name, int64_t ne0, int64_t ne1, WeightUse use = WeightUse::matmul);
    Tensor opt_matrix(const std::string& name, int64_t ne0, int64_t ne1);  // data == nullptr if absent
    // Matrices of one input width ne0 and one type stacked by rows into one
    // weight (outputs in the order given), where the backend asks for it
    // (Backend::stacks_weights) and the types agree; data == nullptr otherwise.
    Tensor stacked_matrix(const std::vector<std::string>& names, int64_t ne0, const std::vector<int64_t>& ne1s);
    // Their vectors (biases) stacked the same way, zeros for an absent one;
    // nullptr when all are absent.
    const float* stacked_opt_vector(const std::vector<std::string>& names, const std::vector<int64_t>& ns);
    // The n matrices [ne0 inputs, ne1 outputs] of a 3-D tensor (experts stacked
    // as llama.cpp writes them), each handed to the backend on its own as a
    // sparse weight (the CPU reads them where the file is mapped).
    std::vector<Tensor> matrices(const std::string& name, int64_t ne0, int64_t ne1, int64_t n);
    // A 1-D vector as f32 in backend memory (converted when stored otherwise).
    const float* vector(const std::string& name, int64_t n);
    const float* opt_vector(const std::string& name, int64_t n);  // nullptr if absent
    std::vector<float> host_vector(const std::string& name, int64_t n);  // host copy, empty if absent

private:
    const gguf::TensorInfo& lookup(const std::string& name, int n_dims, int64_t ne0, int64_t ne1);
    // host (a view of the mapped file) to the backend; counts it for progress
    Tensor hand_over(const Tensor& host, WeightUse use);
    const float* to_backend(const std::vector<float>& v);  // f32 values into backend memory

    const gguf::File& f_;
    Backend& be_;
    std::vector<void*>& owned_;
    std::function<void(size_t, size_t)> progress_;
    size_t total_ = 0, done_ = 0;
};

// What every family has outside its blocks: token embeddings, the output norm
// (with a bias where `norm_bias`), the output projection (token_embd when tied)
// with its optional bias, and LongRoPE's factors when the file has them.
void load_globals(WeightLoader& ld, const ModelConfig& c, Weights& w, bool norm_bias);

// q, k, v projections of layer prefix p ("blk.N."): one fused attn_qkv or
// three separate tensors, each with an optional bias.
void load_qkv(WeightLoader& ld, const ModelConfig& c, const std::string& p, LayerWeights& L);

} // namespace phi
