// Decode attention over an f16 KV cache, a CTA per query head (and block of
// keys), as many short chains rather than a few long ones.
//
// The tile kernel (attention_tile.cuh) gives a warp 32 keys at a time, one
// lane a key, and walks them in one dependent stream (scores from shared
// memory, two warp reductions, 32 broadcast value steps): ~5 us for a chunk
// on an H200 while the rest of the GPU idles (docs/CUDA.md). Here four lanes
// share a key (each a quarter of the head, 16-byte loads straight into
// registers), so a warp holds 8 keys and a CTA of 8 warps 64 at once; every
// group keeps its own online-softmax state, and the groups combine at the
// end (shuffles in the warp, shared memory in the CTA, global memory over the
// CTAs of a row's key blocks). The cache rows of earlier tokens are loaded
// before the PDL wait, so that their round trip overlaps the qkv
// projection's tail; only the token's own row depends on it.
//
// With GQA the query heads of a KV head are CTAs of their own, each reading
// the KV head's keys: adjacent in the grid, so they run together and the
// repeated reads should mostly hit L2; the work of a CTA is
// that of an MHA head, and a row keeps one arithmetic however the query heads
// share their keys.
//
// A row's arithmetic is fixed by its keys and the block size alone: block y
// of a row holds its keys [lo + y C, lo + (y + 1) C), key j of a block goes
// to round o / 64, warp o / 8 % 8 and group o % 8 (o its offset in the
// block), and blocks, warps or groups without keys add exact zeros to the
// combines. So a query gives the same bits alone (the input step fused here)
// as in a launch of several rows (row-invariant batches: gridDim.z rows, a
// CTA per row and block) or of more (empty) blocks, and the input step
// apart gives what the fused one does (the same device functions, the query
// scaled after rotation, the own key and value rounded to f16 first).
#pragma once
#include "backend/cuda/attention_tile.cuh"

namespace phi::cuda {
namespace {

constexpr int kDecodeLanes = 4;                      // lanes of a key
constexpr int kDecodeKeys = kWarp / kDecodeLanes;    // keys a warp holds at once
constexpr int kDecodeWarps = 8;
constexpr int kDecodeMaxHead = 128;                  // 8-element pieces a lane: at most 4

struct DecodeShared {
    __align__(16) float q[kDecodeMaxHead];      // the query, rotated and scaled
    __align__(16) float k[kDecodeMaxHead];      // fused: the token's key and value before rounding
    __align__(16) float v[kDecodeMaxHead];
    __align__(16) __half cur_k[kDecodeMaxHead];  // fused: the token's key and value as the cache holds them
    __align__(16) __half cur_v[kDecodeMaxHead];
    float part[kDecodeWarps][kDecodeMaxHead + 2];  // each warp's (m, l, sums)
    int ticket;
};

// A key block's partial (m, l, sums) through global memory as 64-bit words
// that carry their own mark (the float in the low half, 1 in the high), each
// written by one store: the row's last block polls a word until it is marked,
// so no fence has to order the partial before the ticket (an SC fence, a
// memory round trip, on the critical path), and clears the words once read.
// Waits past ~2 s trap (a launch error) rather than hang.
__device__ __forceinline__ void put_word(unsigned long long* a, float v) {
    const unsigned long long w = (1ull << 32) | __float_as_uint(v);
    asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(a), "l"(w) : "memory");
}
__device__ __forceinline__ unsigned long long load_word(const unsigned long long* a) {
    unsigned long long w;
    asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(w) : "l"(a) : "memory");
    return w;
}
__device__ __forceinline__ float take_word(const unsigned long long* a) {
    unsigned long long w, t0 = 0;
    for (int i = 1;; ++i) {
        w = load_word(a);
        if (w >> 32) return __uint_as_float(static_cast<unsigned>(w));
        if (i % 1024 == 0) {
            unsigned long long now;
            asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
            if (t0 == 0) t0 = now;
            else if (now - t0 > 2000000000ull) __trap();
        }
    }
}

// n floats from src into dst (one warp), every load in flight before any store.
__device__ __forceinline__ void warp_copy_row(const float* src, float* dst, int n) {
    constexpr int kPerLane = kDecodeMaxHead / kWarp;
    const int lane = threadIdx.x % kWarp;
    float x[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) x[i] = lane + i * kWarp < n ? src[lane + i * kWarp] : 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
        if (lane + i * kWarp < n) dst[lane + i * kWarp] = x[i];
    __syncwarp();
}

// The blocks of a row combined through marked words (put_word): this block's
// sums (sh.part, weighted by its warps' maxima against mx) and (mx, L) out,
// a ticket, and the row's last block combines every block's partial with the
// arithmetic of the fenced path (attention_decode), then clears the words.
__device__ void combine_blocks_by_words(const AttnParams& p, DecodeShared& sh, int64_t row_head, int split, float mx,
                                        float L, float* out) {
    const int hd = p.hd, stride = hd + 2;
    unsigned long long* mine = p.words + (row_head * p.splits + split) * stride;
    auto weight = [&](float mw) { return mw == -INFINITY ? 0.0f : expf(mw - mx); };
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < kDecodeWarps; ++w) o += weight(sh.part[w][0]) * sh.part[w][2 + d];
        put_word(mine + 2 + d, o);
    }
    if (threadIdx.x == 0) {
        put_word(mine, mx);
        put_word(mine + 1, L);
    }
    __syncthreads();  // (every word of this block is issued before the ticket)
    if (threadIdx.x == 0) sh.ticket = atomicAdd(&p.counters[row_head], 1);
    __syncthreads();
    trace_point(p, 6);
    if (sh.ticket != p.splits - 1) return;
    // Every word is requested before any is waited for: each block's (m, l)
    // into shared memory, a word a thread (the warps' partials there are spent),
    // then each dimension's sums eight blocks at a time. (Polling a word at a
    // time put one L2 round trip per block and dimension in series: ~9 us.)
    unsigned long long* base = p.words + row_head * p.splits * stride;
    float* ms = &sh.part[0][0];
    float* ls = ms + p.splits;
    static_assert(2 * kDecodeWordsMaxSplits <= kDecodeWarps * (kDecodeMaxHead + 2), "(m, l) of every block fit");
    for (int i = threadIdx.x; i < 2 * p.splits; i += blockDim.x)
        (i & 1 ? ls : ms)[i >> 1] = take_word(base + (i >> 1) * stride + (i & 1));
    __syncthreads();
    float gm = -INFINITY;
    for (int s = 0; s < p.splits; ++s) gm = fmaxf(gm, ms[s]);
    auto gweight = [&](int s) { return ms[s] == -INFINITY ? 0.0f : expf(ms[s] - gm); };
    float GL = 0.0f;
    for (int s = 0; s < p.splits; ++s) GL += gweight(s) * ls[s];
    const float inv = GL > 0.0f ? 1.0f / GL : 0.0f;
    constexpr int kBatch = 8;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        for (int s0 = 0; s0 < p.splits; s0 += kBatch) {
            unsigned long long w[kBatch];
#pragma unroll
            for (int j = 0; j < kBatch; ++j)
                if (s0 + j < p.splits) w[j] = load_word(base + (s0 + j) * stride + 2 + d);
#pragma unroll
            for (int j = 0; j < kBatch; ++j) {
                if (s0 + j >= p.splits) break;
                const unsigned long long* a = base + (s0 + j) * stride + 2 + d;
                const float v = w[j] >> 32 ? __uint_as_float(static_cast<unsigned>(w[j])) : take_word(a);
                o += gweight(s0 + j) * v;
            }
        }
        out[d] = o * inv;
    }
    __syncthreads();  // every word read: clear them for the next launch
    for (int i = threadIdx.x; i < p.splits * stride; i += blockDim.x) base[i] = 0;
    if (threadIdx.x == 0) p.counters[row_head] = 0;
    trace_point(p, 7);
}

// kPer: the 8-element pieces of the head a lane holds (pieces sub, sub + 4, ...
// of hd / 8). head: the query head; split: the CTA's block of the row's keys
// (p.splits of them, p.block_keys keys each); t: the row (a token of the step
// from p.t0; kFused: the step's one token).
template <int kPer, bool kFused>
__device__ void attention_decode(const AttnParams& p, DecodeShared& sh, int head, int split, int t) {
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    const int group_size = p.n_head / p.n_head_kv, kv_head = head / group_size;
    const int sub = lane % kDecodeLanes, group = lane / kDecodeLanes;
    const int hd = p.hd, pieces = hd / 8;
    RotaryFreqs freqs;
    if constexpr (kFused) freqs = rotary_freqs(p.in);  // in flight with the position's load
    // rows from first_new on are written by this step (the kernel before, or here)
    const int first_new = *p.pos0 + p.pos, cur = first_new + p.t0 + t;
    const int lo = p.window > 0 ? max(0, cur - p.window + 1) : 0, hi = cur + 1;
    const int c_begin = lo + split * p.block_keys, c_end = min(hi, c_begin + p.block_keys);
    const int round = kDecodeWarps * kDecodeKeys;  // keys of the CTA at once
    const int64_t kvw = static_cast<int64_t>(p.n_head_kv) * hd;
    const __half* K = static_cast<const __half*>(p.kc) + kv_head * hd;
    const __half* V = static_cast<const __half*>(p.vc) + kv_head * hd;

    // key j's pieces into registers (zeros past the split or, before the wait,
    // for rows this step writes; the token's own row, fused, from shared memory)
    auto load = [&](int j, uint4 (&kr)[kPer], uint4 (&vr)[kPer], bool before_wait) {
        const bool global = j < c_end && j < first_new;
        const bool own = kFused && !before_wait && j < c_end && j >= first_new;
        const bool late = !kFused && !before_wait && j < c_end && j >= first_new;
#pragma unroll
        for (int k = 0; k < kPer; ++k) {
            const int piece = sub + kDecodeLanes * k;
            kr[k] = vr[k] = make_uint4(0, 0, 0, 0);
            if (piece >= pieces) continue;
            if (global || late) {
                kr[k] = __ldcg(reinterpret_cast<const uint4*>(K + j * kvw) + piece);
                vr[k] = __ldcg(reinterpret_cast<const uint4*>(V + j * kvw) + piece);
            } else if (own) {
                kr[k] = reinterpret_cast<const uint4*>(sh.cur_k)[piece];
                vr[k] = reinterpret_cast<const uint4*>(sh.cur_v)[piece];
            }
        }
    };
    // the warp's keys of the first two rounds, before the wait
    const int j0 = c_begin + warp * kDecodeKeys;  // the warp's first key (this group's: + group)
    uint4 ka[kPer], va[kPer], kb[kPer], vb[kPer];
    load(j0 + group, ka, va, true);
    load(j0 + round + group, kb, vb, true);

    if constexpr (kFused) {
        const InputParams& in = p.in;
        const RotaryAngles angles = rotary_angles(in, freqs, cur);
        trace_point(p, 1);
        pdl_wait();
        pdl_launch_dependents();
        trace_point(p, 2);
        // warp 0 the query, 1 the key, 2 the value (fewer warps: each several);
        // the KV head's first query head writes the token's key and value, the
        // others (the same arithmetic) take them from shared memory
        const bool writes = cur >= c_begin && cur < c_end && head % group_size == 0;
        __half* Kw = static_cast<__half*>(const_cast<void*>(p.kc)) + cur * kvw + kv_head * hd;
        __half* Vw = static_cast<__half*>(const_cast<void*>(p.vc)) + cur * kvw + kv_head * hd;
        for (int role = warp; role < 3; role += kDecodeWarps) {
            if (role == 0) {
                warp_copy_row(in.q + head * hd, sh.q, hd);
                if (in.qk.q_w) head_layernorm(sh.q, hd, in.qk.q_w, in.qk.q_b, in.qk.eps);
                head_rotary(sh.q, in.n_rot, angles);
                for (int d = lane; d < hd; d += kWarp) sh.q[d] *= p.scale;
            } else if (role == 1) {
                warp_copy_row(in.k + kv_head * hd, sh.k, hd);
                if (in.qk.q_w) head_layernorm(sh.k, hd, in.qk.k_w, in.qk.k_b, in.qk.eps);
                head_rotary(sh.k, in.n_rot, angles);
                for (int d = lane; d < hd; d += kWarp) {
                    sh.cur_k[d] = __float2half_rn(sh.k[d]);
                    if (writes) Kw[d] = sh.cur_k[d];
                }
            } else {
                warp_copy_row(in.v + kv_head * hd, sh.v, hd);
                for (int d = lane; d < hd; d += kWarp) {
                    sh.cur_v[d] = __float2half_rn(sh.v[d]);
                    if (writes) Vw[d] = sh.cur_v[d];
                }
            }
        }
        __syncthreads();
    } else {
        trace_point(p, 1);
        pdl_wait();
        pdl_launch_dependents();
        trace_point(p, 2);
    }
    // rows of this step among the first two rounds (fused: the token's own row)
    if (j0 + group >= first_new) load(j0 + group, ka, va, false);
    if (j0 + round + group >= first_new) load(j0 + round + group, kb, vb, false);
    // this lane's pieces of the query
    float qv[kPer][8];
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
        const int piece = sub + kDecodeLanes * k;
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            if (piece >= pieces) {
                qv[k][e] = 0.0f;
            } else if constexpr (kFused) {
                qv[k][e] = sh.q[piece * 8 + e];
            } else {
                qv[k][e] = p.q[t * p.q_stride + head * hd + piece * 8 + e] * p.scale;
            }
        }
    }
    trace_point(p, 3);

    // a group's online softmax over its keys
    float m = -INFINITY, l = 0.0f, acc[kPer][8];
#pragma unroll
    for (int k = 0; k < kPer; ++k)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[k][e] = 0.0f;
    auto use = [&](int j, const uint4 (&kr)[kPer], const uint4 (&vr)[kPer]) {
        float s0 = 0.0f, s1 = 0.0f;  // two chains of products
#pragma unroll
        for (int k = 0; k < kPer; ++k) {
            const __half2* h = reinterpret_cast<const __half2*>(&kr[k]);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float2 f = __half22float2(h[e]);
                s0 = fmaf(qv[k][2 * e], f.x, s0);
                s1 = fmaf(qv[k][2 * e + 1], f.y, s1);
            }
        }
        float s = s0 + s1;
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        if (j >= c_end) return;
        const float m_new = fmaxf(m, s);
        const float corr = expf(m - m_new), pr = expf(s - m_new);
        l = l * corr + pr;
        m = m_new;
#pragma unroll
        for (int k = 0; k < kPer; ++k) {
            const __half2* h = reinterpret_cast<const __half2*>(&vr[k]);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float2 f = __half22float2(h[e]);
                acc[k][2 * e] = fmaf(pr, f.x, acc[k][2 * e] * corr);
                acc[k][2 * e + 1] = fmaf(pr, f.y, acc[k][2 * e + 1] * corr);
            }
        }
    };
    // rounds two at a time, each buffer refilled two rounds ahead once used
    // (the loop's bounds are the warp's, so every lane takes the shuffles)
    for (int jw = j0; jw < c_end; jw += 2 * round) {
        use(jw + group, ka, va);
        if (jw + 2 * round < c_end) load(jw + 2 * round + group, ka, va, false);
        if (jw + round >= c_end) break;
        use(jw + round + group, kb, vb);
        if (jw + 3 * round < c_end) load(jw + 3 * round + group, kb, vb, false);
    }
    trace_point(p, 4);

    // the warp's 8 groups combined (lanes of the same piece, 4 apart)
#pragma unroll
    for (int off = kDecodeLanes; off < kWarp; off *= 2) {
        const float mo = __shfl_xor_sync(0xffffffffu, m, off), lo_ = __shfl_xor_sync(0xffffffffu, l, off);
        const float mx = fmaxf(m, mo);
        const float a = m == -INFINITY ? 0.0f : expf(m - mx), b = mo == -INFINITY ? 0.0f : expf(mo - mx);
        l = l * a + lo_ * b;
        m = mx;
#pragma unroll
        for (int k = 0; k < kPer; ++k)
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[k][e] = acc[k][e] * a + __shfl_xor_sync(0xffffffffu, acc[k][e], off) * b;
    }
    float* part = sh.part[warp];
    if (lane == 0) {
        part[0] = m;
        part[1] = l;
    }
    if (group == 0) {
#pragma unroll
        for (int k = 0; k < kPer; ++k) {
            const int piece = sub + kDecodeLanes * k;
            if (piece < pieces)
#pragma unroll
                for (int e = 0; e < 8; ++e) part[2 + piece * 8 + e] = acc[k][e];
        }
    }
    __syncthreads();
    trace_point(p, 5);
    // the CTA's warps combined, a thread a dimension
    float mx = -INFINITY;
    for (int w = 0; w < kDecodeWarps; ++w) mx = fmaxf(mx, sh.part[w][0]);
    auto weight = [&](float mw) { return mw == -INFINITY ? 0.0f : expf(mw - mx); };
    float L = 0.0f;
    for (int w = 0; w < kDecodeWarps; ++w) L += weight(sh.part[w][0]) * sh.part[w][1];
    float* out = p.out + static_cast<int64_t>(t) * p.n_head * hd + head * hd;
    // one block: the row's output; several: this block's (m, l, sums), and the
    // row's last block to finish combines them
    const int stride = hd + 2;
    const int64_t row_head = static_cast<int64_t>(t) * p.n_head + head;
    if (p.splits > 1 && p.words) {
        combine_blocks_by_words(p, sh, row_head, split, mx, L, out);
        return;
    }
    float* mine = p.partial + (row_head * p.splits + split) * stride;
    const float block_inv = p.splits == 1 && L > 0.0f ? 1.0f / L : 1.0f;
    float* dst = p.splits == 1 ? out : mine + 2;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < kDecodeWarps; ++w) o += weight(sh.part[w][0]) * sh.part[w][2 + d];
        dst[d] = o * block_inv;
    }
    if (p.splits == 1) {
        trace_point(p, 6);
        return;
    }
    if (threadIdx.x == 0) {
        mine[0] = mx;
        mine[1] = L;
    }
    __threadfence();
    __syncthreads();  // every thread's partial is out before the ticket is drawn
    if (threadIdx.x == 0) sh.ticket = atomicAdd(&p.counters[row_head], 1);
    __syncthreads();
    trace_point(p, 6);
    if (sh.ticket != p.splits - 1) return;
    __threadfence();
    const float* base = p.partial + row_head * p.splits * stride;
    float gm = -INFINITY;
    for (int s = 0; s < p.splits; ++s) gm = fmaxf(gm, __ldcg(base + s * stride));
    auto gweight = [&](int s) {
        const float ms = __ldcg(base + s * stride);
        return ms == -INFINITY ? 0.0f : expf(ms - gm);
    };
    float GL = 0.0f;
    for (int s = 0; s < p.splits; ++s) GL += gweight(s) * __ldcg(base + s * stride + 1);
    const float inv = GL > 0.0f ? 1.0f / GL : 0.0f;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < p.splits; ++s) o += gweight(s) * __ldcg(base + s * stride + 2 + d);
        out[d] = o * inv;
    }
    if (threadIdx.x == 0) p.counters[row_head] = 0;  // ready for the next launch
    trace_point(p, 7);
}

} // namespace
} // namespace phi::cuda
