#include "model/forward.h"

#include <cmath>

namespace phi {

void attention_block(const ForwardPass& fp, const LayerWeights& L, int il, int n_q) {
    Backend& be = fp.be;
    const ModelConfig& c = fp.c;
    Scratch& s = fp.s;
    const int n = fp.n_tok;
    const int qw = c.q_width(), kvw = c.kv_width();

    // q, k, v as strided views of s.qkv: one fused row per token, or three
    // separate projections laid out as contiguous blocks [n,q] [n,kv] [n,kv].
    float *q, *k, *v;
    int64_t q_stride, kv_stride;
    if (L.fused_qkv()) {
        be.matmul(L.wqkv, s.xn, n, s.qkv, L.bqkv);
        q = s.qkv;
        k = q + qw;
        v = k + kvw;
        q_stride = kv_stride = qw + 2 * kvw;
    } else {
        q = s.qkv;
        k = q + static_cast<int64_t>(n) * qw;
        v = k + static_cast<int64_t>(n) * kvw;
        be.matmul(L.wq, s.xn, n, q, L.bq);
        be.matmul(L.wk, s.xn, n, k, L.bk);
        be.matmul(L.wv, s.xn, n, v, L.bv);
        q_stride = qw;
        kv_stride = kvw;
    }
    if (L.qk_norm()) {
        // per-head LayerNorm needs contiguous heads: unpack a fused row first
        if (L.fused_qkv()) {
            float* qc = s.attn;  // [n, q]: free until attention writes it
            float* kc = s.ffn;   // [n, kv]: free until the MLP runs (n_ff >= kv width, checked at load)
            be.copy_rows(qc, qw, q, q_stride, n, qw);
            be.copy_rows(kc, kvw, k, kv_stride, n, kvw);
            be.layer_norm(qc, L.q_norm_w, L.q_norm_b, c.norm_eps, n * c.n_head, c.head_dim, qc);
            be.layer_norm(kc, L.k_norm_w, L.k_norm_b, c.norm_eps, n * c.n_head_kv, c.head_dim, kc);
            be.copy_rows(q, q_stride, qc, qw, n, qw);
            be.copy_rows(k, kv_stride, kc, kvw, n, kvw);
        } else {
            be.layer_norm(q, L.q_norm_w, L.q_norm_b, c.norm_eps, n * c.n_head, c.head_dim, q);
            be.layer_norm(k, L.k_norm_w, L.k_norm_b, c.norm_eps, n * c.n_head_kv, c.head_dim, k);
        }
    }
    be.rope_neox(q, n, q_stride, c.n_head, c.head_dim, fp.pos0, fp.rope);
    be.rope_neox(k, n, kv_stride, c.n_head_kv, c.head_dim, fp.pos0, fp.rope);

    const KVLayer& cache = fp.kv[il];
    be.kv_store(cache.k, fp.kv_type, kvw, k, kv_stride, fp.pos0, n);
    be.kv_store(cache.v, fp.kv_type, kvw, v, kv_stride, fp.pos0, n);

    if (n_q == 0) return;
    AttentionParams ap;
    ap.n_head = c.n_head;
    ap.n_head_kv = c.n_head_kv;
    ap.head_dim = c.head_dim;
    ap.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    ap.window = c.sliding_window;
    const int skip = n - n_q;
    be.attention(q + static_cast<int64_t>(skip) * q_stride, q_stride, cache.k, cache.v, fp.kv_type, n_q,
                 fp.pos0 + skip, ap, s.attn);
}

} // namespace phi
