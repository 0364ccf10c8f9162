#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace phi {

namespace {

// Rotary inverse frequencies as transformers computes them (f32):
// 1 / (factor_i * base^(2i / n_rot)), factor_i from LongRoPE or 1.
std::vector<float> rope_inv_freq(const ModelConfig& c, const std::vector<float>& factors) {
    std::vector<float> f(c.n_rot / 2);
    for (int i = 0; i < c.n_rot / 2; ++i) {
        const float expo = static_cast<float>(2 * i) / static_cast<float>(c.n_rot);
        const float denom = std::pow(c.rope_base, expo) * (factors.empty() ? 1.0f : factors[i]);
        f[i] = 1.0f / denom;
    }
    return f;
}

// Output rows projected at a time: bounds the logits buffer (rows x n_vocab
// floats) when every token's logits are wanted.
constexpr int kLogitRows = 32;

DType parse_kv_type(const std::string& s, const Weights& w) {
    if (s == "f32") return DType::F32;
    if (s == "f16") return DType::F16;
    if (s == "auto") return w.token_embd.type == DType::F32 ? DType::F32 : DType::F16;
    fail(ErrorKind::invalid_arg, "kv_type must be 'f32', 'f16' or 'auto', not '", s, "'");
}

} // namespace

std::unique_ptr<Model> Model::load(const std::string& path, const ModelParams& params) {
    if (params.n_ctx < 0) fail(ErrorKind::invalid_arg, "n_ctx must be >= 0, got ", params.n_ctx);
    if (params.n_batch <= 0) fail(ErrorKind::invalid_arg, "n_batch must be > 0, got ", params.n_batch);
    if (params.n_threads < 0) fail(ErrorKind::invalid_arg, "n_threads must be >= 0, got ", params.n_threads);

    std::unique_ptr<Model> m(new Model());
    m->file_ = gguf::File::open(path);
    const gguf::File& f = *m->file_;
    ModelConfig& c = m->c_;
    c = ModelConfig::from_gguf(f);
    const gguf::TensorInfo* emb = f.find_tensor("token_embd.weight");
    if (!emb) fail(ErrorKind::format, path, ": required tensor 'token_embd.weight' is missing");
    c.n_vocab = static_cast<int>(emb->ne[1]);

    m->be_ = make_backend(BackendOptions{params.device, params.n_threads});
    WeightLoader ld(f, *m->be_, m->owned_);
    if (c.arch == Arch::phi2) {
        load_phi2_weights(ld, c, m->w_);
    } else {
        load_phi3_weights(ld, c, m->w_);
    }
    if (c.n_ff < c.kv_width())
        fail(ErrorKind::unsupported, path, ": feed_forward_length smaller than the key/value width is not supported");

    m->n_ctx_ = params.n_ctx > 0 ? params.n_ctx : std::min(c.n_ctx_train, 4096);
    m->n_batch_ = std::min(params.n_batch, m->n_ctx_);
    m->kv_type_ = parse_kv_type(params.kv_type, m->w_);

    // LongRoPE: long factors when the context reaches past the original
    // training length (as llama.cpp decides), short ones otherwise.
    const bool use_long = m->n_ctx_ > c.n_ctx_orig && !m->w_.rope_long.empty();
    const std::vector<float>& factors = use_long ? m->w_.rope_long : m->w_.rope_short;
    std::vector<float> inv = rope_inv_freq(c, factors);
    Backend& be = *m->be_;
    auto alloc = [&](size_t bytes) {
        void* p = be.alloc(bytes);
        m->owned_.push_back(p);
        return p;
    };
    m->inv_freq_dev_ = static_cast<float*>(alloc(sizeof(float) * std::max<size_t>(1, inv.size())));
    be.copy_to_device(m->inv_freq_dev_, inv.data(), sizeof(float) * inv.size());
    m->rope_ = RopeParams{c.n_rot, m->inv_freq_dev_, c.rope_attn_factor};

    const size_t B = static_cast<size_t>(m->n_batch_);
    const size_t F = sizeof(float);
    Scratch& s = m->s_;
    s.x = static_cast<float*>(alloc(B * c.n_embd * F));
    s.xn = static_cast<float*>(alloc(B * c.n_embd * F));
    s.qkv = static_cast<float*>(alloc(B * (c.q_width() + 2 * c.kv_width()) * F));
    s.attn = static_cast<float*>(alloc(B * c.q_width() * F));
    s.ffn = static_cast<float*>(alloc(B * 2 * c.n_ff * F));
    s.ffn_act = static_cast<float*>(alloc(B * c.n_ff * F));
    s.tmp = static_cast<float*>(alloc(B * c.n_embd * F));
    s.logits = static_cast<float*>(alloc(std::min<size_t>(B, kLogitRows) * c.n_vocab * F));
    m->ids_dev_ = static_cast<int32_t*>(alloc(B * sizeof(int32_t)));

    const size_t kv_row = row_bytes(m->kv_type_, c.kv_width());
    m->kv_.resize(c.n_layer);
    for (KVLayer& l : m->kv_) {
        l.k = alloc(kv_row * m->n_ctx_);
        l.v = alloc(kv_row * m->n_ctx_);
    }
    be.synchronize();
    return m;
}

Model::~Model() {
    if (be_) {
        be_->synchronize();
        for (void* p : owned_) be_->dealloc(p);
    }
}

size_t Model::kv_cache_bytes() const {
    return 2 * row_bytes(kv_type_, c_.kv_width()) * static_cast<size_t>(n_ctx_) * c_.n_layer;
}

void Model::truncate(int n) {
    if (n < 0 || n > n_past_) fail(ErrorKind::invalid_arg, "truncate(", n, "): must be within [0, ", n_past_, "]");
    n_past_ = n;
}

void Model::eval(const int32_t* tokens, int n, float* logits, bool all_logits) {
    if (n <= 0) fail(ErrorKind::invalid_arg, "eval needs at least one token");
    if (static_cast<int64_t>(n_past_) + n > n_ctx_) {
        fail(ErrorKind::context, "context overflow: ", n, " new tokens after ", n_past_, " cached ones exceed n_ctx = ",
             n_ctx_);
    }
    for (int i = 0; i < n; ++i) {
        if (tokens[i] < 0 || tokens[i] >= c_.n_vocab)
            fail(ErrorKind::invalid_arg, "token id ", tokens[i], " at index ", i, " is out of range [0, ", c_.n_vocab, ")");
    }
    const int start = n_past_;
    try {
        for (int b = 0; b < n; b += n_batch_) {
            const int nb = std::min(n_batch_, n - b);
            const bool last = b + nb == n;
            float* out = all_logits ? logits + static_cast<int64_t>(b) * c_.n_vocab : (last ? logits : nullptr);
            forward(tokens + b, nb, out, all_logits);
            n_past_ += nb;
        }
    } catch (...) {
        n_past_ = start;
        throw;
    }
}

void Model::forward(const int32_t* tokens, int n, float* logits_host, bool all_logits) {
    Backend& be = *be_;
    be.copy_to_device(ids_dev_, tokens, sizeof(int32_t) * n);
    be.get_rows(w_.token_embd, ids_dev_, n, s_.x);

    // without logits only the K/V of the last layer matter; with the last token's
    // logits only that row goes through the last layer's attention and MLP
    const int n_out = !logits_host ? 0 : (all_logits ? n : 1);
    ForwardPass fp{be, c_, w_, s_, kv_, kv_type_, rope_, n, n_past_, n_out};
    if (c_.arch == Arch::phi2) {
        phi2_blocks(fp);
    } else {
        phi3_blocks(fp);
    }
    if (!logits_host) return;

    // final norm and output projection only for the rows whose logits are wanted
    const int first = all_logits ? 0 : n - 1;
    if (c_.arch == Arch::phi2) {
        be.layer_norm(s_.x + static_cast<int64_t>(first) * c_.n_embd, w_.out_norm_w, w_.out_norm_b, c_.norm_eps,
                      n - first, c_.n_embd, s_.xn);
    } else {
        be.rms_norm(s_.x + static_cast<int64_t>(first) * c_.n_embd, w_.out_norm_w, c_.norm_eps, n - first, c_.n_embd,
                    s_.xn);
    }
    for (int r = first; r < n; r += kLogitRows) {
        const int rows = std::min(kLogitRows, n - r);
        be.matmul(w_.output, s_.xn + static_cast<int64_t>(r - first) * c_.n_embd, rows, s_.logits, w_.output_b);
        be.copy_to_host(logits_host + static_cast<int64_t>(r - first) * c_.n_vocab, s_.logits,
                        sizeof(float) * rows * c_.n_vocab);
    }
}

} // namespace phi
