// The backend seam. The model layer composes these ops and never sees
// intrinsics or CUDA; backends never see the model layer.
//
// All pointers passed to ops live in the backend's memory (host memory for
// the CPU, device memory for CUDA), obtained from alloc() or weight().
// Ops may run asynchronously: results are visible on the host only after
// copy_to_host(), which synchronizes. Activations are row-major f32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.h"

namespace phi {

// How a weight's blocks are ordered in memory: as in the file (rows
// contiguous), or interleaved by a backend at load for its kernels (see
// quant/repack.h). The size in bytes is the same either way.
enum class WeightLayout : uint8_t {
    rows,
    q4_0_x8,  // Q4_0, groups of 8 rows interleaved block by block
};

// What a weight is used for, which decides the layouts a backend may give it.
enum class WeightUse : uint8_t {
    matmul,  // only ever the W of matmul(): the backend may interleave it
    rows,    // read by rows as well (get_rows, 1-D vectors): keep the file's layout
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
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;

    // ---- memory
    virtual void* alloc(size_t bytes) = 0;  // zero-filled
    virtual void dealloc(void* p) = 0;
    virtual void copy_to_device(void* dst, const void* host_src, size_t bytes) = 0;
    virtual void copy_to_host(void* host_dst, const void* src, size_t bytes) = 0;  // synchronizes
    // A weight from the mapped file, usable by this backend's ops: zero-copy on
    // the CPU (or interleaved into a copy for faster kernels when `use` allows),
    // uploaded once on a device. The backend owns any copy it makes; a result
    // whose data differs from host.data no longer needs the host bytes.
    virtual Tensor weight(const Tensor& host, WeightUse use) = 0;
    virtual void synchronize() = 0;

    // ---- ops
    // out[i] = table row ids[i], converted to f32.
    virtual void get_rows(const Tensor& table, const int32_t* ids, int n, float* out) = 0;
    // y = LayerNorm(x) * w + b over rows of `dim`; b may be null.
    virtual void layer_norm(const float* x, const float* w, const float* b, float eps,
                            int n_rows, int dim, float* y) = 0;
    // y = x / rms(x) * w over rows of `dim`.
    virtual void rms_norm(const float* x, const float* w, float eps, int n_rows, int dim, float* y) = 0;
    // y[n, W.ne1] = x[n, W.ne0] . W^T (+ bias[W.ne1] when not null).
    virtual void matmul(const Tensor& W, const float* x, int n, float* y, const float* bias) = 0;
    // In place on n_tok rows (stride `row_stride` floats) of n_heads heads of head_dim,
    // at positions pos0, pos0+1, ...
    virtual void rope_neox(float* x, int n_tok, int64_t row_stride, int n_heads, int head_dim,
                           int pos0, const RopeParams& rope) = 0;
    // Write n_tok rows of width `width` (source stride src_stride) into a cache of
    // `type` at rows pos0.. (cache rows are contiguous, `width` elements each).
    virtual void kv_store(void* cache, DType type, int width, const float* src, int64_t src_stride,
                          int pos0, int n_tok) = 0;
    // Causal attention of n_tok queries at positions pos0.. against cache rows
    // [0, pos0 + n_tok). q rows have stride q_stride; out is [n_tok, n_head*head_dim].
    virtual void attention(const float* q, int64_t q_stride, const void* k_cache, const void* v_cache,
                           DType cache_type, int n_tok, int pos0, const AttentionParams& p, float* out) = 0;
    virtual void gelu_tanh(float* x, size_t n) = 0;                           // in place
    virtual void swiglu(const float* gate_up, int n_rows, int ff, float* out) = 0;  // silu(gate) * up
    virtual void add(float* y, const float* x, size_t n) = 0;                   // y += x
    // Copy rows: dst[r, 0:width] = src[r, 0:width] with the given strides.
    virtual void copy_rows(float* dst, int64_t dst_stride, const float* src, int64_t src_stride,
                           int n_rows, int width) = 0;
};

struct BackendOptions {
    std::string device = "cpu";  // "cpu" | "cuda" | "auto"
    int n_threads = 0;           // CPU threads; 0 = all cores
};

std::unique_ptr<Backend> make_backend(const BackendOptions& opts);

} // namespace phi
