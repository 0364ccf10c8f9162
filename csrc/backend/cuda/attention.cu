// Attention on the GPU: the input step as its own kernel (several tokens),
// the attention kernels around attention_tile.cuh's work, their plan (how the
// keys split over warps and CTAs) and their launches.
#include <algorithm>
#include <cmath>

#include "backend/cuda/attention_decode.cuh"
#include "backend/cuda/attention_tile.cuh"
#include "backend/cuda/formats.cuh"
#include "backend/cuda/kernels.h"

namespace phi::cuda {
namespace {

// ---- host side: the parameters of a launch

KvFormat kv_format(DType type, int head_dim) {
    switch (type) {
        case DType::F32: return KvFormat::f32;
        case DType::F16: return KvFormat::f16;
        case DType::Q8_0:
        case DType::Q4_0:
            if (head_dim % 32 != 0)
                fail(ErrorKind::invalid_arg, "a ", dtype_name(type), " KV cache needs a head size that is a multiple "
                     "of 32, not ", head_dim);
            return type == DType::Q8_0 ? KvFormat::q8_0 : KvFormat::q4_0;
        default: fail(ErrorKind::unsupported, "KV cache type ", dtype_name(type), " is not supported on CUDA");
    }
}

InputParams input_params(const QKVRows& t, const AttentionParams& a, const QKNorm& qk, const RopeParams& rope,
                         const KVCache& cache, const int* pos0) {
    if (a.head_dim > kMaxHead) fail(ErrorKind::unsupported, "head_dim ", a.head_dim, " > ", kMaxHead, " on CUDA");
    const KvFormat kv = kv_format(cache.type, a.head_dim);
    InputParams p;
    p.q = t.q;
    p.k = t.k;
    p.v = t.v;
    p.q_stride = t.q_stride;
    p.kv_stride = t.kv_stride;
    p.n_head = a.n_head;
    p.n_head_kv = a.n_head_kv;
    p.hd = a.head_dim;
    p.qk = qk;
    p.n_rot = rope.n_rot;
    p.inv_freq = rope.inv_freq;
    p.mscale = rope.mscale;
    p.kc = cache.k;
    p.vc = cache.v;
    p.kv = kv;
    p.pos0 = pos0;
    p.pos = a.pos;
    return p;
}

// The attention of n_q tokens from t0 (with the one-token input step when fuse).
AttnParams attn_params(const float* q, int64_t q_stride, int t0, int n_q, const KVCache& cache,
                              const AttentionParams& a, int tiles, int splits, float* partial, int* counters,
                              const int* pos0, float* out, const FusedInput* fuse) {
    AttnParams p;
    if (fuse) p.in = input_params(fuse->rows, a, fuse->qk, fuse->rope, cache, pos0);
    p.q = q;
    p.q_stride = q_stride;
    p.t0 = t0;
    p.n_q = n_q;
    p.kc = cache.k;
    p.vc = cache.v;
    p.n_head = a.n_head;
    p.n_head_kv = a.n_head_kv;
    p.hd = a.head_dim;
    p.scale = a.scale;
    p.window = a.window;
    p.pos0 = pos0;
    p.pos = a.pos;
    p.out = out;
    p.tiles = tiles;
    p.splits = splits;
    p.partial = partial;
    p.counters = counters;
    return p;
}

// One warp per (head slot, token), kInputWarps slots of a token per CTA:
// slots [0, n_head) are q heads, the rest k heads (which also carry their v
// head into the cache).
constexpr int kInputWarps = 8;
__global__ void __launch_bounds__(kInputWarps * kWarp) attention_input_kernel(InputParams p) {
    __shared__ float bufs[kInputWarps][kMaxHead];
    pdl_wait();
    pdl_launch_dependents();
    const int lane = threadIdx.x % kWarp, slot = blockIdx.x * kInputWarps + threadIdx.x / kWarp, t = blockIdx.y;
    if (slot >= p.n_head + p.n_head_kv) return;  // (no barrier below but __syncwarp)
    float* buf = bufs[threadIdx.x / kWarp];
    const int pos = *p.pos0 + p.pos + t;
    const bool is_q = slot < p.n_head;
    const int h = is_q ? slot : slot - p.n_head;
    float* vec = is_q ? p.q + t * p.q_stride + h * p.hd : p.k + t * p.kv_stride + h * p.hd;
    const int64_t col = (is_q ? 0 : p.k_off) + h * p.hd;  // (of a src row)
    const float unscale = p.src ? 1.0f / p.src_scale[t] : 1.0f;  // (exact: a power of two)
    auto src_value = [&](int64_t c) { return p.src[t * p.src_stride + c] * unscale + (p.src_bias ? p.src_bias[c] : 0.0f); };
    for (int i = lane; i < p.hd; i += kWarp) buf[i] = p.src ? src_value(col + i) : vec[i];
    __syncwarp();
    if (p.qk.q_w) head_layernorm(buf, p.hd, is_q ? p.qk.q_w : p.qk.k_w, is_q ? p.qk.q_b : p.qk.k_b, p.qk.eps);
    head_rotary(buf, p.n_rot, rotary_angles(p, rotary_freqs(p), pos));
    const int64_t kvw = static_cast<int64_t>(p.n_head_kv) * p.hd;
    const int64_t at = pos * kvw + h * p.hd;
    const float* v = p.v + t * p.kv_stride + h * p.hd;
    auto v_value = [&](int i) { return p.src ? src_value(p.v_off + h * p.hd + i) : v[i]; };
    for (int i = lane; i < p.hd; i += kWarp) {
        vec[i] = buf[i];
        if (is_q) continue;
        if (p.kv == KvFormat::f16) {
            static_cast<__half*>(p.kc)[at + i] = __float2half_rn(buf[i]);
            static_cast<__half*>(p.vc)[at + i] = __float2half_rn(v_value(i));
        } else if (p.kv == KvFormat::f32) {
            static_cast<float*>(p.kc)[at + i] = buf[i];
            static_cast<float*>(p.vc)[at + i] = v_value(i);
        }
    }
    if (is_q || !kv_quantized(p.kv)) return;
    // whole blocks, a value per lane (hd % 32 == 0)
    const int64_t row = static_cast<int64_t>(p.n_head_kv) * kv_head_bytes(p.kv, p.hd);
    uint8_t* kb = static_cast<uint8_t*>(p.kc) + pos * row + h * kv_head_bytes(p.kv, p.hd);
    uint8_t* vb = static_cast<uint8_t*>(p.vc) + pos * row + h * kv_head_bytes(p.kv, p.hd);
    const int bb = kv_block_bytes(p.kv);
    for (int b = 0; b < p.hd / kWarp; ++b) {
        const int i = b * kWarp + lane;
        if (p.kv == KvFormat::q8_0) {
            kv_store_block<KvFormat::q8_0>(kb + b * bb, buf[i]);
            kv_store_block<KvFormat::q8_0>(vb + b * bb, v_value(i));
        } else {
            kv_store_block<KvFormat::q4_0>(kb + b * bb, buf[i]);
            kv_store_block<KvFormat::q4_0>(vb + b * bb, v_value(i));
        }
    }
}

template <class T, int kVec, bool kFused, int kR, KvFormat F>
__global__ void attention_kernel(AttnParams p) {
    extern __shared__ __align__(16) uint8_t smem_all[];
    trace_point(p, 0);
    attention_tile<T, kVec, kFused, kR, F>(p, smem_all, blockIdx.x, blockIdx.y, threadIdx.x / kWarp,
                                           blockDim.x / kWarp);
}

template <int kPer, bool kFused>
__global__ void __launch_bounds__(kDecodeWarps * kWarp) attention_decode_kernel(AttnParams p) {
    __shared__ DecodeShared sh;
    trace_point(p, 0);
    attention_decode<kPer, kFused>(p, sh, blockIdx.x, blockIdx.y, blockIdx.z);
}

// Timing only (PHICPP_CUDA_ATTN_NOOP): launched in attention's place with its
// grid, threads and (noop 1) shared memory, so that a step keeps attention's
// two boundaries and residency and loses only its work.
__global__ void attention_noop_kernel(AttnParams) {
    pdl_wait();
    pdl_launch_dependents();
}

// T: the rows' type in shared memory (float for a quantized cache)
template <class T, int kVec, KvFormat F>
void launch_attention(const AttnParams& p, dim3 grid, int warps, const Launch& l, bool fused) {
    const bool one_row = p.n_q * (p.n_head / p.n_head_kv) == 1;
    auto kernel = p.noop   ? attention_noop_kernel
                  : !fused  ? attention_kernel<T, kVec, false, kRows, F>
                  : one_row ? attention_kernel<T, kVec, true, 1, F>
                            : attention_kernel<T, kVec, true, kRows, F>;
    const size_t smem = p.noop == 2 ? 0 : warps * attention_smem<T, F>(p);
    if (smem > 48 * 1024)
        PHI_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    launch(kernel, grid, dim3(warps * kWarp), smem, l, p);
}

template <int kPer>
void launch_decode(const AttnParams& p, const Launch& l, bool fused) {
    auto kernel = p.noop ? attention_noop_kernel
                  : fused ? attention_decode_kernel<kPer, true>
                          : attention_decode_kernel<kPer, false>;
    // (noop 1: the same static shared memory, asked for dynamically)
    launch(kernel, dim3(p.n_head, p.splits, p.n_q), dim3(kDecodeWarps * kWarp),
           p.noop == 1 ? sizeof(DecodeShared) : 0, l, p);
}

// A warp's shared memory in the attention kernels (their rows: f16 for an f16
// cache, f32 for the others).
size_t warp_smem(int hd, KvFormat kv, int stages, int q_rows) {
    return attention_smem(hd, kv == KvFormat::f16 ? 2 : 4, kv_stage_row(kv, hd), stages, q_rows);
}

} // namespace

void attention_input(const QKVRows& t, int n_tok, const AttentionParams& a, const QKNorm& qk, const RopeParams& rope,
                     const KVCache& cache, const int* pos0, const Launch& l, const LtHeld* from) {
    InputParams p = input_params(t, a, qk, rope, cache, pos0);
    if (from) {
        p.src = from->product;
        p.src_scale = from->scale;
        p.src_bias = from->bias;
        p.src_stride = from->M;
        p.k_off = t.k - t.q;
        p.v_off = t.v - t.q;
    }
    const int slots = a.n_head + a.n_head_kv;
    launch(attention_input_kernel, dim3((slots + kInputWarps - 1) / kInputWarps, n_tok), dim3(kInputWarps * kWarp), 0, l,
           p);
}

namespace {
// Whether the decode kernel takes these rows: one row (token) over an f16
// cache, or rows that must each give their own decode step's bits.
bool decode_takes(int n_q, const AttentionParams& p, KvFormat kv, const AttentionTuning& tuning, bool rows_alone) {
    return tuning.decode && (n_q == 1 || rows_alone) && kv == KvFormat::f16 && p.head_dim % 8 == 0 &&
           p.head_dim <= kDecodeMaxHead;
}

} // namespace

int decode_row_keys(int kv_len, int window) { return window > 0 ? std::min(kv_len, window) : kv_len; }

int decode_block_keys(int keys, int n_head, int sm_count, int decode_keys) {
    int c = std::max(1, decode_keys);
    while (static_cast<int64_t>((keys + c - 1) / c) * n_head > 4 * static_cast<int64_t>(sm_count)) c *= 2;
    return c;
}

size_t AttentionPlan::partial_floats() const {
    return splits > 1 ? static_cast<size_t>(tiles) * splits * rows_per_tile : 0;
}

AttentionPlan attention_plan(int n_q, const AttentionParams& p, int kv_len, DType cache_type, const AttentionDevice& dev,
                             const AttentionTuning& tuning, bool rows_alone) {
    AttentionPlan plan;
    const int group = p.n_head / p.n_head_kv;
    const KvFormat kv = kv_format(cache_type, p.head_dim);
    // the keys a tile reads: a sliding window bounds them (its n_q queries see window + n_q - 1)
    const int keys = p.window > 0 ? std::min(kv_len, p.window + n_q - 1) : kv_len;
    if (decode_takes(n_q, p, kv, tuning, rows_alone)) {
        // a CTA a row, query head and block of keys; blocks of decode_keys keys, or of twice as many
        // while a row's would not fit four CTAs a SM; their count rounded up to a power
        // of two (the blocks past a row's keys are empty), so that a recorded step holds
        // while the context grows within a bucket
        plan.decode = true;
        plan.tiles = p.n_head * n_q;
        plan.q_rows = 1;
        plan.rows_per_tile = p.head_dim + 2;
        // (the last row's keys, the most: the caller gives a launch only rows of one block size)
        const int row_keys = decode_row_keys(kv_len, p.window);
        plan.block_keys = decode_block_keys(row_keys, p.n_head, dev.sm_count, tuning.decode_keys);
        const int blocks = (row_keys + plan.block_keys - 1) / plan.block_keys;
        while (plan.splits < blocks) plan.splits *= 2;
        plan.warps = kDecodeWarps;
        return plan;
    }
    plan.tiles = p.n_head_kv * ((n_q * group + kRows - 1) / kRows);
    plan.rows_per_tile = kRows * (p.head_dim + 2);
    plan.q_rows = std::min(kRows, n_q * group);
    const size_t cta_limit =
        tuning.cta_smem_kb > 0 ? std::min<size_t>(size_t{1024} * tuning.cta_smem_kb, dev.smem_per_cta) : dev.smem_per_cta;
    auto per_warp = [&](int stages) { return warp_smem(p.head_dim, kv, stages, plan.q_rows); };
    // the warps an SM holds at once (shared memory; registers allow 8 of every build), a power of two
    auto resident = [&](int stages) {
        const size_t per_sm = dev.smem_per_sm / (per_warp(stages) + kCtaSmemReserve);
        int r = 1;
        while (r * 2 <= std::min<size_t>(per_sm, std::max(1, tuning.warps_per_sm))) r *= 2;
        return r;
    };
    // keys split so a warp takes one 32-key chunk, up to the warps the SMs hold
    // at once (one wave: a second would run after the first); powers of two, so
    // that a recorded decode step stays valid while the context grows within a
    // bucket
    const int warps_per_sm = resident(1);
    const int slots = warps_per_sm * dev.sm_count;
    const int want = std::max(1, slots / std::max(1, plan.tiles));
    const int useful = std::max(1, (keys + 31) / 32);
    int cap = 1, s = 1;
    while (cap * 2 <= want) cap *= 2;
    while (s < useful && s < cap) s *= 2;
    // but no warp without a chunk where the tiles' warps would fill more than half
    // the SMs: each warp has its own prologue and share of the combine (H200, 3072
    // keys, 8 KV heads of 128, rows of 3 queries: 64 warps a tile 1662 t/s, 128
    // warps 1566; halving further where a warp has one chunk cost Phi-3-mini 10%)
    while (s > 1 && plan.tiles * s > slots / 2 && s > useful) s /= 2;
    // two chunk buffers a warp (the next chunk's rows in flight while one is used) where the rows are
    // copied as they are used (f16/f32 rows of 16-byte pieces; a quantized cache's raw rows are staged
    // apart already), a warp has more than one chunk, and the SM still holds as many warps; 0: that choice
    const bool copied = (kv == KvFormat::f16 && p.head_dim % 8 == 0) || (kv == KvFormat::f32 && p.head_dim % 4 == 0);
    const bool two = copied && useful > s && per_warp(2) <= cta_limit &&
                     (tuning.stages == 2 || (tuning.stages == 0 && resident(2) == warps_per_sm));
    plan.stages = two ? 2 : 1;
    // up to cta_warps of them as the warps of one CTA, combined in shared memory
    int w = 1;
    while (w * 2 <= std::min(s, std::max(1, tuning.cta_warps)) && (w * 2) * per_warp(plan.stages) <= cta_limit) w *= 2;
    plan.warps = w;
    plan.splits = s / w;
    return plan;
}

size_t attention_cta_smem(const AttentionPlan& plan, int head_dim, DType cache_type) {
    if (plan.decode) return sizeof(DecodeShared);
    return plan.warps * warp_smem(head_dim, kv_format(cache_type, head_dim), plan.stages, plan.q_rows);
}

void attention(const float* q, int64_t q_stride, int t0, int n_q, const KVCache& cache,
               const AttentionParams& a, const AttentionPlan& plan, const AttentionWorkspace& ws, const int* pos0,
               float* out, const Launch& l, const FusedInput* fuse, int noop, unsigned long long* trace) {
    if (a.head_dim > kMaxHead) fail(ErrorKind::unsupported, "head_dim ", a.head_dim, " > ", kMaxHead, " on CUDA");
    const bool fused = fuse != nullptr;
    if (fused && (n_q != 1 || t0 != 0 || fuse->rows.q != q || fuse->cache.k != cache.k))
        fail(ErrorKind::invalid_arg, "fused attention input: not this attention's token");
    AttnParams p = attn_params(q, q_stride, t0, n_q, cache, a, plan.tiles, plan.splits, ws.partial, ws.counters,
                               pos0, out, fuse);
    p.stages = plan.stages;
    p.q_rows = plan.q_rows;
    p.words = ws.words;  // (null unless the decode kernel combines through words)
    p.block_keys = plan.block_keys;
    p.noop = noop;
    p.trace = trace;
    if (plan.decode) {
        if (a.head_dim <= 32) launch_decode<1>(p, l, fused);
        else if (a.head_dim <= 64) launch_decode<2>(p, l, fused);
        else if (a.head_dim <= 96) launch_decode<3>(p, l, fused);
        else launch_decode<4>(p, l, fused);
        return;
    }
    const dim3 grid(plan.tiles, plan.splits);
    switch (kv_format(cache.type, a.head_dim)) {
        case KvFormat::f16:
            if (a.head_dim % 8 == 0) launch_attention<__half, 8, KvFormat::f16>(p, grid, plan.warps, l, fused);
            else launch_attention<__half, 1, KvFormat::f16>(p, grid, plan.warps, l, fused);
            break;
        case KvFormat::f32:
            if (a.head_dim % 4 == 0) launch_attention<float, 4, KvFormat::f32>(p, grid, plan.warps, l, fused);
            else launch_attention<float, 1, KvFormat::f32>(p, grid, plan.warps, l, fused);
            break;
        // (head_dim % 32 == 0: f32 rows of 16-byte multiples. f16 rows measured slower: the plan then
        // fits 8 warps in a CTA, half the SMs, and the dequantization is bound by each SM's issue rate)
        case KvFormat::q8_0: launch_attention<float, 4, KvFormat::q8_0>(p, grid, plan.warps, l, fused); break;
        case KvFormat::q4_0: launch_attention<float, 4, KvFormat::q4_0>(p, grid, plan.warps, l, fused); break;
    }
}

} // namespace phi::cuda
