#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/host_memory.h"

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

// The activation buffers for up to B tokens, carved from one allocation at
// base (256-byte aligned each); with base == nullptr only the size is wanted.
size_t carve_scratch(const ModelConfig& c, size_t B, char* base, Scratch& s) {
    size_t off = 0;
    auto take = [&](size_t floats) {
        float* p = base ? reinterpret_cast<float*>(base + off) : nullptr;
        off += (floats * sizeof(float) + 255) / 256 * 256;
        return p;
    };
    s.x = take(B * c.n_embd);
    s.qkv = take(B * (c.q_width() + 2 * c.kv_width()));
    s.attn = take(B * c.q_width());
    s.ffn = take(B * c.n_ff);
    s.logits = take(std::min<size_t>(B, kLogitRows) * c.n_vocab);
    if (c.n_expert > 0) {
        s.router = take(B * c.n_expert);
        s.picks = reinterpret_cast<ExpertPick*>(take(2 * B * sizeof(ExpertPick) / sizeof(float)));
        s.expert_h = take(2 * B * c.n_ff);
    }
    return off;
}

DType parse_kv_type(const std::string& s, DType embedding_type) {
    if (s == "f32") return DType::F32;
    if (s == "f16") return DType::F16;
    if (s == "q8_0") return DType::Q8_0;
    if (s == "q4_0") return DType::Q4_0;
    if (s == "auto") return embedding_type == DType::F32 ? DType::F32 : DType::F16;
    fail(ErrorKind::invalid_arg, "kv_type must be 'f32', 'f16', 'q8_0', 'q4_0' or 'auto', not '", s, "'");
}

} // namespace

std::unique_ptr<Model> Model::load(const std::string& path, const ModelParams& params) {
    if (params.n_ctx < 0) fail(ErrorKind::invalid_arg, "n_ctx must be >= 0, got ", params.n_ctx);
    if (params.n_batch <= 0) fail(ErrorKind::invalid_arg, "n_batch must be > 0, got ", params.n_batch);
    check_thread_count(params.n_threads);  // (before the file is read; make_backend checks it as well)
    if (params.n_seq < 1 || params.n_seq > 256)
        fail(ErrorKind::invalid_arg, "n_seq must be within [1, 256], got ", params.n_seq);

    std::unique_ptr<Model> m(new Model());
    m->file_ = gguf::File::open(path);
    const gguf::File& f = *m->file_;
    ModelConfig& c = m->c_;
    c = ModelConfig::from_gguf(f);
    m->arch_ = &phi::architecture(c.arch);
    const gguf::TensorInfo* emb = f.find_tensor("token_embd.weight");
    if (!emb) fail(ErrorKind::format, path, ": required tensor 'token_embd.weight' is missing");
    c.n_vocab = static_cast<int>(emb->ne[1]);
    if (c.n_ff < c.kv_width())
        fail(ErrorKind::unsupported, path, ": metadata '", c.arch_name, ".feed_forward_length' = ", c.n_ff,
             ", smaller than the key/value width ", c.kv_width(), ", is not supported");

    m->n_ctx_ = params.n_ctx > 0 ? params.n_ctx : std::min(c.n_ctx_train, 4096);
    m->kv_rows_ = m->n_ctx_;
    m->n_batch_ = std::min(params.n_batch, m->n_ctx_);
    m->kv_type_ = parse_kv_type(params.kv_type, emb->type);
    m->history_.assign(params.n_seq, {});

    m->be_ = make_backend(BackendOptions{params.device, params.n_threads, params.isa});
    m->be_->set_exact_activations(phi::architecture(c.arch).exact_activations);
    if (m->kv_type_ == DType::Q8_0 || m->kv_type_ == DType::Q4_0) {
        // a head's keys are whole 32-element blocks, read one head at a time
        if (c.head_dim % 32 != 0)
            fail(ErrorKind::invalid_arg, "a ", dtype_name(m->kv_type_), " KV cache needs a head size that is a multiple "
                 "of 32; this model's is ", c.head_dim, " (use kv_type f16)");
    }
    // a sliding-window model reads at most window + one step of keys: on the CPU
    // each layer keeps just those, as a ring (the GPU kernels keep every position)
    int slots = 0;
    if (c.sliding_window > 0 && m->be_->name() == "cpu" &&
        static_cast<int64_t>(c.sliding_window) + m->n_batch_ < m->n_ctx_)
        slots = c.sliding_window + m->n_batch_;
    m->kv_rows_ = slots ? slots : m->n_ctx_;
    m->check_device_memory(path);
    if (std::string note = m->be_->expect_weights(f.tensor_bytes(), m->kv_cache_bytes() + m->buffer_bytes());
        !note.empty())
        m->load_notes_.push_back(path + ": " + note);
    WeightLoader ld(f, *m->be_, m->owned_, params.progress);
    try {
        m->arch_->load(ld, c, m->w_);
    } catch (const Error& e) {
        if (e.kind() != ErrorKind::format) throw;
        // a tensor missing or of the wrong shape: its expected shape comes from these keys
        throw Error(ErrorKind::format, std::string(e.what()) + " (" + c.shape_keys() + ")");
    }

    // (after the weights: a file whose metadata claims absurd sizes fails there, as a format error)
    m->check_host_memory(path);
    Backend& be = *m->be_;
    auto alloc = [&](size_t bytes) {
        void* p = be.alloc(bytes);
        m->owned_.push_back(p);
        return p;
    };
    // rotary frequencies: the short (or only) set, and LongRoPE's long one
    auto upload_freqs = [&](const std::vector<float>& factors, float mscale) {
        const std::vector<float> inv = rope_inv_freq(c, factors);
        float* d = static_cast<float*>(alloc(sizeof(float) * std::max<size_t>(1, inv.size())));
        be.copy_to_device(d, inv.data(), sizeof(float) * inv.size());
        return RopeParams{c.n_rot, d, mscale};
    };
    m->rope_short_ = upload_freqs(m->w_.rope_short, c.rope_short_mscale);
    m->rope_long_ = !m->w_.rope_long.empty() && c.rope_long_factors
                        ? upload_freqs(m->w_.rope_long, c.rope_long_mscale)
                        : RopeParams{c.n_rot, m->rope_short_.inv_freq, c.rope_long_mscale};
    m->long_rope_.assign(params.n_seq, 0);
    m->written_.assign(params.n_seq, 0);

    const size_t B = static_cast<size_t>(m->n_batch_);
    carve_scratch(c, B, static_cast<char*>(alloc(carve_scratch(c, B, nullptr, m->s_))), m->s_);
    m->ids_dev_ = static_cast<int32_t*>(alloc(B * sizeof(int32_t)));

    const size_t kv_row = row_bytes(m->kv_type_, c.kv_width());
    m->kv_.assign(params.n_seq, std::vector<KVCache>(c.n_layer));
    for (auto& seq : m->kv_) {
        for (KVCache& l : seq) {
            l.k = alloc(kv_row * m->kv_rows_);
            l.v = alloc(kv_row * m->kv_rows_);
            l.type = m->kv_type_;
            l.slots = slots;
        }
    }
    be.synchronize();
    return m;
}

size_t Model::buffer_bytes() const {
    Scratch sizes;
    return carve_scratch(c_, static_cast<size_t>(n_batch_), nullptr, sizes) +
           be_->workspace_bytes(n_batch_, std::max({c_.n_embd, 2 * c_.n_ff, c_.n_vocab}));
}

// On the host the weights stay mapped from the file (pages the kernel can
// drop), but the KV cache and the buffers must fit in memory: allocations far
// beyond it succeed under overcommit, and the process would be killed without
// a word once a long context wrote them.
void Model::check_host_memory(const std::string& path) const {
    if (be_->device_memory_free() != 0) return;  // a device backend: check_device_memory
    constexpr size_t MiB = size_t{1} << 20;
    const size_t buffers = buffer_bytes(), avail = host_memory_available();
    if (avail > 0 && kv_cache_bytes() + buffers > avail)
        fail(ErrorKind::generic, path, ": the KV cache for n_ctx ", n_ctx_, " needs ", kv_cache_bytes() / MiB,
             " MiB (and the buffers ", buffers / MiB, " MiB) but the host has ", avail / MiB,
             " MiB available; try a smaller -c/--ctx-size or a smaller KV cache type (-ctk q8_0)");
}

// A device backend holds the whole model: say up front when it cannot, with
// the numbers, instead of failing half-way through the upload.
void Model::check_device_memory(const std::string& path) const {
    constexpr size_t MiB = size_t{1} << 20;
    const size_t free = be_->device_memory_free();
    if (free == 0) return;  // host memory: check_host_memory, once the weights are mapped
    const size_t buffers = buffer_bytes();
    const size_t weights = file_->tensor_bytes();
    const size_t need = weights + kv_cache_bytes() + buffers;
    if (need > free) {
        fail(ErrorKind::generic, path, " needs ", need / MiB, " MiB of ", be_->variant(), " memory (weights ",
             weights / MiB, " MiB, KV cache ", kv_cache_bytes() / MiB, " MiB for n_ctx ", n_ctx_, ", buffers ",
             buffers / MiB, " MiB) but only ", free / MiB, " MiB are free; try a smaller -c/--ctx-size, a smaller "
             "quantization, or --device cpu");
    }
}

Model::~Model() {
    if (be_) {
        be_->synchronize();
        for (void* p : owned_) be_->dealloc(p);
    }
}

size_t Model::kv_cache_bytes() const {
    return 2 * row_bytes(kv_type_, c_.kv_width()) * static_cast<size_t>(kv_rows_) * c_.n_layer * history_.size();
}

// The rotary for sequence seq once it holds len tokens; when that changes the
// factor set, its cached tokens are evaluated again with the new one first.
const RopeParams& Model::rope_for_length(int seq, int len) {
    const bool differ = rope_long_.inv_freq != rope_short_.inv_freq || rope_long_.mscale != rope_short_.mscale;
    const bool want = differ && len > c_.n_ctx_orig;
    const RopeParams& rope = want ? rope_long_ : rope_short_;
    if (want == static_cast<bool>(long_rope_[seq])) return rope;
    long_rope_[seq] = want;
    reevaluate(seq);
    return rope;
}

void Model::reevaluate(int seq) {
    std::vector<int32_t>& h = history_[seq];
    written_[seq] = 0;
    try {
        run_chunks(seq, h.data(), static_cast<int>(h.size()), 0, long_rope_[seq] ? rope_long_ : rope_short_, nullptr,
                   false);
    } catch (...) {  // a cache half made again holds nothing usable
        h.clear();
        written_[seq] = 0;
        throw;
    }
}

void Model::run_chunks(int seq, const int32_t* tokens, int n, int past, const RopeParams& rope, float* logits,
                       bool all_logits) {
    for (int b = 0; b < n; b += n_batch_) {
        const int nb = std::min(n_batch_, n - b);
        float* out = !logits ? nullptr
                     : all_logits ? logits + static_cast<int64_t>(b) * c_.n_vocab
                                  : (b + nb == n ? logits : nullptr);
        written_[seq] = std::max(written_[seq], past + b + nb);  // (before: a step that fails may have written)
        forward(tokens + b, nb, out, all_logits ? nb : 1, {SeqRows{&kv_[seq], 0, nb, 0, rope}}, past + b);
    }
}

void Model::reset(int seq) {
    history_.at(check_seq(seq)).clear();
    written_[seq] = 0;
}

void Model::keep_ring(int seq) {
    if (kv_rows_ == n_ctx_) return;  // no ring: every position keeps its row
    // rows hold positions [written - rows, written); the next query (at past) reads
    // [past - window + 1, past]: intact while past >= written - rows + window - 1
    if (n_past(seq) < written_[seq] - kv_rows_ + c_.sliding_window - 1) reevaluate(seq);
}

int Model::check_seq(int seq) const {
    if (seq < 0 || seq >= static_cast<int>(history_.size()))
        fail(ErrorKind::invalid_arg, "sequence ", seq, " is out of range [0, ", history_.size(), ")");
    return seq;
}

void Model::truncate(int n, int seq) {
    std::vector<int32_t>& h = history_.at(check_seq(seq));
    if (n < 0 || n > static_cast<int>(h.size()))
        fail(ErrorKind::invalid_arg, "truncate(", n, "): must be within [0, ", h.size(), "]");
    h.resize(n);
}

void Model::eval(const int32_t* tokens, int n, float* logits, bool all_logits, int seq) {
    const int past = n_past(seq);
    if (n <= 0) fail(ErrorKind::invalid_arg, "eval needs at least one token");
    if (static_cast<int64_t>(past) + n > n_ctx_) {
        fail(ErrorKind::context, "context overflow: ", n, " new tokens after ", past, " cached ones exceed n_ctx = ",
             n_ctx_);
    }
    for (int i = 0; i < n; ++i) {
        if (tokens[i] < 0 || tokens[i] >= c_.n_vocab)
            fail(ErrorKind::invalid_arg, "token id ", tokens[i], " at index ", i, " is out of range [0, ", c_.n_vocab, ")");
    }
    keep_ring(seq);
    const RopeParams rope = rope_for_length(seq, past + n);  // the whole sequence's factor set, as transformers
    run_chunks(seq, tokens, n, past, rope, logits, all_logits);
    history_[seq].insert(history_[seq].end(), tokens, tokens + n);  // (on error the sequence stays as it was)
}

void Model::batch(const int32_t* seqs, int n_seqs, int first_count, const int32_t* tokens, float* logits) {
    if (n_seqs <= 0) fail(ErrorKind::invalid_arg, "a batch needs at least one sequence");
    if (first_count <= 0) fail(ErrorKind::invalid_arg, "a batch's first sequence needs at least one token");
    const int n = first_count + n_seqs - 1;
    if (n > n_batch_) fail(ErrorKind::invalid_arg, "a batch of ", n, " tokens exceeds n_batch = ", n_batch_);
    std::vector<SeqRows> rows(n_seqs);
    std::vector<char> seen(history_.size(), 0);
    for (int i = 0, row = 0; i < n_seqs; ++i) {
        const int q = check_seq(seqs[i]);
        if (seen[q]) fail(ErrorKind::invalid_arg, "sequence ", q, " appears twice in one batch");
        seen[q] = 1;
        const int count = i == 0 ? first_count : 1;
        if (n_past(q) + count > n_ctx_)
            fail(ErrorKind::context, "context overflow: sequence ", q, " holds ", n_past(q), " tokens, ", count,
                 " more exceed n_ctx = ", n_ctx_);
        rows[i] = SeqRows{&kv_[q], row, count, n_past(q), RopeParams{}};
        row += count;
    }
    for (int i = 0; i < n; ++i) {
        if (tokens[i] < 0 || tokens[i] >= c_.n_vocab)
            fail(ErrorKind::invalid_arg, "token id ", tokens[i], " at index ", i, " is out of range [0, ", c_.n_vocab, ")");
    }
    for (int i = 0; i < n_seqs; ++i) {
        keep_ring(seqs[i]);  // (as eval would, before the batch's arithmetic)
        written_[seqs[i]] = std::max(written_[seqs[i]], rows[i].pos + rows[i].n);  // (before: it may fail half-way)
    }
    // the rows with logits (each sequence's last) are the batch's last n_seqs
    be_->set_row_invariant(true);
    try {
        for (int i = 0; i < n_seqs; ++i) rows[i].rope = rope_for_length(seqs[i], rows[i].pos + rows[i].n);
        forward(tokens, n, logits, n_seqs, rows, 0);
    } catch (...) {
        be_->set_row_invariant(false);
        throw;
    }
    be_->set_row_invariant(false);
    for (int i = 0; i < n_seqs; ++i)
        history_[seqs[i]].insert(history_[seqs[i]].end(), tokens + rows[i].row0, tokens + rows[i].row0 + rows[i].n);
}

void Model::forward(const int32_t* tokens, int n, float* logits_host, int n_out, const std::vector<SeqRows>& seqs,
                    int pos0) {
    Backend& be = *be_;
    be.copy_to_device(ids_dev_, tokens, sizeof(int32_t) * n);

    // the last n_out rows get logits: only they go through the last layer's
    // attention and MLP (without logits only the K/V of the last layer matter)
    if (!logits_host) n_out = 0;
    const int first = n - n_out;  // first row with logits
    const RowNorm out_norm = arch_->output_norm(c_, w_);
    auto project = [&](int r, int rows) {
        be.matmul(w_.output, s_.x + static_cast<int64_t>(r) * c_.n_embd, rows, s_.logits, w_.output_b, out_norm,
                  Epilogue::store);
    };
    // The logits of one output pass are copied out after the step, so such a
    // step never leaves the backend and may be recorded and replayed.
    // (a batch of several sequences is not recorded: its positions change every step)
    const bool one_pass = n_out <= kLogitRows;
    const ForwardPass fp{be, c_, w_, s_, seqs, n, n_out};
    do {
        be.begin_step(pos0, n, one_pass && seqs.size() == 1);
        be.get_rows(w_.token_embd, ids_dev_, n, s_.x);
        arch_->blocks(fp);
        if (n_out > 0 && one_pass) project(first, n_out);
    } while (!be.end_step());
    if (n_out == 0) return;
    if (one_pass) {
        be.copy_to_host(logits_host, s_.logits, sizeof(float) * n_out * c_.n_vocab);
        return;
    }
    // every token's logits: the output projection a slice of rows at a time
    for (int r = first; r < n; r += kLogitRows) {
        const int rows = std::min(kLogitRows, n - r);
        be.begin_step(pos0, n, false);
        project(r, rows);
        be.end_step();
        be.copy_to_host(logits_host + static_cast<int64_t>(r - first) * c_.n_vocab, s_.logits,
                        sizeof(float) * rows * c_.n_vocab);
    }
}

} // namespace phi
