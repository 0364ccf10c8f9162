// Decode matmuls: y = epilogue(norm(x) . W^T + bias) for up to
// kMatvecMaxTokens tokens, in one kernel per matmul.
//
// Each CTA first stages the activations in shared memory (matvec_stage.cuh),
// then its warps stream weight rows, two rows (for SwiGLU, a gate row and its
// up row) at a time: quantized weights a warp per pair of rows, each lane a
// strided set of groups of 32-element units (QuantRead) dotted with dp4a
// against the 8-bit activations (matvec_quant); float weights as even streams
// of 16-byte steps over all warps (matvec_steps). What a kernel reads besides the activations
// is requested before it waits for the kernel before it (PDL), or right after.
#include <algorithm>
#include <type_traits>

#include "backend/cuda/matvec_stage.cuh"

namespace phi::cuda {
namespace {

// acc plus the dot products of group g (R::kGroup units) of a task's two rows,
// loaded in raw, with the staged 8-bit activations of every token.
template <class F, int kMaxTok>
__device__ __forceinline__ void acc_group(const MatvecParams& p, const typename QuantRead<F>::Raw (&raw)[2], int g,
                                          int groups, int nblk, const int8_t* xq, const int* xs, const float* xd,
                                          float (&acc)[2][kMaxTok]) {
    using R = QuantRead<F>;
#pragma unroll
    for (int s = 0; s < R::kGroup; ++s) {
        const int uu = g * R::kGroup + s;  // the unit in the row
        const int slot = s * groups + g;   // = unit_slot<kGroup>(uu): its staged activations
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            Unit un;
            R::unpack(raw[i], s, uu % F::kUnits, un);
#pragma unroll
            for (int t = 0; t < kMaxTok; ++t) {
                if (past_tokens<kMaxTok>(p, t)) break;
                acc[i][t] = acc_unit_q8<F>(acc[i][t], un, xq, xs, xd, p.K, nblk, t, slot);
            }
        }
    }
}

// Quantized weights: a warp per task. kMaxTok: tokens the accumulators are
// sized for (1: decode's own build, lean in registers).
template <class F, int kMaxTok>
__global__ void __launch_bounds__(kQuantThreads, kQuantMinBlocks) matvec_quant(MatvecParams p) {
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ float2 red[32];
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, nw = blockDim.x / kWarp;
    using R = QuantRead<F>;
    constexpr int G = R::kGroup, U = R::kInFlight;  // units per load; loads in flight per row and lane
    const int nblk = p.K / 32;  // units (32-element blocks) per row
    const int groups = nblk / G;
    int task = blockIdx.x * nw + warp;
    int r[2];
    bool has1;
    // Weights never change: this warp's first units go into registers (and the
    // rest of its first rows into L2), its rows' bias and the norm's weights
    // load, all before waiting for the kernel before.
    typename R::Raw raw[U][2];
    TaskIn in;
    bool preloaded = task < p.tasks;
    if (task < p.tasks) {
        task_rows(p, task, r[0], r[1], has1);
#pragma unroll
        for (int j = 0; j < U; ++j) {
            const int g = lane + j * kWarp;
            if (g < groups) {
                raw[j][0] = R::load(p.w, r[0], g);
                raw[j][1] = R::load(p.w, r[1], g);
            }
        }
        load_bias(p, task, in);
        prefetch_rows(p.w.bits + r[0] * p.w.nb * F::kBits, p.w.bits + r[1] * p.w.nb * F::kBits, p.w.nb * F::kBits);
    }
    const NormVecs nv = norm_into_smem(p, reinterpret_cast<float*>(smem));
    pdl_wait();
    pdl_launch_dependents();
    if (task < p.tasks) load_added(p, task, in);

    uint8_t* xs0 = smem + norm_smem_floats(p) * sizeof(float);
    int8_t* xq = reinterpret_cast<int8_t*>(xs0);                 // [n][K] 8-bit codes
    int* xs = reinterpret_cast<int*>(xs0 + p.n * p.K);           // [n][nblk][2] their sums per 16
    float* xd = reinterpret_cast<float*>(xs + 2 * p.n * nblk);   // [n][nblk] scales
    cp_async_wait<0>();
    for (int t = 0; t < p.n; ++t) stage_q8<G>(p, nv, t, xq, xs, xd, red);
    __syncthreads();

    for (bool first = true; task < p.tasks; task += gridDim.x * nw, first = false) {
        task_rows(p, task, r[0], r[1], has1);
        if (!first) {
            in = TaskIn{};
            load_bias(p, task, in);
            load_added(p, task, in);
        }
        float acc[2][kMaxTok];
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int t = 0; t < kMaxTok; ++t) acc[i][t] = 0.0f;
        for (int g0 = lane; g0 < groups; g0 += kWarp * U) {
            if (!preloaded) {
#pragma unroll
                for (int j = 0; j < U; ++j) {
                    const int g = g0 + j * kWarp;
                    if (g < groups) {
                        raw[j][0] = R::load(p.w, r[0], g);
                        raw[j][1] = R::load(p.w, r[1], g);
                    }
                }
            }
            preloaded = false;
#pragma unroll
            for (int j = 0; j < U; ++j) {
                const int g = g0 + j * kWarp;
                if (g >= groups) break;
                acc_group<F, kMaxTok>(p, raw[j], g, groups, nblk, xq, xs, xd, acc);
            }
        }
        preloaded = false;  // (a lane past the row's units loaded nothing)
#pragma unroll
        for (int t = 0; t < kMaxTok; ++t) {
            if (past_tokens<kMaxTok>(p, t)) break;
            const float v0 = warp_sum(acc[0][t]), v1 = warp_sum(acc[1][t]);
            if (lane == t) write_out(p, task, t, v0, v1, in);
        }
    }
}

// The same with the loads software-pipelined: a warp's work is a sequence of
// chunks (a task's next kWarp * U groups, or the next task's first), and the
// next chunk's loads are issued before the current one is computed, reduced
// and written, so a warp always has a chunk's bytes in flight (matvec_quant
// issues a task's loads only after the previous task's sums are written: a
// round trip to memory per task in series). Two buffers of half as many
// groups: the same registers in flight as matvec_quant. For the formats whose
// QuantRead says kPipe: Q4_K (Phi-3-mini's 128 decode matmuls, H200,
// tools/matvec_bench.cu: 1177 -> 1037 us; Q4_K_M tg128 605-613 -> 632-645 t/s).
// Measured and left off: Q4_0 (907 against 931 us, but tg128 within noise:
// wo and down, one task per warp, lost what qkv and gate_up gained), Q8_0
// (its three loads in flight became one per buffer, and spills: 1266 -> 1416).
template <class F, int kMaxTok>
__global__ void __launch_bounds__(kQuantThreads, kQuantMinBlocks) matvec_quant_pipe(MatvecParams p) {
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ float2 red[32];
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, nw = blockDim.x / kWarp;
    using R = QuantRead<F>;
    constexpr int G = R::kGroup, U = R::kInFlight / 2;  // groups per load; loads per buffer, row and lane
    static_assert(U >= 1, "two buffers of at least one load");
    const int nblk = p.K / 32;
    const int groups = nblk / G;
    const int stride = gridDim.x * nw, step = kWarp * U;
    using Buf = typename R::Raw[U][2];
    const auto load_chunk = [&](Buf& b, int task, int g0) {
        int r0, r1;
        bool has1;
        task_rows(p, task, r0, r1, has1);
#pragma unroll
        for (int j = 0; j < U; ++j) {
            const int g = g0 + lane + j * kWarp;
            if (g < groups) {
                b[j][0] = R::load(p.w, r0, g);
                b[j][1] = R::load(p.w, r1, g);
            }
        }
    };
    int task = blockIdx.x * nw + warp, g0 = 0;
    Buf cur, nxt;
    TaskIn in;
    // weights never change: the first chunk loads before waiting for the kernel
    // before (loading the second there too measured slower: Q4_K chain 1037 ->
    // 1156 us, Q4_0 907 -> 977)
    if (task < p.tasks) {
        load_chunk(cur, task, 0);
        load_bias(p, task, in);
    }
    const NormVecs nv = norm_into_smem(p, reinterpret_cast<float*>(smem));
    pdl_wait();
    pdl_launch_dependents();
    if (task < p.tasks) load_added(p, task, in);

    uint8_t* xs0 = smem + norm_smem_floats(p) * sizeof(float);
    int8_t* xq = reinterpret_cast<int8_t*>(xs0);
    int* xs = reinterpret_cast<int*>(xs0 + p.n * p.K);
    float* xd = reinterpret_cast<float*>(xs + 2 * p.n * nblk);
    cp_async_wait<0>();
    for (int t = 0; t < p.n; ++t) stage_q8<G>(p, nv, t, xq, xs, xd, red);
    __syncthreads();

    float acc[2][kMaxTok];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int t = 0; t < kMaxTok; ++t) acc[i][t] = 0.0f;
    while (task < p.tasks) {
        int ntask = task, ng0 = g0 + step;  // the next chunk: this task's next groups, or the next task's first
        if (ng0 >= groups) {
            ntask = task + stride;
            ng0 = 0;
        }
        if (ntask < p.tasks) load_chunk(nxt, ntask, ng0);
#pragma unroll
        for (int j = 0; j < U; ++j) {
            const int g = g0 + lane + j * kWarp;
            if (g >= groups) break;
            acc_group<F, kMaxTok>(p, cur[j], g, groups, nblk, xq, xs, xd, acc);
        }
        if (ng0 == 0) {  // the task's last chunk: its sums out, the next task's epilogue inputs in
#pragma unroll
            for (int t = 0; t < kMaxTok; ++t) {
                if (past_tokens<kMaxTok>(p, t)) break;
                const float v0 = warp_sum(acc[0][t]), v1 = warp_sum(acc[1][t]);
                acc[0][t] = acc[1][t] = 0.0f;
                if (lane == t) write_out(p, task, t, v0, v1, in);
            }
            if (ntask < p.tasks) {
                in = TaskIn{};
                load_bias(p, ntask, in);
                load_added(p, ntask, in);
            }
        }
#pragma unroll
        for (int j = 0; j < U; ++j) {
            cur[j][0] = nxt[j][0];
            cur[j][1] = nxt[j][1];
        }
        task = ntask;
        g0 = ng0;
    }
}

// ---- Float weights: even streams of steps
//
// A task's rows (two rows, or a gate row and its up row) are cut into *steps*
// of 32 16-byte vectors (single elements where rows are not 16-byte
// multiples), one per lane. CTA c takes the tasks [tb, te) of an even split
// of all tasks over the grid, and its warps split the CTA's steps evenly,
// each warp a contiguous run that may begin or end inside a task, so every SM
// streams the same number of bytes however few rows the matrix has (the
// 3072-row matrices of Phi-3-mini left part of the GPU idle as a warp per
// task). A warp keeps kDepth steps' loads in flight (a step is consumed, then
// its registers load the step kDepth ahead); its first kDepth steps are
// loaded before the PDL wait. A task split between warps is summed in shared
// memory, in warp order, by the warp that holds its first segment: the sums
// depend on the grid, which does not depend on the number of tokens.
// Quantized weights stay with matvec_quant: for them this kernel measured
// slower (its per-step bookkeeping costs more than the balance gains when
// each 32-unit step is dense arithmetic).

constexpr int kMaxWarps = 16;

template <class T, int kVec>
struct FloatSteps {
    using Raw = typename std::conditional<kVec == 1, float, uint4>::type;
    __device__ static int units(const MatvecParams& p) { return p.K / kVec; }
    __device__ static Raw load(const MatvecParams& p, int row, int u) {
        const uint8_t* r = p.wf + static_cast<int64_t>(row) * p.row_bytes;
        if constexpr (kVec == 1) {
            return FloatFmt<T>::get(r, u);
        } else {
            return ld_u4(r + static_cast<int64_t>(u) * 16);
        }
    }
    template <int kMaxTok>
    __device__ static void accumulate(const MatvecParams& p, const float* xf, const Raw& r, int u, float (&acc)[kMaxTok]) {
#pragma unroll
        for (int t = 0; t < kMaxTok; ++t) {
            if (past_tokens<kMaxTok>(p, t)) break;
            if constexpr (kVec == 1) {
                acc[t] += r * xf[t * p.K + u];
            } else {
                acc[t] = acc_vec<T>(acc[t], r, xf + t * p.K + u * kVec);
            }
        }
    }
};

// This CTA's first task, and this warp's steps [sb, se) counted from it.
struct StepSplit {
    int tb = 0, sb = 0, se = 0, n = 0;  // n: the CTA's steps
};
__device__ __forceinline__ int split_at(int n, int i, int parts) {
    return static_cast<int>(static_cast<int64_t>(n) * i / parts);
}
__device__ __forceinline__ StepSplit split_steps(int tasks, int G, int warp, int nw) {
    StepSplit s;
    s.tb = split_at(tasks, blockIdx.x, gridDim.x);
    s.n = (split_at(tasks, blockIdx.x + 1, gridDim.x) - s.tb) * G;
    s.sb = split_at(s.n, warp, nw);
    s.se = split_at(s.n, warp + 1, nw);
    return s;
}

template <class S, int kMaxTok, int kDepth>
__global__ void __launch_bounds__(kMatvecThreads, kMatvecMinBlocks) matvec_steps(MatvecParams p) {
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ float2 red[32];
    __shared__ float part[kMaxWarps][2][2][kMaxTok];  // [warp][first, last task][row][token]: split tasks
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, nw = blockDim.x / kWarp;
    const int units = S::units(p), G = (units + kWarp - 1) / kWarp;
    const StepSplit sp = split_steps(p.tasks, G, warp, nw);
    const int nsteps = sp.se - sp.sb;
    typename S::Raw raw[kDepth][2];
    int lt = sp.sb / G, lg = sp.sb % G;  // the next step to load: task (from tb), step in it
    auto load_step = [&](typename S::Raw(&r)[2]) {
        const int u = lg * kWarp + lane;
        if (u < units) {
            int r0, r1;
            bool has1;
            task_rows(p, sp.tb + lt, r0, r1, has1);
            r[0] = S::load(p, r0, u);
            r[1] = S::load(p, r1, u);
        }
        if (++lg == G) {
            lg = 0;
            ++lt;
        }
    };
    // weights never change: the first steps, the first task's bias and the
    // norm's weights load before waiting for the kernel before
#pragma unroll
    for (int j = 0; j < kDepth; ++j)
        if (j < nsteps) load_step(raw[j]);
    const int first_task = sp.sb / G;
    int ct = first_task, cg = sp.sb % G;  // the step being consumed
    TaskIn in;  // of the task this warp writes (whole, or as the one that combines it)
    if (nsteps > 0 && cg == 0) load_bias(p, sp.tb + ct, in);
    const NormVecs nv = norm_into_smem(p, reinterpret_cast<float*>(smem));
    pdl_wait();
    pdl_launch_dependents();
    if (nsteps > 0 && cg == 0) load_added(p, sp.tb + ct, in);
    float* xf = reinterpret_cast<float*>(smem) + norm_smem_floats(p);  // [n][K]
    cp_async_wait<0>();
    for (int t = 0; t < p.n; ++t) stage_f32(p, nv, t, xf, red);
    __syncthreads();

    bool from_start = cg == 0;  // the current segment began at its task's first step
    float acc[2][kMaxTok];
#pragma unroll
    for (int t = 0; t < kMaxTok; ++t) acc[0][t] = acc[1][t] = 0.0f;
    for (int s0 = 0; s0 < nsteps; s0 += kDepth) {
#pragma unroll
        for (int j = 0; j < kDepth; ++j) {
            const int s = s0 + j;
            if (s >= nsteps) break;
            if (cg == 0 && s > 0) {
                in = TaskIn{};
                load_bias(p, sp.tb + ct, in);
                load_added(p, sp.tb + ct, in);
            }
            const int u = cg * kWarp + lane;
            if (u < units) {
                S::template accumulate<kMaxTok>(p, xf, raw[j][0], u, acc[0]);
                S::template accumulate<kMaxTok>(p, xf, raw[j][1], u, acc[1]);
            }
            if (s + kDepth < nsteps) load_step(raw[j]);
            if (cg == G - 1 || s == nsteps - 1) {
                // a segment ends: a whole task is stored, part of one kept for the combine
                const bool whole = from_start && cg == G - 1;
                const int slot = ct == first_task ? 0 : 1;
#pragma unroll
                for (int t = 0; t < kMaxTok; ++t) {
                    if (past_tokens<kMaxTok>(p, t)) break;
                    const float v0 = warp_sum(acc[0][t]), v1 = warp_sum(acc[1][t]);
                    acc[0][t] = acc[1][t] = 0.0f;
                    if (lane != t) continue;
                    if (whole) {
                        write_out(p, sp.tb + ct, t, v0, v1, in);
                    } else {
                        part[warp][slot][0][t] = v0;
                        part[warp][slot][1][t] = v1;
                    }
                }
                from_start = true;
            }
            if (++cg == G) {
                cg = 0;
                ++ct;
            }
        }
    }
    __syncthreads();
    // a task split between warps: the warp with its first segment adds the others in order
    const int last_task = (sp.se - 1) / G, end = (last_task + 1) * G;
    if (nsteps > 0 && max(sp.sb, last_task * G) == last_task * G && sp.se != end && lane < p.n) {
        const int t = lane;
        const int slot = last_task == first_task ? 0 : 1;
        float v0 = part[warp][slot][0][t], v1 = part[warp][slot][1][t];
        for (int w = warp + 1; w < nw; ++w) {
            const int wb = split_at(sp.n, w, nw);
            if (wb >= end) break;
            if (wb == split_at(sp.n, w + 1, nw)) continue;  // a warp without steps
            v0 += part[w][0][0][t];
            v1 += part[w][0][1][t];
        }
        write_out(p, sp.tb + last_task, t, v0, v1, in);
    }
}

// matvec_quant: one wave (as many CTAs as fit, each stages the activations once), or fewer.
// balance: where a warp has several rounds of tasks, as few warps a CTA as keep their number
// (qkv of Phi-3-mini: 4,608 tasks, 2.18 rounds of 16 warps on 132 SMs, become 2.91 rounds of
// 12), so the last round is fuller. A task's dot products are the same; a fused norm's sums run
// over the CTA's threads, so their order follows the warps (a token alone and in a batch still
// agree bit for bit: the warps depend on the rows, not the tokens). Measured (H100,
// Phi-3-mini's 128 matmuls, tools/matvec_bench.cu, docs/BENCHMARKS.md): qkv alone 4-11% faster
// in every format, but the chain only for the pipelined kernel (Q4_K 1104 -> 1081 us; Q4_0
// 1054 -> 1052, Q8_0 1543 -> 1553, Q6_K unchanged; likely because the SMs a short last round
// leaves idle already start the next kernel under PDL), so the others keep 16 warps. On by
// default; PHICPP_CUDA_MV_BALANCE=0 turns it off (its test: test_backend_ops.py,
// test_cuda_matmul_fewer_warps_fuller_rounds).
template <class Kernel>
bool run_wave(Kernel kernel, const MatvecParams& p, size_t smem, const Launch& l, int sm_count,
              const MatvecConfig& cfg, bool balance) {
    if (!allow_smem(kernel, smem)) return false;
    int warps = std::max(1, std::min(kQuantThreads / kWarp, cfg.quant_warps));
    int fit = 0;
    PHI_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, kernel, warps * kWarp, smem));
    const int slots = sm_count * std::max(1, std::min(fit, cfg.ctas_per_sm));  // CTAs resident at once
    if (balance) {
        const int rounds = ceil_div(p.tasks, slots * warps);
        if (rounds >= 2) warps = ceil_div(p.tasks, slots * rounds);
    }
    const int ctas = std::max(1, std::min(ceil_div(p.tasks, warps), slots));
    launch(kernel, dim3(ctas), dim3(warps * kWarp), smem, l, p);
    return true;
}

// matvec_steps: a grid that does not depend on the number of tokens (nor on
// what fits at once), so a task's sums do not either
template <class Kernel>
bool run_fixed(Kernel kernel, const MatvecParams& p, size_t smem, const Launch& l, int sm_count,
               const MatvecConfig& cfg) {
    if (!allow_smem(kernel, smem)) return false;
    const int warps = std::max(1, std::min(kMaxWarps, cfg.warps));
    const int ctas = std::max(1, std::min(p.tasks, sm_count * std::max(1, std::min(kMatvecMinBlocks, cfg.ctas_per_sm))));
    launch(kernel, dim3(ctas), dim3(warps * kWarp), smem, l, p);
    return true;
}

template <class F>
void set_planar(MatvecParams& p, const Tensor& W) {
    p.w.nb = W.ne0 / F::kBlock;
    p.w.bits = static_cast<const uint8_t*>(W.data);
    p.w.rest = p.w.bits + W.ne1 * p.w.nb * F::kBits;
}

template <class F>
bool run_quant(MatvecParams p, const MatmulJob& j, const Launch& l, int sm, const MatvecConfig& cfg) {
    set_planar<F>(p, j.W);
    if constexpr (QuantRead<F>::kPipe) {
        if (cfg.pipe) {
            if (p.n == 1) return run_wave(matvec_quant_pipe<F, 1>, p, staged_bytes(j), l, sm, cfg, cfg.balance);
            return run_wave(matvec_quant_pipe<F, kMatvecMaxTokens>, p, staged_bytes(j), l, sm, cfg, cfg.balance);
        }
    }
    if (p.n == 1) return run_wave(matvec_quant<F, 1>, p, staged_bytes(j), l, sm, cfg, false);
    return run_wave(matvec_quant<F, kMatvecMaxTokens>, p, staged_bytes(j), l, sm, cfg, false);
}

// Float weights: their rows, and whether 16-byte vectors of kVec elements tile them.
void set_rows(MatvecParams& p, const Tensor& W) {
    p.wf = static_cast<const uint8_t*>(W.data);
    p.row_bytes = static_cast<int64_t>(W.row_bytes());
}
bool rows_in_vectors(const MatvecParams& p, int kVec) { return p.row_bytes % 16 == 0 && p.K % kVec == 0; }

template <class T>
bool run_float(MatvecParams p, const MatmulJob& j, const Launch& l, int sm, const MatvecConfig& cfg) {
    set_rows(p, j.W);
    const size_t smem = staged_bytes(j);
    constexpr int kVec = 16 / sizeof(T);
    if (rows_in_vectors(p, kVec)) {
        using S = FloatSteps<T, kVec>;
        if (p.n == 1) return run_fixed(matvec_steps<S, 1, 4>, p, smem, l, sm, cfg);
        return run_fixed(matvec_steps<S, kMatvecMaxTokens, 4>, p, smem, l, sm, cfg);
    }
    return run_fixed(matvec_steps<FloatSteps<T, 1>, kMatvecMaxTokens, 4>, p, smem, l, sm, cfg);
}

} // namespace

bool aligned16(const void* a, const void* b, const void* c) {
    return ((reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b) | reinterpret_cast<uintptr_t>(c)) & 15) == 0;
}

bool matvec_takes(const MatmulJob& j) {
    return j.n <= kMatvecMaxTokens && staged_bytes(j) <= kSmemLimit && aligned16(j.x, j.norm.w, j.norm.b);
}

bool matvec(const MatmulJob& j, const Launch& l, int sm_count, const MatvecConfig& cfg) {
    if (!matvec_takes(j)) return false;
    const MatvecParams p = matvec_params(j);
    return with_weight_format(
        j.W.type,
        [&](auto tag) { return run_float<typename decltype(tag)::type>(p, j, l, sm_count, cfg); },
        [&](auto tag) { return run_quant<typename decltype(tag)::type>(p, j, l, sm_count, cfg); });
}

} // namespace phi::cuda
