// The phi2 family (Phi-1, Phi-1.5, Phi-2): one LayerNorm feeds attention and
// the MLP in parallel; every projection has a bias; GELU (tanh) MLP; partial
// NeoX rotary; optional per-head QK-LayerNorm.
#include "core/error.h"
#include "model/forward.h"

namespace phi {

namespace {

void load_phi2_weights(WeightLoader& ld, const ModelConfig& c, Weights& w) {
    const int E = c.n_embd, qw = c.q_width();
    load_globals(ld, c, w, true);
    w.layers.resize(c.n_layer);
    for (int i = 0; i < c.n_layer; ++i) {
        LayerWeights& L = w.layers[i];
        const std::string p = "blk." + std::to_string(i) + ".";
        L.attn_norm_w = ld.vector(p + "attn_norm.weight", E);
        L.attn_norm_b = ld.vector(p + "attn_norm.bias", E);
        load_qkv(ld, c, p, L);  // older conversions fuse Wqkv, newer ones split it
        if (ld.has(p + "attn_q_norm.weight")) {
            L.q_norm_w = ld.vector(p + "attn_q_norm.weight", c.head_dim);
            L.q_norm_b = ld.opt_vector(p + "attn_q_norm.bias", c.head_dim);
            L.k_norm_w = ld.vector(p + "attn_k_norm.weight", c.head_dim);
            L.k_norm_b = ld.opt_vector(p + "attn_k_norm.bias", c.head_dim);
        }
        L.wo = ld.matrix(p + "attn_output.weight", qw, E);
        L.bo = ld.opt_vector(p + "attn_output.bias", E);
        L.ffn_up = ld.matrix(p + "ffn_up.weight", E, c.n_ff);
        L.ffn_up_b = ld.opt_vector(p + "ffn_up.bias", c.n_ff);
        L.ffn_down = ld.matrix(p + "ffn_down.weight", c.n_ff, E);
        L.ffn_down_b = ld.opt_vector(p + "ffn_down.bias", E);
    }
}

void phi2_blocks(const ForwardPass& fp) {
    Backend& be = fp.be;
    const ModelConfig& c = fp.c;
    Scratch& s = fp.s;
    const int n = fp.n_tok, E = c.n_embd;
    for (int il = 0; il < c.n_layer; ++il) {
        const LayerWeights& L = fp.w.layers[il];
        const int m = rows_needed(fp, il);  // the rows that go on past attention
        float* x = s.x + static_cast<int64_t>(n - m) * E;
        const RowNorm norm{NormKind::layer, L.attn_norm_w, L.attn_norm_b, c.norm_eps};
        attention_block(fp, L, il, m, norm);
        if (m == 0) continue;
        // the MLP reads the same normalized input as attention (parallel block),
        // so its up projection runs before the attention output joins x
        be.matmul(L.ffn_up, x, m, s.ffn, L.ffn_up_b, norm, Epilogue::gelu);
        be.matmul(L.wo, s.attn, m, x, L.bo, RowNorm{}, Epilogue::add);
        be.matmul(L.ffn_down, s.ffn, m, x, L.ffn_down_b, RowNorm{}, Epilogue::add);
    }
}

RowNorm phi2_output_norm(const ModelConfig& c, const Weights& w) {
    return RowNorm{NormKind::layer, w.out_norm_w, w.out_norm_b, c.norm_eps};
}

} // namespace

const Architecture kPhi2{Arch::phi2, load_phi2_weights, phi2_blocks, phi2_output_norm};

} // namespace phi
