// Launchers of the CUDA kernels, one .cu per op family; the backend
// (cuda_backend.cu) decides which to call.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/backend.h"
#include "backend/cuda/attention_plan.h"
#include "backend/cuda/common.cuh"

namespace phi::cuda {

// A matmul as the kernels see it: W in the backend's layout (planar for
// quantized types, rows for float ones), activations x [n, K] (f32), output
// y [n, ldy] (ldy = W.ne1, or W.ne1 / 2 for swiglu).
struct MatmulJob {
    Tensor W;
    const float* x = nullptr;
    int n = 0;
    float* y = nullptr;
    const float* bias = nullptr;
    RowNorm norm;
    Epilogue ep = Epilogue::store;
};

constexpr int kMoeMaxExperts = 64;  // experts the MoE kernels take (their weights travel by value)

// Decode: up to kMatvecMaxTokens tokens, norm and epilogue fused. Takes the
// job when the activations fit in shared memory and the vectors are 16-byte
// aligned; matvec() returns false (launching nothing) otherwise.
constexpr int kMatvecMaxTokens = 8;
bool matvec_takes(const MatmulJob& j);
// How the decode matmuls are launched (the backend's choice; knobs for measuring).
struct MatvecConfig {
    int warps = 8;         // per CTA, float weights
    int quant_warps = 16;  // per CTA, quantized weights
    int ctas_per_sm = 4;   // at most
    bool pipe = true;      // quantized: the next chunk's loads issued before the current one is computed
    bool balance = true;   // pipelined (Q4_K), several rounds of tasks a warp: as few warps a CTA as keep
                           // the number of rounds, so the last, partial round is fuller (matvec.cu)
};
bool matvec(const MatmulJob& j, const Launch& l, int sm_count, const MatvecConfig& cfg);

// Whether three pointers are 16-byte aligned (what the decode kernels' vector loads need).
bool aligned16(const void* a, const void* b, const void* c);

// Mixture of experts (moe.cu): SparseMixer's picks of n rows of scores, and
// the picked experts' matmuls (Backend::experts_swiglu, experts_down_add) for
// up to kMatvecMaxTokens tokens, the experts read from the picks on the GPU.
// experts_alike: a set of at most kMoeMaxExperts matrices of one shape and
// type (and b, the up projections of swiglu, like a), what both these kernels
// and gemm_experts take; experts_fit: whether the decode kernels take them
// (also: activations that fit in shared memory; down: the down projection's launch).
bool experts_alike(const Experts& a, const Experts* b);
bool experts_fit(const Experts& a, const Experts* b, const float* x, const RowNorm& norm, bool down);
void route_top2(const float* scores, int n, int n_expert, float jitter, ExpertPick* picks, const Launch& l);
bool experts_swiglu(const Experts& gate, const Experts& up, const float* x, int n, const ExpertPick* picks,
                    const RowNorm& norm, float* h, const Launch& l, int sm_count);
bool experts_down_add(const Experts& down, const float* h, int n, const ExpertPick* picks, float* x, const Launch& l,
                      int sm_count);

// Prefill on tensor cores: y[n, ldy] (columns [0, W.ne1)) = epilogue(norm(x) . W^T + bias)
// for Epilogue::store, add or gelu (the norm done as the activations are converted). ws: gemm_workspace(n, K)
// bytes of scratch for the activations in f16.
struct GemmConfig {
    bool exact = false;  // F16 and BF16 weights meet the activations' f16 high and low
                         // parts (two MMAs, f32-accurate; F32 weights always do)
    int stages = 3;      // k-steps of tiles in shared memory for F16 weights (2 or 3)
};
size_t gemm_workspace(int n, int64_t K);
void gemm(const Tensor& W, const float* x, const RowNorm& norm, int n, float* y, int64_t ldy, const float* bias,
          Epilogue ep, const GemmConfig& cfg, void* ws, const Launch& l);

// Prefill through cuBLASLt (gemm_lt.cu), when the backend loaded it:
// y = epilogue(norm(x) . W^T + bias), every epilogue, for F16 weights as they are
// and quantized ones dequantized to f16 a slice of rows at a time. gemm_lt:
// false when not taken (cuBLASLt has no algorithm for the shape); y has not
// changed then.
class CublasLt;
struct LtBuffers {
    void* ws = nullptr;          // lt_workspace(n, K) bytes: the activations in f16, their scales
    float* product = nullptr;    // [n, W.ne1]: the scaled product before the epilogue
    void* slice = nullptr;       // quantized weights: a slice of rows in f16
    size_t slice_bytes = 0;
    void* cublas_ws = nullptr;   // cuBLASLt's own scratch
    size_t cublas_ws_bytes = 0;
};
bool lt_takes(const Tensor& W);
size_t lt_workspace(int n, int64_t K);
// The product of a gemm_lt whose epilogue has not run yet: y[t, i] =
// product[t, i] / scale[t] + bias[i] (+ the epilogue ep), n rows of M.
struct LtHeld {
    const float* product = nullptr;
    const float* scale = nullptr;
    int n = 0;
    int64_t M = 0;
    const float* bias = nullptr;
    Epilogue ep = Epilogue::store;
    float* y = nullptr;
};
// x_converted: b.ws already holds these activations, converted by the call
// before (the same rows and norm), and they are not converted again. held:
// a store's epilogue is not run but described there (valid until the next
// gemm_lt), for an op that reads y to apply as it reads (attention_input), or
// for lt_epilogue() to run.
bool gemm_lt(CublasLt& lt, const Tensor& W, const float* x, const RowNorm& norm, int n, float* y, const float* bias,
             Epilogue ep, const LtBuffers& b, const Launch& l, bool x_converted = false, LtHeld* held = nullptr);
void lt_epilogue(const LtHeld& h, const Launch& l);

// Experts over a prompt (batches the decode kernels do not take): the picks
// grouped by expert on the GPU (moe_group), then one launch of the prefill
// GEMM over every expert's entries, in tiles of kGemmTileTokens picks of one
// expert, the expert's weights chosen on the GPU by the tile. No step waits
// for the host.
constexpr int kGemmTileTokens = 64;
struct ExpertGroups {
    int* sorted = nullptr;  // [2n] the picks (2t + j), by expert, in pick order within one
    int4* tiles = nullptr;  // [max_tiles] (expert, first entry in sorted, entries, 0); entries 0 past the last
    int max_tiles = 0;
};
size_t expert_groups_bytes(int n, int n_expert);
ExpertGroups expert_groups_at(void* mem, int n, int n_expert);
void moe_group(const ExpertPick* picks, int n, int n_expert, const ExpertGroups& g, const Launch& l);
// For every entry c of the groups (a pick i = sorted[c] of expert e; experts_alike(W)):
// row i of y (ldy) = row (i >> shift) of x [x_rows, K] . W_e^T. ws: gemm_workspace(x_rows, K).
void gemm_experts(const Experts& W, const float* x, int x_rows, int shift, const ExpertGroups& g, float* y,
                  int64_t ldy, const GemmConfig& cfg, void* ws, const Launch& l);
// x[t] += w0 o[2t] + w1 o[2t + 1] (rows of `width`), the picks' weights in expert order.
void experts_combine(const float* o, int n, int width, const ExpertPick* picks, float* x, const Launch& l);

// Row-wise helpers of the prefill path.
// x [n, K] as the GEMMs meet it: row t normalized (norm, if any), times
// scale[t] (a power of two that puts its largest magnitude near 2^14) in f16,
// rows of converted_ld(K).
void convert_rows(const float* x, const RowNorm& norm, int n, int64_t K, __half* xh, float* scale, const Launch& l);
int64_t converted_ld(int64_t K);
void norm_rows(const float* x, int n_rows, int dim, const RowNorm& norm, float* y, const Launch& l);
void swiglu_rows(const float* gate_up, int n_rows, int ff, float* y, const Launch& l);

// out[i] = table row ids[i] as f32.
void get_rows(const Tensor& table, const int32_t* ids, int n, float* out, const Launch& l);

// QK-norm, rotary and cache write for the step's n_tok tokens at positions *pos0...
// from: t's rows are a held store's y (fused q|k|v rows, t.q == from->y): the
// values are read from its product (and q, k written to t as they are now).
void attention_input(const QKVRows& t, int n_tok, const AttentionParams& p, const QKNorm& qk,
                     const RopeParams& rope, const KVCache& cache, const int* pos0, const Launch& l,
                     const LtHeld* from = nullptr);

// The decode kernel combines at most this many key blocks of a row through
// marked words (their (m, l) pairs are gathered in its shared memory); more
// take the fenced path.
constexpr int kDecodeWordsMaxSplits = 512;
// Attention scratch: partial results of key splits and a counter per tile.
struct AttentionWorkspace {
    float* partial = nullptr;  // [tiles * splits * rows_per_tile * (head_dim + 2)]
    int* counters = nullptr;   // [tiles], zero between launches
    unsigned long long* words = nullptr;  // the decode kernel's partials as marked words, zero between launches
};
// The input step of a one-token step, done inside its attention launch (decode).
struct FusedInput {
    QKVRows rows;
    QKNorm qk;
    RopeParams rope;
    KVCache cache;
};
// fuse: the input step of the step's one token (n_q == 1, t0 == 0), or null
// when attention_input() ran before. Timing only: noop (an empty kernel of
// the same shape instead), trace (8 time points a CTA, the backend's
// PHICPP_CUDA_ATTN_TRACE).
void attention(const float* q, int64_t q_stride, int t0, int n_q, const KVCache& cache,
               const AttentionParams& p, const AttentionPlan& plan, const AttentionWorkspace& ws, const int* pos0,
               float* out, const Launch& l, const FusedInput* fuse = nullptr, int noop = 0,
               unsigned long long* trace = nullptr);

// Prefill attention on tensor cores (flash_attention.cu): the queries and
// probabilities rounded to f16, so only for batches whose caller accepts that.
// takes: whether the kernel handles this head size, cache and alignment.
bool flash_attention_takes(int head_dim, DType cache_type, const float* q, int64_t q_stride, const float* out);
void flash_attention(const float* q, int64_t q_stride, int t0, int n_q, const KVCache& cache, const AttentionParams& a,
                     const int* pos0, float* out, const Launch& l);

// A step's token ids small enough to travel as a kernel argument.
struct StepIds {
    int n = 0;
    int32_t v[kMatvecMaxTokens] = {};
};
// *p = v (the step's position, where the kernels read it), and ids_dst[i] =
// ids.v[i] for i < ids.n.
void set_step_inputs(int* p, int v, int32_t* ids_dst, const StepIds& ids, const Launch& l);

} // namespace phi::cuda
