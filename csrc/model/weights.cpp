#include "model/weights.h"

#include <utility>

#include "quant/quant.h"
#include "core/error.h"

namespace phi {

namespace {
std::string shape_str(const gguf::TensorInfo& t) {
    std::string s = "[";
    for (int i = 0; i < t.n_dims; ++i) s += (i ? ", " : "") + std::to_string(t.ne[i]);
    return s + "]";
}

// A type GGUF allows that phicpp has no arithmetic for (IQ2_XXS, TQ1_0, ...)
// is refused at load, by tensor name, rather than at the first token.
void require_computable(const gguf::File& f, const std::string& name, DType type, bool matmul) {
    if (matmul ? quant::can_matmul(type) : quant::can_dequantize(type)) return;
    std::string known;
    // (the types this use reads: a matrix's, or a row table's, which is only dequantized)
    for (const std::string& t : quant::type_names(matmul ? quant::can_matmul : quant::can_dequantize))
        known += (known.empty() ? "" : ", ") + t;
    fail(ErrorKind::unsupported, f.path(), ": tensor '", name, "' is ", dtype_name(type),
         ", a type phicpp cannot compute with (it reads ", known,
         "); quantize the model's F16 or F32 file to one of those");
}
} // namespace

WeightLoader::WeightLoader(const gguf::File& f, Backend& be, std::vector<void*>& owned,
                           std::function<void(size_t, size_t)> progress)
    : f_(f), be_(be), owned_(owned), progress_(std::move(progress)), total_(f.tensor_bytes()) {}

const gguf::TensorInfo& WeightLoader::lookup(const std::string& name, int n_dims, int64_t ne0, int64_t ne1) {
    const gguf::TensorInfo* t = f_.find_tensor(name);
    if (!t) fail(ErrorKind::format, f_.path(), ": required tensor '", name, "' is missing");
    bool ok = t->ne[0] == ne0 && t->ne[2] == 1 && t->ne[3] == 1 && (n_dims == 1 ? t->ne[1] == 1 : t->ne[1] == ne1);
    if (!ok) {
        fail(ErrorKind::format, f_.path(), ": tensor '", name, "' has shape ", shape_str(*t), ", expected [", ne0,
             n_dims == 2 ? ", " + std::to_string(ne1) : std::string(), "] for this model's hyperparameters");
    }
    return *t;
}

Tensor WeightLoader::hand_over(const Tensor& host, WeightUse use) {
    Tensor w = be_.weight(host, use);
    // a backend copy (repacked, or on a device) leaves the mapped bytes unused:
    // drop them from this process's resident memory
    if (w.data != host.data) f_.release(host.data, host.nbytes());
    done_ += host.nbytes();
    if (progress_) progress_(done_, total_);
    return w;
}

Tensor WeightLoader::matrix(const std::string& name, int64_t ne0, int64_t ne1, WeightUse use) {
    const gguf::TensorInfo& t = lookup(name, 2, ne0, ne1);
    require_computable(f_, name, t.type, true);
    return hand_over(Tensor{t.data, t.type, WeightLayout::rows, ne0, ne1}, use);
}

std::vector<Tensor> WeightLoader::matrices(const std::string& name, int64_t ne0, int64_t ne1, int64_t n) {
    const gguf::TensorInfo* t = f_.find_tensor(name);
    if (!t) fail(ErrorKind::format, f_.path(), ": required tensor '", name, "' is missing");
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != n || t->ne[3] != 1)
        fail(ErrorKind::format, f_.path(), ": tensor '", name, "' has shape ", shape_str(*t), ", expected [", ne0, ", ",
             ne1, ", ", n, "] for this model's hyperparameters");
    require_computable(f_, name, t->type, true);
    std::vector<Tensor> out;
    const size_t bytes = row_bytes(t->type, ne0) * static_cast<size_t>(ne1);
    for (int64_t i = 0; i < n; ++i)
        out.push_back(hand_over(Tensor{static_cast<const uint8_t*>(t->data) + i * bytes, t->type, WeightLayout::rows,
                                       ne0, ne1},
                                WeightUse::sparse));
    return out;
}

Tensor WeightLoader::stacked_matrix(const std::vector<std::string>& names, int64_t ne0,
                                    const std::vector<int64_t>& ne1s) {
    if (!be_.stacks_weights()) return Tensor{};
    std::vector<const gguf::TensorInfo*> parts;
    std::vector<size_t> bytes;  // (whole rows: the stack is the parts' bytes one after the other)
    int64_t rows = 0;
    for (size_t i = 0; i < names.size(); ++i) {
        parts.push_back(&lookup(names[i], 2, ne0, ne1s[i]));
        require_computable(f_, names[i], parts.back()->type, true);
        if (parts.back()->type != parts.front()->type) return Tensor{};
        bytes.push_back(row_bytes(parts[i]->type, ne0) * static_cast<size_t>(ne1s[i]));
        rows += ne1s[i];
    }
    std::vector<uint8_t> host;
    for (size_t i = 0; i < parts.size(); ++i) {
        const auto* p = static_cast<const uint8_t*>(parts[i]->data);
        host.insert(host.end(), p, p + bytes[i]);
    }
    const Tensor w = be_.weight(Tensor{host.data(), parts.front()->type, WeightLayout::rows, ne0, rows}, WeightUse::matmul);
    if (w.data == host.data()) fail(ErrorKind::generic, "a backend that stacks weights must copy them");
    for (size_t i = 0; i < parts.size(); ++i) {
        f_.release(parts[i]->data, bytes[i]);
        done_ += bytes[i];
    }
    if (progress_) progress_(done_, total_);
    return w;
}

const float* WeightLoader::stacked_opt_vector(const std::vector<std::string>& names, const std::vector<int64_t>& ns) {
    std::vector<float> v;
    bool any = false;
    for (size_t i = 0; i < names.size(); ++i) {
        std::vector<float> part = has(names[i]) ? host_vector(names[i], ns[i]) : std::vector<float>();
        any = any || !part.empty();
        part.resize(static_cast<size_t>(ns[i]), 0.0f);
        v.insert(v.end(), part.begin(), part.end());
    }
    return any ? to_backend(v) : nullptr;
}

Tensor WeightLoader::opt_matrix(const std::string& name, int64_t ne0, int64_t ne1) {
    return has(name) ? matrix(name, ne0, ne1) : Tensor{};
}

std::vector<float> WeightLoader::host_vector(const std::string& name, int64_t n) {
    if (!has(name)) return {};
    const gguf::TensorInfo& t = lookup(name, 1, n, 1);
    require_computable(f_, name, t.type, false);
    std::vector<float> v(static_cast<size_t>(n));
    quant::dequantize_row(t.type, t.data, v.data(), n);
    return v;
}

const float* WeightLoader::vector(const std::string& name, int64_t n) {
    const gguf::TensorInfo& t = lookup(name, 1, n, 1);
    if (t.type == DType::F32) {
        const Tensor host{t.data, t.type, WeightLayout::rows, n, 1};
        return static_cast<const float*>(be_.weight(host, WeightUse::rows).data);
    }
    return to_backend(host_vector(name, n));
}

const float* WeightLoader::to_backend(const std::vector<float>& v) {
    void* dst = be_.alloc(sizeof(float) * v.size());
    owned_.push_back(dst);
    be_.copy_to_device(dst, v.data(), sizeof(float) * v.size());
    be_.synchronize();
    return static_cast<const float*>(dst);
}

const float* WeightLoader::opt_vector(const std::string& name, int64_t n) {
    return has(name) ? vector(name, n) : nullptr;
}

void load_globals(WeightLoader& ld, const ModelConfig& c, Weights& w, bool norm_bias) {
    const int E = c.n_embd;
    w.token_embd = ld.matrix("token_embd.weight", E, c.n_vocab, WeightUse::rows);
    w.out_norm_w = ld.vector("output_norm.weight", E);
    if (norm_bias) w.out_norm_b = ld.vector("output_norm.bias", E);
    w.output = ld.has("output.weight") ? ld.matrix("output.weight", E, c.n_vocab) : w.token_embd;  // tied
    w.output_b = ld.opt_vector("output.bias", c.n_vocab);
    w.rope_long = ld.host_vector("rope_factors_long.weight", c.n_rot / 2);
    w.rope_short = ld.host_vector("rope_factors_short.weight", c.n_rot / 2);
}

void load_qkv(WeightLoader& ld, const ModelConfig& c, const std::string& p, LayerWeights& L) {
    const int E = c.n_embd, qw = c.q_width(), kvw = c.kv_width();
    if (ld.has(p + "attn_qkv.weight")) {
        L.wqkv = ld.matrix(p + "attn_qkv.weight", E, qw + 2 * kvw);
        L.bqkv = ld.opt_vector(p + "attn_qkv.bias", qw + 2 * kvw);
        return;
    }
    // separate in the file: one stacked weight where the backend copies weights
    // anyway (one matmul instead of three)
    const std::vector<std::string> names{p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"};
    L.wqkv = ld.stacked_matrix(names, E, {qw, kvw, kvw});
    if (L.fused_qkv()) {
        L.bqkv = ld.stacked_opt_vector({p + "attn_q.bias", p + "attn_k.bias", p + "attn_v.bias"}, {qw, kvw, kvw});
        return;
    }
    L.wq = ld.matrix(p + "attn_q.weight", E, qw);
    L.wk = ld.matrix(p + "attn_k.weight", E, kvw);
    L.wv = ld.matrix(p + "attn_v.weight", E, kvw);
    L.bq = ld.opt_vector(p + "attn_q.bias", qw);
    L.bk = ld.opt_vector(p + "attn_k.bias", kvw);
    L.bv = ld.opt_vector(p + "attn_v.bias", kvw);
}

} // namespace phi
