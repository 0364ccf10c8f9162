#include "model/config.h"

#include <cmath>

#include "core/error.h"

namespace phi {

namespace {

int get_positive(const gguf::File& f, const std::string& key) {
    const int64_t v = f.get_int(key);
    if (v <= 0 || v > (1 << 30)) fail(ErrorKind::format, f.path(), ": metadata '", key, "' = ", v, " is out of range");
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
        fail(ErrorKind::unsupported, f.path(), ": attention key and value head sizes differ");
    c.n_rot = f.has(a + "rope.dimension_count") ? get_positive(f, a + "rope.dimension_count") : c.head_dim;
    // (phimoe's norms are LayerNorms; llama.cpp stores their eps under the RMS key)
    c.norm_eps = static_cast<float>(c.arch == Arch::phi2 ? f.get_f64(a + "attention.layer_norm_epsilon")
                                                         : f.get_f64(a + "attention.layer_norm_rms_epsilon"));
    c.rope_base = static_cast<float>(f.opt_f64(a + "rope.freq_base").value_or(10000.0));
    c.sliding_window = static_cast<int>(f.opt_int(a + "attention.sliding_window").value_or(0));
    c.n_ctx_orig = static_cast<int>(f.opt_int(a + "rope.scaling.original_context_length").value_or(c.n_ctx_train));

    if (c.n_head % c.n_head_kv != 0)
        fail(ErrorKind::format, f.path(), ": head_count ", c.n_head, " is not a multiple of head_count_kv ", c.n_head_kv);
    if (c.n_rot % 2 != 0 || c.n_rot > c.head_dim)
        fail(ErrorKind::format, f.path(), ": rope.dimension_count ", c.n_rot, " must be even and at most the head size ",
             c.head_dim);
    if (c.sliding_window < 0) fail(ErrorKind::format, f.path(), ": attention.sliding_window is negative");
    if (c.norm_eps <= 0 || !std::isfinite(c.norm_eps)) fail(ErrorKind::format, f.path(), ": norm epsilon must be positive");

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
                 "has expert_used_count ", c.n_expert_used, " of expert_count ", c.n_expert);
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

} // namespace phi
