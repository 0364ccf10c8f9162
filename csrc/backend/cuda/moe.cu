// Mixture of experts on the GPU (Phi-3.5-MoE): SparseMixer's picks from the
// router's scores, and the picked experts' matmuls for decode batches, with
// each expert's weights chosen by a pick read from device memory: a step
// that routes never waits for the host, so decode steps replay as graphs.
// The matmuls are matvec.cu's design (activations staged in shared memory,
// normalized and, for quantized weights, rounded to 8 bits per 32; a warp per
// pair of rows) where the pair is a gate row and its up row (experts_swiglu)
// or the same row of a token's two experts (experts_down_add, which then sums
// both into the residual stream in expert order, with no race between them).
#include <algorithm>

#include "backend/cuda/matvec_stage.cuh"
#include "backend/sparsemixer.h"

namespace phi::cuda {
namespace {

// Each expert's weight bytes (planar bits and rest for quantized types, rows
// for float ones) passed by value: the kernels index them with the picked
// expert, so no table in device memory has to stay in step with a graph.
struct ExpertBases {
    const uint8_t* bits[kMoeMaxExperts] = {};
    const uint8_t* rest[kMoeMaxExperts] = {};
};
struct MoeParams {
    MatvecParams p;  // one expert's K and M (rows), x, y, the norm; w.nb, row_bytes
    ExpertBases a, b;  // a: gate (swiglu) or down; b: up
    const ExpertPick* picks = nullptr;
};

__global__ void route_top2_kernel(const float* scores, int n, int n_expert, float jitter, ExpertPick* picks) {
    pdl_wait();
    pdl_launch_dependents();
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n) sparsemixer_top2(scores + static_cast<int64_t>(t) * n_expert, n_expert, jitter, picks + 2 * t);
}

// ---- prompts: the picks grouped by expert for gemm_experts
//
// One CTA: the picks' experts in shared memory a chunk at a time, each warp
// counting and then placing its experts' picks with ballots (so an expert's
// picks keep their order and the grouping is the same on every run); between
// the two passes thread 0 lays out the tiles.
constexpr int kGroupThreads = 1024, kGroupChunk = 8192;

__device__ __forceinline__ void load_chunk(const ExpertPick* picks, int i0, int m, int* e) {
    __syncthreads();  // the previous chunk has been read
    for (int i = threadIdx.x; i < kGroupChunk && i0 + i < m; i += blockDim.x) e[i] = picks[i0 + i].expert;
    __syncthreads();
}

__global__ void __launch_bounds__(kGroupThreads) moe_group_kernel(const ExpertPick* picks, int n, int n_expert,
                                                                  ExpertGroups g) {
    __shared__ int e_of[kGroupChunk];
    __shared__ int count[kMoeMaxExperts], first[kMoeMaxExperts];
    pdl_wait();
    pdl_launch_dependents();
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
    const int m = 2 * n;
    for (int e = threadIdx.x; e < n_expert; e += blockDim.x) count[e] = 0;
    for (int i0 = 0; i0 < m; i0 += kGroupChunk) {
        load_chunk(picks, i0, m, e_of);
        const int len = min(kGroupChunk, m - i0);
        for (int e = warp; e < n_expert; e += nw) {
            int c = 0;
            for (int i = lane; i - lane < len; i += kWarp) c += __popc(__ballot_sync(0xffffffffu, i < len && e_of[i] == e));
            if (lane == 0) count[e] += c;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int at = 0, t = 0;
        for (int e = 0; e < n_expert; ++e) {
            first[e] = at;
            for (int c = 0; c < count[e]; c += kGemmTileTokens)
                g.tiles[t++] = make_int4(e, at + c, min(kGemmTileTokens, count[e] - c), 0);
            at += count[e];
        }
        for (; t < g.max_tiles; ++t) g.tiles[t] = make_int4(0, 0, 0, 0);
    }
    for (int i0 = 0; i0 < m; i0 += kGroupChunk) {
        load_chunk(picks, i0, m, e_of);  // (its first barrier also publishes `first`)
        const int len = min(kGroupChunk, m - i0);
        for (int e = warp; e < n_expert; e += nw) {
            int at = first[e];
            for (int i = lane; i - lane < len; i += kWarp) {
                const bool mine = i < len && e_of[i] == e;
                const unsigned b = __ballot_sync(0xffffffffu, mine);
                if (mine) g.sorted[at + __popc(b & ((1u << lane) - 1u))] = i0 + i;
                at += __popc(b);
            }
            __syncwarp();
            if (lane == 0) first[e] = at;  // where the next chunk's picks of e go
        }
    }
}

__global__ void experts_combine_kernel(const float* o, int n, int width, const ExpertPick* picks, float* x) {
    pdl_wait();
    pdl_launch_dependents();
    for_each_element(n, width, [&](int64_t t, int64_t d, int64_t i) {
        const float w0 = picks[2 * t].weight, w1 = picks[2 * t + 1].weight;
        x[i] += o[2 * t * width + d] * w0 + o[(2 * t + 1) * width + d] * w1;
    });
}

// The CTA's row of the launch (blockIdx.y): swiglu: pick y, of token y / 2,
// both rows of a task from its expert; down: token y, one row from each of
// its two experts. The picks whose experts the two rows come from:
template <bool kDown>
__device__ __forceinline__ void picks_of(const MoeParams& a, ExpertPick& k0, ExpertPick& k1) {
    const int y = blockIdx.y;
    if (kDown) {
        k0 = a.picks[2 * y];
        k1 = a.picks[2 * y + 1];
    } else {
        k0 = k1 = a.picks[y];
    }
}
// its activations' first row (down: the first of two, its picks' rows of h)
template <bool kDown>
__device__ __forceinline__ const float* x_of(const MoeParams& a) {
    return a.p.x + static_cast<int64_t>(kDown ? 2 * blockIdx.y : blockIdx.y / 2) * a.p.K;
}
// The outputs of task `task` (the warp's sums s0, s1), lane 0 only.
template <bool kDown>
__device__ __forceinline__ void moe_write(const MoeParams& a, int task, float s0, float s1, const ExpertPick& k0,
                                          const ExpertPick& k1) {
    float* y = a.p.y + static_cast<int64_t>(blockIdx.y) * a.p.M;
    if (kDown) {
        y[task] += s0 * k0.weight + s1 * k1.weight;
    } else {
        y[task] = silu(s0) * s1;
    }
}

template <class F, bool kDown>
__global__ void __launch_bounds__(kQuantThreads, kQuantMinBlocks) moe_quant(const __grid_constant__ MoeParams a) {
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ float2 red[32];
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, nw = blockDim.x / kWarp;
    using R = QuantRead<F>;
    constexpr int G = R::kGroup, U = R::kInFlight, kTok = kDown ? 2 : 1;
    const MatvecParams& p = a.p;
    const int nblk = p.K / 32, groups = nblk / G;
    const NormVecs nv = norm_into_smem(p, reinterpret_cast<float*>(smem));
    pdl_wait();  // the picks and activations come from the kernels before
    pdl_launch_dependents();
    ExpertPick k0, k1;
    picks_of<kDown>(a, k0, k1);
    const PlanarView v0{a.a.bits[k0.expert], a.a.rest[k0.expert], p.w.nb};
    const PlanarView v1 = kDown ? PlanarView{a.a.bits[k1.expert], a.a.rest[k1.expert], p.w.nb}
                                : PlanarView{a.b.bits[k1.expert], a.b.rest[k1.expert], p.w.nb};

    uint8_t* xs0 = smem + norm_smem_floats(p) * sizeof(float);
    int8_t* xq = reinterpret_cast<int8_t*>(xs0);                // [kTok][K] 8-bit codes
    int* xs = reinterpret_cast<int*>(xs0 + kTok * p.K);         // [kTok][nblk][2] their sums per 16
    float* xd = reinterpret_cast<float*>(xs + 2 * kTok * nblk);  // [kTok][nblk] scales
    MatvecParams px = p;
    px.x = x_of<kDown>(a);
    cp_async_wait<0>();
    for (int t = 0; t < kTok; ++t) stage_q8<G>(px, nv, t, xq, xs, xd, red);
    __syncthreads();

    for (int task = blockIdx.x * nw + warp; task < p.M; task += gridDim.x * nw) {
        float acc0 = 0.0f, acc1 = 0.0f;
        for (int g0 = lane; g0 < groups; g0 += kWarp * U) {
            typename R::Raw raw[U][2];
#pragma unroll
            for (int j = 0; j < U; ++j) {
                const int g = g0 + j * kWarp;
                if (g < groups) {
                    raw[j][0] = R::load(v0, task, g);
                    raw[j][1] = R::load(v1, task, g);
                }
            }
#pragma unroll
            for (int j = 0; j < U; ++j) {
                const int g = g0 + j * kWarp;
                if (g >= groups) break;
#pragma unroll
                for (int s = 0; s < G; ++s) {
                    const int uu = g * G + s, slot = s * groups + g;  // the unit, its staged activations
                    Unit un;
                    R::unpack(raw[j][0], s, uu % F::kUnits, un);
                    acc0 = acc_unit_q8<F>(acc0, un, xq, xs, xd, p.K, nblk, 0, slot);
                    R::unpack(raw[j][1], s, uu % F::kUnits, un);
                    acc1 = acc_unit_q8<F>(acc1, un, xq, xs, xd, p.K, nblk, kTok - 1, slot);
                }
            }
        }
        const float s0 = warp_sum(acc0), s1 = warp_sum(acc1);
        if (lane == 0) moe_write<kDown>(a, task, s0, s1, k0, k1);
    }
}

template <class T, bool kDown>
__global__ void __launch_bounds__(kMatvecThreads, kMatvecMinBlocks) moe_float(const __grid_constant__ MoeParams a) {
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ float2 red[32];
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, nw = blockDim.x / kWarp;
    constexpr int kTok = kDown ? 2 : 1, kVec = 16 / sizeof(T);
    const MatvecParams& p = a.p;
    const NormVecs nv = norm_into_smem(p, reinterpret_cast<float*>(smem));
    pdl_wait();
    pdl_launch_dependents();
    ExpertPick k0, k1;
    picks_of<kDown>(a, k0, k1);
    const uint8_t* w0 = a.a.bits[k0.expert];
    const uint8_t* w1 = kDown ? a.a.bits[k1.expert] : a.b.bits[k1.expert];

    float* xf = reinterpret_cast<float*>(smem + norm_smem_floats(p) * sizeof(float));  // [kTok][K]
    MatvecParams px = p;
    px.x = x_of<kDown>(a);
    cp_async_wait<0>();
    for (int t = 0; t < kTok; ++t) stage_f32(px, nv, t, xf, red);
    __syncthreads();
    const float* x0 = xf;
    const float* x1 = xf + (kTok - 1) * p.K;
    const bool vec = p.row_bytes % 16 == 0 && p.K % kVec == 0;

    for (int task = blockIdx.x * nw + warp; task < p.M; task += gridDim.x * nw) {
        const uint8_t* r0 = w0 + static_cast<int64_t>(task) * p.row_bytes;
        const uint8_t* r1 = w1 + static_cast<int64_t>(task) * p.row_bytes;
        float acc0 = 0.0f, acc1 = 0.0f;
        if (vec) {
#pragma unroll 4
            for (int u = lane; u < p.K / kVec; u += kWarp) {
                acc0 = acc_vec<T>(acc0, ld_u4(r0 + static_cast<int64_t>(u) * 16), x0 + u * kVec);
                acc1 = acc_vec<T>(acc1, ld_u4(r1 + static_cast<int64_t>(u) * 16), x1 + u * kVec);
            }
        } else {
            for (int k = lane; k < p.K; k += kWarp) {
                acc0 += FloatFmt<T>::get(r0, k) * x0[k];
                acc1 += FloatFmt<T>::get(r1, k) * x1[k];
            }
        }
        const float s0 = warp_sum(acc0), s1 = warp_sum(acc1);
        if (lane == 0) moe_write<kDown>(a, task, s0, s1, k0, k1);
    }
}

// The launch: rows[blockIdx.y] of picks (swiglu) or tokens (down), each over
// an even share of the SMs.
template <class Kernel>
bool run_moe(Kernel kernel, const MoeParams& a, int ys, int threads, size_t smem, const Launch& l, int sm_count) {
    if (!allow_smem(kernel, smem)) return false;
    int fit = 0;
    PHI_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, kernel, threads, smem));
    if (fit < 1) return false;
    const int per_row = std::max(1, std::min(ceil_div(a.p.M, threads / kWarp), sm_count * std::min(fit, 4) / ys));
    launch(kernel, dim3(per_row, ys), dim3(threads), smem, l, a);
    return true;
}

// Shared memory of an expert launch: its rows of activations (two for down)
// staged as a decode matvec of that many tokens stages them.
size_t moe_smem(const Tensor& W, const RowNorm& norm, bool down) {
    return staged_bytes(MatmulJob{W, nullptr, down ? 2 : 1, nullptr, nullptr, norm, Epilogue::store});
}

template <class F, bool kDown>
bool run_moe_quant(MoeParams a, int ys, size_t smem, const Launch& l, int sm) {
    a.p.w.nb = a.p.K / F::kBlock;
    for (int i = 0; i < kMoeMaxExperts; ++i) {  // planar: the bits of every row, then the rest
        const int64_t bits_bytes = static_cast<int64_t>(a.p.M) * a.p.w.nb * F::kBits;
        if (a.a.bits[i]) a.a.rest[i] = a.a.bits[i] + bits_bytes;
        if (a.b.bits[i]) a.b.rest[i] = a.b.bits[i] + bits_bytes;
    }
    return run_moe(moe_quant<F, kDown>, a, ys, kQuantThreads, smem, l, sm);
}
template <class T, bool kDown>
bool run_moe_float(const MoeParams& a, int ys, size_t smem, const Launch& l, int sm) {
    return run_moe(moe_float<T, kDown>, a, ys, kMatvecThreads, smem, l, sm);
}

template <bool kDown>
bool run_experts(const Experts& A, const Experts* B, const float* x, int n, const ExpertPick* picks,
                 const RowNorm& norm, float* y, const Launch& l, int sm) {
    MoeParams a;
    const Tensor& W = A.w[0];
    a.p.K = static_cast<int>(W.ne0);
    a.p.M = static_cast<int>(W.ne1);
    a.p.n = n;
    a.p.x = x;
    a.p.y = y;
    a.p.norm = static_cast<int>(norm.kind);
    a.p.nw = norm.w;
    a.p.nb = norm.b;
    a.p.eps = norm.eps;
    a.p.row_bytes = static_cast<int64_t>(W.row_bytes());
    a.picks = picks;
    for (int i = 0; i < A.n; ++i) {
        a.a.bits[i] = static_cast<const uint8_t*>(A.w[i].data);
        if (B) a.b.bits[i] = static_cast<const uint8_t*>(B->w[i].data);
    }
    const int ys = kDown ? n : 2 * n;
    const size_t smem = moe_smem(W, norm, kDown);
    return with_weight_format(
        W.type, [&](auto tag) { return run_moe_float<typename decltype(tag)::type, kDown>(a, ys, smem, l, sm); },
        [&](auto tag) { return run_moe_quant<typename decltype(tag)::type, kDown>(a, ys, smem, l, sm); });
}

// Every expert of a set like `like` (the kernels take one shape and type).
bool uniform(const Experts& e, const Tensor& like) {
    for (int i = 0; i < e.n; ++i)
        if (e.w[i].type != like.type || e.w[i].ne0 != like.ne0 || e.w[i].ne1 != like.ne1 ||
            e.w[i].layout != like.layout)
            return false;
    return true;
}

} // namespace

bool experts_alike(const Experts& A, const Experts* B) {
    if (A.n < 1 || A.n > kMoeMaxExperts || (B && B->n != A.n)) return false;
    const Tensor& W = A.w[0];
    if (!uniform(A, W) || (B && !uniform(*B, W))) return false;
    return W.layout == WeightLayout::rows || W.ne0 % 32 == 0;
}

bool experts_fit(const Experts& A, const Experts* B, const float* x, const RowNorm& norm, bool down) {
    if (A.n < 2 || !experts_alike(A, B)) return false;
    return moe_smem(A.w[0], norm, down) <= kSmemLimit && aligned16(x, norm.w, norm.b);
}

int expert_group_tiles(int n, int n_expert) { return ceil_div(2 * static_cast<int64_t>(n), kGemmTileTokens) + n_expert; }
size_t expert_groups_bytes(int n, int n_expert) {
    return sizeof(int4) * expert_group_tiles(n, n_expert) + sizeof(int) * 2 * static_cast<size_t>(n) + 16;
}
ExpertGroups expert_groups_at(void* mem, int n, int n_expert) {
    ExpertGroups g;
    g.max_tiles = expert_group_tiles(n, n_expert);
    g.tiles = static_cast<int4*>(mem);
    g.sorted = reinterpret_cast<int*>(g.tiles + g.max_tiles);
    return g;
}
void moe_group(const ExpertPick* picks, int n, int n_expert, const ExpertGroups& g, const Launch& l) {
    if (n_expert > kMoeMaxExperts) fail(ErrorKind::unsupported, "at most ", kMoeMaxExperts, " experts on CUDA");
    launch(moe_group_kernel, dim3(1), dim3(kGroupThreads), 0, l, picks, n, n_expert, g);
}
void experts_combine(const float* o, int n, int width, const ExpertPick* picks, float* x, const Launch& l) {
    if (n > 0 && width > 0)
        launch(experts_combine_kernel, dim3(element_ctas(static_cast<int64_t>(n) * width, 4096)), dim3(256), 0, l, o,
               n, width, picks, x);
}

void route_top2(const float* scores, int n, int n_expert, float jitter, ExpertPick* picks, const Launch& l) {
    if (n <= 0) return;
    launch(route_top2_kernel, dim3(ceil_div(n, 128)), dim3(128), 0, l, scores, n, n_expert, jitter, picks);
}

bool experts_swiglu(const Experts& gate, const Experts& up, const float* x, int n, const ExpertPick* picks,
                    const RowNorm& norm, float* h, const Launch& l, int sm_count) {
    return run_experts<false>(gate, &up, x, n, picks, norm, h, l, sm_count);
}

bool experts_down_add(const Experts& down, const float* h, int n, const ExpertPick* picks, float* x, const Launch& l,
                      int sm_count) {
    return run_experts<true>(down, nullptr, h, n, picks, RowNorm{}, x, l, sm_count);
}

} // namespace phi::cuda
