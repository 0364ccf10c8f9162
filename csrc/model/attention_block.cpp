#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/forward.h"

namespace phi {

const Architecture& architecture(Arch arch) {
    for (const Architecture* a : {&kPhi2, &kPhi3, &kPhimoe})
        if (a->arch == arch) return *a;
    fail(ErrorKind::unsupported, "no architecture file for this model");
}

void attention_block(const ForwardPass& fp, const LayerWeights& L, int il, int n_q, const RowNorm& norm) {
    Backend& be = fp.be;
    const ModelConfig& c = fp.c;
    Scratch& s = fp.s;
    const int n = fp.n_tok;
    const int qw = c.q_width(), kvw = c.kv_width();

    // q, k, v as strided views of s.qkv: one fused row per token, or three
    // separate projections laid out as contiguous blocks [n,q] [n,kv] [n,kv].
    QKVRows t;
    if (L.fused_qkv()) {
        be.matmul(L.wqkv, s.x, n, s.qkv, L.bqkv, norm, Epilogue::store);
        t = QKVRows{s.qkv, s.qkv + qw, s.qkv + qw + kvw, qw + 2 * kvw, qw + 2 * kvw};
    } else {
        float* q = s.qkv;
        float* k = q + static_cast<int64_t>(n) * qw;
        float* v = k + static_cast<int64_t>(n) * kvw;
        be.matmul(L.wq, s.x, n, q, L.bq, norm, Epilogue::store);
        be.matmul(L.wk, s.x, n, k, L.bk, norm, Epilogue::store);
        be.matmul(L.wv, s.x, n, v, L.bv, norm, Epilogue::store);
        t = QKVRows{q, k, v, qw, kvw};
    }
    AttentionParams ap;
    ap.n_head = c.n_head;
    ap.n_head_kv = c.n_head_kv;
    ap.head_dim = c.head_dim;
    ap.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    ap.window = c.sliding_window;
    QKNorm qk;
    if (L.qk_norm()) qk = QKNorm{L.q_norm_w, L.q_norm_b, L.k_norm_w, L.k_norm_b, c.norm_eps};
    if (fp.seqs.size() == 1) {
        const KVCache& cache = (*fp.seqs[0].kv)[il];
        ap.pos = fp.seqs[0].pos;
        be.attention_input(t, ap, qk, fp.seqs[0].rope, cache);
        if (n_q == 0) return;
        const int skip = n - n_q;
        be.attention(t.q + static_cast<int64_t>(skip) * t.q_stride, t.q_stride, skip, n_q, cache, ap, s.attn);
        return;
    }
    // several sequences: each one's rows against its own cache, at its own
    // positions; attention for those of its rows among the batch's last n_q
    const int first_out = n - n_q;
    for (const SeqRows& q : fp.seqs) {
        const KVCache& cache = (*q.kv)[il];
        ap.pos = q.pos;
        ap.n_tok = q.n;
        const QKVRows tq{t.q + static_cast<int64_t>(q.row0) * t.q_stride, t.k + static_cast<int64_t>(q.row0) * t.kv_stride,
                         t.v + static_cast<int64_t>(q.row0) * t.kv_stride, t.q_stride, t.kv_stride};
        be.attention_input(tq, ap, qk, q.rope, cache);
        const int from = std::max(q.row0, first_out), to = q.row0 + q.n;
        if (from >= to) continue;
        be.attention(tq.q + static_cast<int64_t>(from - q.row0) * tq.q_stride, tq.q_stride, from - q.row0, to - from,
                     cache, ap, s.attn + static_cast<int64_t>(from - first_out) * qw);
    }
}

} // namespace phi
