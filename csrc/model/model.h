// A loaded Phi model: the mapped file, its config and weights, a backend and
// a KV cache. eval() appends tokens at position n_past and returns logits.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "gguf/gguf.h"
#include "model/config.h"
#include "model/forward.h"
#include "model/weights.h"

namespace phi {

struct ModelParams {
    int n_ctx = 0;               // 0: the training context, capped at 4096
    int n_batch = 512;           // tokens per forward pass during prefill
    int n_threads = 0;           // 0: all cores
    std::string device = "cpu";  // cpu | cuda | auto
    std::string kv_type = "auto";  // f32 | f16 | q8_0 | q4_0 | auto (f32 for F32 models, else f16)
    std::string isa = "auto";      // CPU kernels (scalar | avx2 | avxvnni | avx512 | amx | auto)
    int n_seq = 1;                 // sequences held at once, n_ctx tokens of cache each
    // Called as weights load: (bytes done, bytes in all). May be empty.
    std::function<void(size_t, size_t)> progress;
};

class Model {
public:
    static std::unique_ptr<Model> load(const std::string& path, const ModelParams& params);
    ~Model();
    Model(const Model&) = delete;
    Model& operator=(const Model&) = delete;

    const ModelConfig& config() const { return c_; }
    const gguf::File& file() const { return *file_; }
    const Backend& backend() const { return *be_; }
    const Architecture& architecture() const { return *arch_; }
    int n_ctx() const { return n_ctx_; }
    int n_past(int seq = 0) const { return static_cast<int>(history_.at(check_seq(seq)).size()); }
    int n_seq() const { return static_cast<int>(history_.size()); }
    int n_vocab() const { return c_.n_vocab; }
    DType kv_type() const { return kv_type_; }
    size_t kv_cache_bytes() const;
    // What the load decided that the user should hear of (one line each).
    const std::vector<std::string>& load_notes() const { return load_notes_; }

    // Evaluates n tokens at positions n_past.. and advances n_past. Writes the
    // logits of the last token (n_vocab floats), or of every token
    // (n * n_vocab) when all_logits, to host memory. Throws (context) when
    // the tokens do not fit and (invalid_arg) for an out-of-range id; on any
    // error the cache is left as it was.
    // seq: which of the n_seq sequences (caches) the tokens continue.
    void eval(const int32_t* tokens, int n, float* logits, bool all_logits, int seq = 0);
    void reset(int seq = 0);
    // Forget everything after the first n cached tokens of seq (n <= n_past).
    void truncate(int n, int seq = 0);
    // Tokens of n_seq different sequences in one forward pass (the rows share
    // the matmuls; each attends to its own cache): first_count tokens of
    // seqs[0] (a prompt chunk, or one token), then one token of each of
    // seqs[1..n_seq). Writes the logits of each sequence's last token (n_seq
    // rows). Each row's arithmetic is what it gets alone, so the batch changes
    // no result, and a prompt fed this way, in any chunks, gives what eval of
    // it token by token gives. On error no sequence advances.
    void batch(const int32_t* seqs, int n_seq, int first_count, const int32_t* tokens, float* logits);

private:
    Model() = default;
    int check_seq(int seq) const;
    // tokens [0, n) of seq at positions past.. in n_batch chunks; logits as eval (null: none)
    void run_chunks(int seq, const int32_t* tokens, int n, int past, const RopeParams& rope, float* logits,
                    bool all_logits);
    void forward(const int32_t* tokens, int n, float* logits_host, int n_out, const std::vector<SeqRows>& seqs,
                 int pos0);
    size_t buffer_bytes() const;
    void check_device_memory(const std::string& path) const;
    void check_host_memory(const std::string& path) const;

    std::unique_ptr<gguf::File> file_;
    ModelConfig c_;
    const Architecture* arch_ = nullptr;
    std::unique_ptr<Backend> be_;
    std::vector<void*> owned_;  // backend allocations to free
    std::vector<std::string> load_notes_;
    Weights w_;
    Scratch s_;
    int32_t* ids_dev_ = nullptr;
    std::vector<std::vector<KVCache>> kv_;  // [seq][layer]
    DType kv_type_ = DType::F16;
    // LongRoPE: the short factors while a sequence fits in the original
    // context, the long ones for all of it once it does not (as transformers
    // decides for a forward pass over the whole sequence); rope_long_ ==
    // rope_short_ without long factors. Crossing the boundary (either way)
    // evaluates the sequence's cached tokens again with the other set: every
    // layer's cached keys and values depend on it, not only the rotation.
    RopeParams rope_short_, rope_long_;
    std::vector<char> long_rope_;                 // per sequence: its cache was made with the long factors
    std::vector<std::vector<int32_t>> history_;  // per sequence: the cached tokens (their count is n_past)
    // A sliding window's ring evicts old rows: per sequence, one past the highest
    // position written since its rows last matched the history. A truncate (or a
    // failed eval) can leave the next query needing rows the ring has reused;
    // keep_ring() then evaluates the history again.
    std::vector<int> written_;
    void keep_ring(int seq);
    // The sequence's cached tokens evaluated again from position 0 with its
    // current rotary (a LongRoPE crossing, a ring that lost rows); on failure
    // the sequence is emptied.
    void reevaluate(int seq);
    const RopeParams& rope_for_length(int seq, int len);
    int n_ctx_ = 0;
    int n_batch_ = 0;
    int kv_rows_ = 0;  // rows of each layer's cache: n_ctx, or a sliding window's ring
};

} // namespace phi
