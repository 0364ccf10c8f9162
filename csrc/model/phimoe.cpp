// The phimoe family (Phi-3.5-MoE): pre-norm blocks with LayerNorms (with
// biases), separate q/k/v projections with biases, GQA, LongRoPE as
// transformers' Phimoe applies it (model/config.cpp), and a mixture of
// experts in place of the MLP: a router scores the experts, SparseMixer picks
// two per token and weighs them, each expert is a SwiGLU MLP.
//
// Routing runs on the host between the router's matmul and the experts'
// (the picks decide which weights are read): on the CPU backend that costs a
// few copies within host memory; on a GPU each layer waits for its scores,
// and the steps are not recorded as graphs.
#include <cmath>
#include <limits>
#include <vector>

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

struct Pick {
    int expert = 0;
    float weight = 0.0f;
};

// SparseMixer's inference routing (transformers' `sparsemixer`, not training):
// the best expert, weighed by the softmax over the experts whose score is
// within 2 * jitter (relative) of it; then the best of the rest, weighed the
// same way among the rest. Plain softmax top-2 (llama.cpp) differs whenever
// an expert falls outside those windows.
void sparsemixer_top2(const float* s, int n, float jitter, Pick (&out)[2]) {
    const float inf = std::numeric_limits<float>::infinity();
    int first = -1;
    for (int k = 0; k < 2; ++k) {
        int best = -1;
        float m = -inf;
        for (int j = 0; j < n; ++j)
            if (j != first && (best < 0 || s[j] > m)) {
                best = j;
                m = s[j];
            }
        // softmax at `best` over the unmasked: 1 / sum of exp(s_j - m)
        float sum = 0.0f;
        for (int j = 0; j < n; ++j) {
            if (j == first) continue;
            const float factor = std::fmax(std::fabs(s[j]), m);
            const bool masked = (m - s[j]) / factor > 2.0f * jitter;  // (NaN for 0/0: not masked, as torch)
            if (!masked) sum += std::exp(s[j] - m);
        }
        out[k] = Pick{best, 1.0f / sum};
        first = best;
    }
}

// The experts' part of a block for the last m rows x of the batch: x += the
// two picked experts' outputs of norm(x), weighed, summed in expert order as
// transformers does.
void moe_ffn(const ForwardPass& fp, const LayerWeights& L, float* x, int m) {
    Backend& be = fp.be;
    const ModelConfig& c = fp.c;
    Scratch& s = fp.s;
    const int E = c.n_embd, F = c.n_ff, X = c.n_expert;
    const RowNorm norm{NormKind::layer, L.ffn_norm_w, L.ffn_norm_b, c.norm_eps};
    be.matmul(L.ffn_gate_inp, x, m, s.router, nullptr, norm, Epilogue::store);
    std::vector<float> scores(static_cast<size_t>(m) * X), xh(static_cast<size_t>(m) * E);
    be.copy_to_host(scores.data(), s.router, sizeof(float) * scores.size());
    be.copy_to_host(xh.data(), x, sizeof(float) * xh.size());

    std::vector<std::vector<std::pair<int, float>>> rows(X);  // per expert: (row, weight)
    for (int t = 0; t < m; ++t) {
        Pick p[2];
        sparsemixer_top2(&scores[static_cast<size_t>(t) * X], X, c.router_jitter, p);
        for (const Pick& k : p) rows[k.expert].emplace_back(t, k.weight);
    }
    std::vector<float> sum(static_cast<size_t>(m) * E, 0.0f), in, g, u, out;
    for (int e = 0; e < X; ++e) {
        const int k = static_cast<int>(rows[e].size());
        if (k == 0) continue;  // (an expert no token picked is never read)
        in.resize(static_cast<size_t>(k) * E);
        for (int i = 0; i < k; ++i)
            std::copy_n(&xh[static_cast<size_t>(rows[e][i].first) * E], E, &in[static_cast<size_t>(i) * E]);
        be.copy_to_device(s.expert_in, in.data(), sizeof(float) * in.size());
        be.matmul(L.exp_gate[e], s.expert_in, k, s.ffn, nullptr, norm, Epilogue::store);
        be.matmul(L.exp_up[e], s.expert_in, k, s.expert_up, nullptr, norm, Epilogue::store);
        g.resize(static_cast<size_t>(k) * F);
        u.resize(g.size());
        be.copy_to_host(g.data(), s.ffn, sizeof(float) * g.size());
        be.copy_to_host(u.data(), s.expert_up, sizeof(float) * u.size());
        for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];  // SiLU(gate) * up
        be.copy_to_device(s.ffn, g.data(), sizeof(float) * g.size());
        be.matmul(L.exp_down[e], s.ffn, k, s.expert_out, nullptr, RowNorm{}, Epilogue::store);
        out.resize(static_cast<size_t>(k) * E);
        be.copy_to_host(out.data(), s.expert_out, sizeof(float) * out.size());
        for (int i = 0; i < k; ++i) {
            const auto [t, w] = rows[e][i];
            float* dst = &sum[static_cast<size_t>(t) * E];
            const float* o = &out[static_cast<size_t>(i) * E];
            for (int d = 0; d < E; ++d) dst[d] += o[d] * w;
        }
    }
    for (size_t i = 0; i < xh.size(); ++i) xh[i] += sum[i];
    be.copy_to_device(x, xh.data(), sizeof(float) * xh.size());
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

const Architecture kPhimoe{Arch::phimoe, load_phimoe_weights, phimoe_blocks, phimoe_output_norm, false};

} // namespace phi
