// The backend seam. The model layer composes these ops and never sees
// intrinsics or CUDA; backends never see the model layer.
//
// All pointers passed to ops live in the backend's memory (host memory for
// the CPU, device memory for CUDA), obtained from alloc() or weight().
// Ops may run asynchronously: results are visible on the host only after
// copy_to_host(), which synchronizes. Activations are row-major f32.
//
// A forward pass is one *step*: begin_step(pos0, n_tok), the ops, end_step().
// Inside a step, positions are the step's: token t of the batch sits at
// position pos0 + t, and the backend keeps pos0 where its kernels read it, so
// a device backend can record a step once and replay it at any position.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.h"

namespace phi {

// How a weight's blocks are ordered in memory: as in the file (rows
// contiguous), or rearranged by a backend at load for its kernels (see
// quant/repack.h). The size in bytes is the same either way.
enum class WeightLayout : uint8_t {
    rows,
    q4_0_x8,  // Q4_0, groups of 8 rows interleaved block by block (CPU)
    planar,   // every block's quant bits in one 16-byte aligned plane, the rest of the block after it (CUDA)
};

// What a weight is used for, which decides the layouts a backend may give it.
enum class WeightUse : uint8_t {
    matmul,  // only ever the W of matmul(): the backend may interleave it
    rows,    // read by rows as well (get_rows, 1-D vectors): keep a layout get_rows reads
    sparse,  // a matmul's W that most steps skip (a MoE expert): a host backend keeps the
             // file's mapping, so that only the experts in use become resident
};

// A 2-D tensor: ne1 rows of ne0 elements of `type`, rows contiguous unless
// `layout` says otherwise.
struct Tensor {
    const void* data = nullptr;
    DType type = DType::F32;
    WeightLayout layout = WeightLayout::rows;
    int64_t ne0 = 0;  // elements per row (the input dimension of a weight)
    int64_t ne1 = 1;  // rows (the output dimension of a weight)
    size_t row_bytes() const { return phi::row_bytes(type, ne0); }
    size_t nbytes() const { return row_bytes() * static_cast<size_t>(ne1); }
};

// Rotary embedding parameters for one model (NeoX layout: the rotated part of
// each head is split in halves, dimension i pairs with i + n_rot/2).
struct RopeParams {
    int n_rot = 0;                    // rotated dimensions per head (even, <= head_dim)
    const float* inv_freq = nullptr;  // n_rot/2 frequencies, backend memory
    float mscale = 1.0f;              // multiplies cos and sin (LongRoPE attention factor)
};

struct AttentionParams {
    int n_head = 0;
    int n_head_kv = 0;
    int head_dim = 0;
    float scale = 1.0f;    // applied to q.k
    int window = 0;        // >0: a query at p sees keys at positions > p - window
    // A step over several sequences (one cache each) issues the attention ops
    // once per sequence: its tokens sit at positions pos0 + pos.., and
    // attention_input takes n_tok of them (0: all of the step's tokens).
    int pos = 0;
    int n_tok = 0;
};

// A layer's KV cache: rows of n_head_kv * head_dim elements of `type`, one
// per position.
struct KVCache {
    void* k = nullptr;
    void* v = nullptr;
    DType type = DType::F16;
    // 0: row p holds position p. > 0 (a sliding-window model on the CPU): a ring
    // of `slots` rows, position p in row p % slots; slots >= window + the
    // largest step, so a step never overwrites a key it still reads
    int slots = 0;
};

// The projections of one step's tokens: row t of q (n_head heads) and of k, v
// (n_head_kv heads) at q + t * q_stride, k + t * kv_stride, v + t * kv_stride.
struct QKVRows {
    float* q = nullptr;
    float* k = nullptr;
    const float* v = nullptr;
    int64_t q_stride = 0;
    int64_t kv_stride = 0;
};

// Per-head LayerNorm of q and k before the rotary (Phi's qk_layernorm);
// q_w == nullptr: none.
struct QKNorm {
    const float *q_w = nullptr, *q_b = nullptr;  // [head_dim]
    const float *k_w = nullptr, *k_b = nullptr;
    float eps = 0.0f;
};

enum class NormKind : uint8_t { none, layer, rms };

// A normalization of every input row of a matmul, applied before the
// product (a block's input norm, fused into the matmul that reads it).
struct RowNorm {
    NormKind kind = NormKind::none;
    const float* w = nullptr;  // [K]
    const float* b = nullptr;  // [K], LayerNorm only; may be null
    float eps = 0.0f;
};

// What a matmul does with its product P = norm(x) . W^T (+ bias).
enum class Epilogue : uint8_t {
    store,   // y = P
    add,     // y += P (joins the residual stream)
    gelu,    // y = gelu_tanh(P)
    swiglu,  // W's rows are gate | up (2 ff): y[:, i] = silu(P[:, i]) * P[:, ff + i], y has ff columns
};

// Mixture of experts: one expert picked for a row, and its weight in the sum.
struct ExpertPick {
    int32_t expert = 0;
    float weight = 0.0f;
};
// n matrices of one shape and type, one per expert (each from weight()).
struct Experts {
    const Tensor* w = nullptr;
    int n = 0;
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;     // "cpu" | "cuda"
    virtual std::string variant() const = 0;  // the CPU's ISA ("avx2"), the GPU's name and architecture

    // ---- memory
    virtual void* alloc(size_t bytes) = 0;  // zero-filled
    virtual void dealloc(void* p) = 0;
    virtual void copy_to_device(void* dst, const void* host_src, size_t bytes) = 0;
    virtual void copy_to_host(void* host_dst, const void* src, size_t bytes) = 0;  // synchronizes
    // A weight from the mapped file, usable by this backend's ops: on the CPU
    // read in place, or copied (and rearranged for faster kernels) into the
    // backend's memory where `use` allows; uploaded once on a device. The
    // backend owns any copy it makes; a result whose data differs from
    // host.data no longer needs the host bytes.
    virtual Tensor weight(const Tensor& host, WeightUse use) = 0;
    // Frees the copy weight() made (nothing when it made none); the tensor is
    // not used again.
    virtual void free_weight(const Tensor& w) = 0;
    // Told before a model's weights: they total weight_bytes, and the model
    // then allocates other_bytes (KV cache, buffers) in this backend's memory.
    // A backend that copies weights into host memory decides here whether the
    // copies fit; nothing by default. Returns what the user should hear of
    // that decision (empty: nothing).
    virtual std::string expect_weights(size_t weight_bytes, size_t other_bytes) { return {}; }
    // Whether the model should stack matrices that read the same input (q, k
    // and v stored apart) into one weight: worth it where every weight is
    // copied anyway (a device: one matmul launch instead of three); the CPU
    // reads the mapped file in place and keeps them as they are.
    virtual bool stacks_weights() const { return false; }
    virtual void synchronize() = 0;
    // Memory free on the device for a model (0: the backend uses host memory
    // and nothing is checked), and the scratch its ops need at most for n_batch
    // rows of up to `width` floats, beyond the model's own buffers.
    virtual size_t device_memory_free() const { return 0; }
    virtual size_t workspace_bytes(int n_batch, int width) const { return 0; }

    // ---- steps
    // Opens a step over n_tok tokens at positions pos0..pos0+n_tok-1.
    // `replayable`: every op of the step reads and writes backend memory only
    // (no copy to the host in between), so a backend may record it.
    virtual void begin_step(int pos0, int n_tok, bool replayable) = 0;
    // Closes it. False: the backend did not run the ops it was given (it only
    // checked them against a recording, which differed) and needs the same
    // step issued again, begin_step included.
    virtual bool end_step() = 0;

    // On: every matmul gives each row of x exactly the arithmetic that row gets
    // alone (no kernel choice that depends on the number of rows), so a
    // sequence decoded beside others gives the tokens it gives alone.
    virtual void set_row_invariant(bool on) = 0;
    // On: matmuls of float weights (F32, F16, BF16) give f32-accurate products
    // whatever the kernel (the CUDA prefill GEMM otherwise meets F16 and BF16
    // weights with the activations rounded to f16, as llama.cpp's cuBLAS path
    // does). For models whose routing turns small differences into other
    // experts (Phi-3.5-MoE); the CPU's float matmuls are f32-accurate anyway.
    virtual void set_exact_activations(bool on) = 0;

    // ---- ops (between begin_step and end_step)
    // out[i] = table row ids[i], converted to f32.
    virtual void get_rows(const Tensor& table, const int32_t* ids, int n, float* out) = 0;
    // y = epilogue(norm(x[n, W.ne0]) . W^T + bias) with y [n, W.ne1] (ff = W.ne1 / 2
    // columns for swiglu). bias may be null.
    virtual void matmul(const Tensor& W, const float* x, int n, float* y, const float* bias, const RowNorm& norm,
                        Epilogue ep) = 0;
    // For the step's tokens (or p.n_tok of them, at pos0 + p.pos..): optional
    // per-head QK-LayerNorm of q and k, rotary on both (in place), then k and v
    // written into the cache rows of their positions.
    virtual void attention_input(const QKVRows& t, const AttentionParams& p, const QKNorm& qk, const RopeParams& rope,
                                 const KVCache& cache) = 0;
    // Causal attention for the n_q queries of step tokens t0.. (query i at
    // position pos0 + p.pos + t0 + i, its row at q + i * q_stride) against the
    // cache rows up to its own. out is [n_q, n_head * head_dim].
    virtual void attention(const float* q, int64_t q_stride, int t0, int n_q, const KVCache& cache,
                           const AttentionParams& p, float* out) = 0;

    // Mixture of experts, two experts a row. The picks stay in backend memory,
    // so a step that routes never waits for the host.
    // picks[2t], picks[2t + 1]: the experts SparseMixer picks for score row t of
    // scores [n, n_expert] (transformers' inference routing: the best expert,
    // weighed by the softmax over the experts within 2 * jitter (relative) of
    // it; then the best of the rest, weighed the same way among the rest),
    // the lower expert index first.
    virtual void route_top2(const float* scores, int n, int n_expert, float jitter, ExpertPick* picks) = 0;
    // h[2t + j] = silu(norm(x[t]) . G_e^T) * (norm(x[t]) . U_e^T) for e = picks[2t + j].expert:
    // x [n, K], h [2n, ff] (G and U: ff rows of K).
    virtual void experts_swiglu(const Experts& gate, const Experts& up, const float* x, int n, const ExpertPick* picks,
                                const RowNorm& norm, float* h) = 0;
    // x[t] += w0 * (h[2t] . D_e0^T) + w1 * (h[2t + 1] . D_e1^T) with (e_j, w_j) = picks[2t + j]:
    // h [2n, ff], x [n, D rows].
    virtual void experts_down_add(const Experts& down, const float* h, int n, const ExpertPick* picks, float* x) = 0;
};

struct BackendOptions {
    std::string device = "cpu";  // "cpu" | "cuda" | "auto"
    int n_threads = 0;           // CPU threads; 0 = all cores
    std::string isa = "auto";    // CPU kernels: scalar | avx2 | avxvnni | avx512 | amx | auto (PHICPP_ISA, else the best)
};

// CPU threads a backend or a tool may be asked for at most (llama.cpp's
// GGML_MAX_N_THREADS): each is a thread of the pool, so a mistyped count must
// not start a million of them.
constexpr int kMaxThreads = 512;
// Fails (invalid_arg) unless 0 <= n_threads <= kMaxThreads.
void check_thread_count(int n_threads);

std::unique_ptr<Backend> make_backend(const BackendOptions& opts);

// Whether a CUDA device can be used by this build on this machine.
bool cuda_available();
// Why there is no CUDA device to run on (empty when there is one).
std::string cuda_unavailable_reason();

} // namespace phi
