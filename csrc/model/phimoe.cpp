// The phimoe family (Phi-3.5-MoE): pre-norm blocks with LayerNorms (with
// biases), separate q/k/v projections with biases, GQA, LongRoPE as
// transformers' Phimoe applies it (model/config.cpp), and a mixture of
// experts in place of the MLP: a router scores the experts, SparseMixer picks
// two per token and weighs them, each expert is a SwiGLU MLP.
//
// Routing and the experts are backend ops: the picks stay in backend memory,
// so a GPU step never waits for the host and decode steps replay as graphs.
#include <string>

#include "core/error.h"
#include "model/forward.h"

namespace phi {

namespace {

void load_phimoe_weights(WeightLoader& ld, const ModelConfig& c, Weights& w) {
    const int E = c.n_embd, qw = c.q_width(), F = c.n_ff, X = c.n_expert;
    load_globals(ld, c, w, true);
    w.layers.resize(c.n_layer);
    for (int i = 0; i < c.n_layer; ++i) {
        LayerWeights& L = w.layers[i];
        const std::string p = "blk." + std::to_string(i) + ".";
        L.attn_norm_w = ld.vector(p + "attn_norm.weight", E);
        L.attn_norm_b = ld.vector(p + "attn_norm.bias", E);
        load_qkv(ld, c, p, L);
        L.wo = ld.matrix(p + "attn_output.weight", qw, E);
        L.bo = ld.opt_vector(p + "attn_output.bias", E);
        L.ffn_norm_w = ld.vector(p + "ffn_norm.weight", E);
        L.ffn_norm_b = ld.vector(p + "ffn_norm.bias", E);
        L.ffn_gate_inp = ld.matrix(p + "ffn_gate_inp.weight", E, X);
        L.exp_gate = ld.matrices(p + "ffn_gate_exps.weight", E, F, X);
        L.exp_up = ld.matrices(p + "ffn_up_exps.weight", E, F, X);
        L.exp_down = ld.matrices(p + "ffn_down_exps.weight", F, E, X);
    }
}

// The experts' part of a block for the last m rows x of the batch: x += the
// two picked experts' outputs of norm(x), weighed (Backend::route_top2 has
// SparseMixer's rule), all in backend memory.
void moe_ffn(const ForwardPass& fp, const LayerWeights& L, float* x, int m) {
    Backend& be = fp.be;
    const ModelConfig& c = fp.c;
    Scratch& s = fp.s;
    const int X = c.n_expert;
    const RowNorm norm{NormKind::layer, L.ffn_norm_w, L.ffn_norm_b, c.norm_eps};
    be.matmul(L.ffn_gate_inp, x, m, s.router, nullptr, norm, Epilogue::store);
    be.route_top2(s.router, m, X, c.router_jitter, s.picks);
    be.experts_swiglu(Experts{L.exp_gate.data(), X}, Experts{L.exp_up.data(), X}, x, m, s.picks, norm, s.expert_h);
    be.experts_down_add(Experts{L.exp_down.data(), X}, s.expert_h, m, s.picks, x);
}

void phimoe_blocks(const ForwardPass& fp) {
    Backend& be = fp.be;
    const ModelConfig& c = fp.c;
    Scratch& s = fp.s;
    const int n = fp.n_tok, E = c.n_embd;
    for (int il = 0; il < c.n_layer; ++il) {
        const LayerWeights& L = fp.w.layers[il];
        const int m = rows_needed(fp, il);  // the rows that go on past attention
        float* x = s.x + static_cast<int64_t>(n - m) * E;
        attention_block(fp, L, il, m, RowNorm{NormKind::layer, L.attn_norm_w, L.attn_norm_b, c.norm_eps});
        if (m == 0) continue;
        be.matmul(L.wo, s.attn, m, x, L.bo, RowNorm{}, Epilogue::add);
        moe_ffn(fp, L, x, m);
    }
}

RowNorm phimoe_output_norm(const ModelConfig& c, const Weights& w) {
    return RowNorm{NormKind::layer, w.out_norm_w, w.out_norm_b, c.norm_eps};
}

} // namespace

// Exact activations: SparseMixer's picks jump where scores cross its window, so
// the f16-rounded activations of the GPU's prefill GEMM moved a tiny F16 model
// 2-6e-3 from transformers (and changed experts at some positions); with
// f32-accurate products it is within 2e-3 (H200, 2026-12-02).
const Architecture kPhimoe{Arch::phimoe, load_phimoe_weights, phimoe_blocks, phimoe_output_norm, true};

} // namespace phi
