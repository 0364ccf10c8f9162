#include "model/config.h"

#include <cmath>

#include "core/error.h"

namespace phi {

namespace {

// Sizes, and the widths made of them (heads x head size, 2 x n_ff), stay below
// 2^28: far beyond any Phi model, and sums of a few of them still fit an int.
constexpr int64_t kMaxDim = int64_t{1} << 28;

int get_positive(const gguf::File& f, const std::string& key) {
    const int64_t v = f.get_int(key);
    if (v <= 0 || v > kMaxDim)
        fail(ErrorKind::format, f.path(), ": metadata '", key, "' = ", v, " is out of range [1, ", kMaxDim, "]");
    return static_cast<int>(v);
}

int get_non_negative(const gguf::File& f, const std::string& key) {
    const int64_t v = f.get_int(key);
    if (v < 0 || v > kMaxDim)
        fail(ErrorKind::format, f.path(), ": metadata '", key, "' = ", v, " is out of range [0, ", kMaxDim, "]");
    return static_cast<int>(v);
}

} // namespace

ModelConfig ModelConfig::from_gguf(const gguf::File& f) {
    ModelConfig c;
    c.arch_name = f.get_string("general.architecture");
    if (c.arch_name == "phi2") {
        c.arch = Arch::phi2;
    } else if (c.arch_name == "phi3") {
        c.arch = Arch::phi3;
    } else if (c.arch_name == "phimoe") {
        c.arch = Arch::phimoe;
    } else {
        fail(ErrorKind::unsupported, f.path(), ": unknown architecture '", c.arch_name,
             "' (phicpp runs the phi2, phi3 and phimoe architectures)");
    }
    const std::string a = c.arch_name + ".";
    c.n_embd = get_positive(f, a + "embedding_length");
    c.n_layer = get_positive(f, a + "block_count");
    c.n_head = get_positive(f, a + "attention.head_count");
    c.n_head_kv = f.has(a + "attention.head_count_kv") ? get_positive(f, a + "attention.head_count_kv") : c.n_head;
    c.n_ff = get_positive(f, a + "feed_forward_length");
    c.n_ctx_train = get_positive(f, a + "context_length");
    c.head_dim = f.has(a + "attention.key_length") ? get_positive(f, a + "attention.key_length") : c.n_embd / c.n_head;
    if (f.has(a + "attention.value_length") && get_positive(f, a + "attention.value_length") != c.head_dim)
        fail(ErrorKind::unsupported, f.path(), ": metadata '", a, "attention.value_length' differs from the key "
             "head size ", c.head_dim);
    c.n_rot = f.has(a + "rope.dimension_count") ? get_positive(f, a + "rope.dimension_count") : c.head_dim;
    // (phimoe's norms are LayerNorms; llama.cpp stores their eps under the RMS key)
    c.norm_eps = static_cast<float>(c.arch == Arch::phi2 ? f.get_f64(a + "attention.layer_norm_epsilon")
                                                         : f.get_f64(a + "attention.layer_norm_rms_epsilon"));
    c.rope_base = static_cast<float>(f.opt_f64(a + "rope.freq_base").value_or(10000.0));
    c.sliding_window = f.has(a + "attention.sliding_window") ? get_non_negative(f, a + "attention.sliding_window") : 0;
    c.n_ctx_orig = f.has(a + "rope.scaling.original_context_length")
                       ? get_positive(f, a + "rope.scaling.original_context_length")
                       : c.n_ctx_train;

    // Every block has tensors of its own (six or more): a count beyond the
    // tensor table is a broken header, refused before anything is sized by it
    if (static_cast<size_t>(c.n_layer) > f.tensors().size())
        fail(ErrorKind::format, f.path(), ": metadata '", a, "block_count' = ", c.n_layer, " but the file has only ",
             f.tensors().size(), " tensors");
    if (static_cast<int64_t>(c.n_head) * c.head_dim > kMaxDim)
        fail(ErrorKind::format, f.path(), ": metadata '", a, "attention.head_count' x key_length = ", c.n_head, " x ",
             c.head_dim, " is out of range");
    if (c.n_head % c.n_head_kv != 0)
        fail(ErrorKind::format, f.path(), ": metadata '", a, "attention.head_count' = ", c.n_head,
             " is not a multiple of '", a, "attention.head_count_kv' = ", c.n_head_kv);
    const bool has_key_length = f.has(a + "attention.key_length");
    if (!has_key_length && c.n_embd % c.n_head != 0)
        fail(ErrorKind::format, f.path(), ": metadata '", a, "embedding_length' = ", c.n_embd,
             " is not a multiple of '", a, "attention.head_count' = ", c.n_head, " (and there is no '", a,
             "attention.key_length')");
    if (c.n_rot % 2 != 0 || c.n_rot > c.head_dim)
        fail(ErrorKind::format, f.path(), ": metadata '", a, "rope.dimension_count' = ", c.n_rot,
             " must be even and at most the head size ", c.head_dim, " (",
             has_key_length ? a + "attention.key_length" : a + "embedding_length / " + a + "attention.head_count",
             ")");
    if (!(c.norm_eps > 0) || !std::isfinite(c.norm_eps))
        fail(ErrorKind::format, f.path(), ": metadata '", a,
             c.arch == Arch::phi2 ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon",
             "' must be positive and finite");
    if (!(c.rope_base > 0) || !std::isfinite(c.rope_base))
        fail(ErrorKind::format, f.path(), ": metadata '", a, "rope.freq_base' must be positive and finite");

    // LongRoPE's attention factor: llama.cpp's converter stores it; otherwise
    // derive it as transformers does from the context extension ratio.
    if (auto af = f.opt_f64(a + "rope.scaling.attn_factor")) {
        c.rope_attn_factor = static_cast<float>(*af);
    } else if (f.find_tensor("rope_factors_long.weight") && c.n_ctx_train > c.n_ctx_orig && c.n_ctx_orig > 1) {
        const double scale = static_cast<double>(c.n_ctx_train) / c.n_ctx_orig;
        c.rope_attn_factor = static_cast<float>(std::sqrt(1.0 + std::log(scale) / std::log(static_cast<double>(c.n_ctx_orig))));
    }
    c.rope_short_mscale = c.rope_long_mscale = c.rope_attn_factor;
    if (c.arch == Arch::phimoe) {
        c.n_expert = get_positive(f, a + "expert_count");
        c.n_expert_used = get_positive(f, a + "expert_used_count");
        if (c.n_expert_used != 2 || c.n_expert < 2)
            fail(ErrorKind::unsupported, f.path(), ": phimoe routes each token to 2 experts (SparseMixer); the file "
                 "has '", a, "expert_used_count' = ", c.n_expert_used, " of '", a, "expert_count' = ", c.n_expert);
        // llama.cpp's converter keeps no jitter (its phimoe routes by softmax top-2):
        // such files get the published model's value
        const auto jitter = f.opt_f64("phicpp.phimoe.router_jitter_noise");
        c.router_jitter = static_cast<float>(jitter.value_or(0.01));
        c.router_jitter_default = !jitter.has_value();
        if (!(c.router_jitter >= 0.0f) || !std::isfinite(c.router_jitter))
            fail(ErrorKind::format, f.path(), ": phicpp.phimoe.router_jitter_noise must be >= 0");
        c.rope_long_factors = false;
        if (auto s = f.opt_f64("phicpp.phimoe.rope.short_mscale")) c.rope_short_mscale = static_cast<float>(*s);
        if (auto l = f.opt_f64("phicpp.phimoe.rope.long_mscale")) c.rope_long_mscale = static_cast<float>(*l);
    }
    return c;
}

std::string ModelConfig::shape_keys() const {
    const std::string a = arch_name + ".";
    std::string s;
    auto add = [&](const std::string& key, int v) {
        s += (s.empty() ? "" : ", ") + a + key + " = " + std::to_string(v);
    };
    add("block_count", n_layer);
    add("embedding_length", n_embd);
    add("attention.head_count", n_head);
    add("attention.head_count_kv", n_head_kv);
    add("attention.key_length", head_dim);
    add("feed_forward_length", n_ff);
    add("rope.dimension_count", n_rot);
    if (n_expert > 0) add("expert_count", n_expert);
    return s;
}

} // namespace phi
