// The phi3 family (Phi-3/3.5 mini and medium, Phi-4, Phi-4-mini): pre-norm
// blocks with RMSNorm, fused qkv, fused gate|up with SwiGLU, no biases, GQA,
// partial rotary, LongRoPE factors, optional sliding window, tied output.
#include "core/error.h"
#include "model/forward.h"

namespace phi {

namespace {

void load_phi3_weights(WeightLoader& ld, const ModelConfig& c, Weights& w) {
    const int E = c.n_embd, qw = c.q_width();
    load_globals(ld, c, w, false);
    w.layers.resize(c.n_layer);
    for (int i = 0; i < c.n_layer; ++i) {
        LayerWeights& L = w.layers[i];
        const std::string p = "blk." + std::to_string(i) + ".";
        L.attn_norm_w = ld.vector(p + "attn_norm.weight", E);
        L.ffn_norm_w = ld.vector(p + "ffn_norm.weight", E);
        load_qkv(ld, c, p, L);
        L.wo = ld.matrix(p + "attn_output.weight", qw, E);
        L.bo = ld.opt_vector(p + "attn_output.bias", E);
        L.ffn_up = ld.matrix(p + "ffn_up.weight", E, 2 * c.n_ff);
        L.ffn_down = ld.matrix(p + "ffn_down.weight", c.n_ff, E);
    }
}

void phi3_blocks(const ForwardPass& fp) {
    Backend& be = fp.be;
    const ModelConfig& c = fp.c;
    Scratch& s = fp.s;
    const int n = fp.n_tok, E = c.n_embd;
    for (int il = 0; il < c.n_layer; ++il) {
        const LayerWeights& L = fp.w.layers[il];
        const int m = rows_needed(fp, il);  // the rows that go on past attention
        float* x = s.x + static_cast<int64_t>(n - m) * E;
        attention_block(fp, L, il, m, RowNorm{NormKind::rms, L.attn_norm_w, nullptr, c.norm_eps});
        if (m == 0) continue;
        be.matmul(L.wo, s.attn, m, x, L.bo, RowNorm{}, Epilogue::add);
        be.matmul(L.ffn_up, x, m, s.ffn, nullptr, RowNorm{NormKind::rms, L.ffn_norm_w, nullptr, c.norm_eps},
                  Epilogue::swiglu);
        be.matmul(L.ffn_down, s.ffn, m, x, nullptr, RowNorm{}, Epilogue::add);
    }
}

RowNorm phi3_output_norm(const ModelConfig& c, const Weights& w) {
    return RowNorm{NormKind::rms, w.out_norm_w, nullptr, c.norm_eps};
}

} // namespace

const Architecture kPhi3{Arch::phi3, load_phi3_weights, phi3_blocks, phi3_output_norm};

} // namespace phi
