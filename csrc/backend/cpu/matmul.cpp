// Matrix products on the CPU: picks the kernel for the weight type and the
// selected ISA, converts the activations once per call (to Q8 blocks for
// quantized weights), and splits output rows over the thread pool.
#include "backend/cpu/matmul.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/kernels.h"
#include "core/error.h"
#include "quant/quant.h"
#include "quant/repack.h"

namespace phi::cpu {

namespace {

// Dequantizer for weight types without a SIMD one: the scalar reference.
void dequantize_range_reference(DType t, const uint8_t* w, size_t w_stride, int64_t r, int64_t k0, int64_t n,
                                float* dst) {
    quant::dequantize_row(t, w + r * w_stride + row_bytes(t, k0), dst, n);
}

const KernelTable& table_for(Isa isa) {
    switch (isa) {
        case Isa::amx: return kernels_amx();
        case Isa::avx512: return kernels_avx512();
        case Isa::avxvnni: return kernels_avxvnni();
        case Isa::avx2: return kernels_avx2();
        default: return kernels_scalar();
    }
}

// The kernel of the strongest ISA <= isa that has one; `entry` reads it from a table.
template <class Entry>
auto pick(Isa isa, Entry entry) {
    for (int i = static_cast<int>(isa); i >= 0; --i)
        if (const auto f = entry(table_for(static_cast<Isa>(i)))) return f;
    return decltype(entry(table_for(isa))){nullptr};
}

struct Job {
    RowsKernel rows;
    MatmulArgs args;
};

struct QuantJob {
    QuantizeRowFn fn;
    const float* x;
    int64_t K;
    uint8_t* dst;
    size_t stride;
};

// Packs n activation rows of K floats into tiles of T tokens, k-major
// ([tile][K][T]), zero-filling the last tile's missing tokens.
template <int T>
void pack_activations(const float* x, int64_t K, int n, int tile0, int tile1, float* xp) {
    for (int j = tile0; j < tile1; ++j) {
        float* dst = xp + static_cast<int64_t>(j) * K * T;
        const int valid = std::min(T, n - j * T);
        const float* src[T];
        for (int t = 0; t < T; ++t) src[t] = x + static_cast<int64_t>(j * T + std::min(t, valid - 1)) * K;
        for (int64_t k = 0; k < K; ++k)
            for (int t = 0; t < T; ++t) dst[k * T + t] = t < valid ? src[t][k] : 0.0f;
    }
}

struct GemmJob {
    GemmKernel gemm;
    GemmArgs args;
};

// Whether the environment variable `name` is "0" (a GEMM turned off, for comparisons).
bool env_off(const char* name) {
    const char* env = std::getenv(name);
    return env && std::string(env) == "0";
}
// PHICPP_GEMM_I8=0 keeps quantized prefill off the int8 GEMM (on the f32 one),
// PHICPP_GEMM_BF16=0 off the AMX-BF16 tiles (on the int8 GEMM); each read once
bool gemm_i8_enabled() {
    static const bool on = !env_off("PHICPP_GEMM_I8");
    return on;
}
bool gemm_bf16_enabled() {
    static const bool on = !env_off("PHICPP_GEMM_BF16");
    return on;
}

// A table's kernel for W: by_type[W.type] in the file layout, x8 for repacked Q4_0.
template <class Kernel>
Kernel kernel_for(const Tensor& W, Kernel const (&by_type)[kNumTypes], Kernel x8) {
    const int id = static_cast<int>(W.type);
    if (W.layout == WeightLayout::q4_0_x8) return x8;
    return id < kNumTypes && W.layout == WeightLayout::rows ? by_type[id] : nullptr;
}

// The int8 GEMM for W on `isa` (its own table only: a weaker ISA's int8 GEMM
// loses to this ISA's f32 one), or null.
GemmI8Kernel gemm_i8_kernel(const Tensor& W, Isa isa) {
    const KernelTable& t = table_for(isa);
    return kernel_for(W, t.gemm_i8, t.gemm_i8_q4_0_x8);
}

// The bf16 tile GEMM for quantized W on `isa` (its own table only), or null.
GemmKernel gemm_bf16_kernel(const Tensor& W, Isa isa) {
    const KernelTable& t = table_for(isa);
    return kernel_for(W, t.gemm_bf16, t.gemm_bf16_q4_0_x8);
}

} // namespace

PrefillPath prefill_path(const Tensor& W, int n, Isa isa) {
    if (n < kGemmMinTokens) return PrefillPath::rows;
    if (gemm_bf16_enabled() && gemm_bf16_kernel(W, isa)) return PrefillPath::gemm_bf16;
    if (gemm_i8_enabled() && gemm_i8_kernel(W, isa)) return PrefillPath::gemm_i8;
    const KernelTable& t = table_for(isa);
    const int id = static_cast<int>(W.type);
    if (!t.gemm || id >= kNumTypes || !quant::can_dequantize(W.type)) return PrefillPath::rows;
    // the interleaved layout stays on its 8-bit row kernel (faster than the f32 GEMM, see q4_0_x8_x86_impl.h)
    return W.layout == WeightLayout::q4_0_x8 ? PrefillPath::rows : PrefillPath::gemm_f32;
}

bool gemm_applies(const Tensor& W, int n, Isa isa) { return prefill_path(W, n, isa) == PrefillPath::gemm_f32; }

namespace {

struct GemmI8Job {
    GemmI8Kernel gemm;
    GemmI8Args args;
};

// The int8 GEMM: activations quantized and packed into tiles (split over the
// threads by tile), then row blocks in dynamic order.
void matmul_gemm_i8(const Tensor& W, const float* x, int n, float* y, const float* bias, ThreadPool& pool, Isa isa) {
    const KernelTable& t = table_for(isa);
    const int64_t K = W.ne0;
    const int L = t.gemm_i8_tile_tokens;
    const int tiles = (n + L - 1) / L;
    const I8ActSpec spec =
        W.layout == WeightLayout::q4_0_x8 ? t.gemm_i8_q4_0_x8_acts : t.gemm_i8_acts[static_cast<int>(W.type)];
    // one byte arena per calling thread (grows only: no allocation once warm),
    // laid out scales | offset sums | sums | codes, each part 4-byte aligned
    const size_t d_bytes = static_cast<size_t>(tiles) * L * (K / quant::QK) * sizeof(float);
    const size_t g_bytes = static_cast<size_t>(tiles) * L * (K / spec.group) * sizeof(float);
    const size_t c_bytes = spec.off ? g_bytes : 0, s_bytes = spec.mins ? g_bytes : 0;
    const size_t q_bytes = static_cast<size_t>(tiles) * L * K;
    thread_local std::vector<uint8_t> arena;
    if (arena.size() < d_bytes + c_bytes + s_bytes + q_bytes) arena.resize(d_bytes + c_bytes + s_bytes + q_bytes);
    uint8_t* base = arena.data();
    float* xd = reinterpret_cast<float*>(base);
    int32_t* xc = spec.off ? reinterpret_cast<int32_t*>(base + d_bytes) : nullptr;
    float* xs = spec.mins ? reinterpret_cast<float*>(base + d_bytes + c_bytes) : nullptr;
    int8_t* xq = reinterpret_cast<int8_t*>(base + d_bytes + c_bytes + s_bytes);
    const PackI8Fn pack = t.pack_i8;
    pool.parallel_for(tiles, 1, [&](int64_t j0, int64_t j1) {
        pack(x, K, n, spec.group, spec.off, static_cast<int>(j0), static_cast<int>(j1), xq, xd, xc, xs);
    });
    GemmI8Job job{gemm_i8_kernel(W, isa), GemmI8Args{}};
    GemmI8Args& a = job.args;
    a.w = static_cast<const uint8_t*>(W.data);
    a.w_stride = W.row_bytes();
    a.K = K;
    a.xq = xq;
    a.xd = xd;
    a.xc = xc;
    a.xs = xs;
    a.n = n;
    a.y = y;
    a.ldy = W.ne1;
    a.bias = bias;
    const GemmI8Job* jp = &job;
    pool.parallel_for_dynamic(W.ne1, t.gemm_i8_row_block, [jp](int64_t r0, int64_t r1) { jp->gemm(jp->args, r0, r1); });
}

// What a GemmKernel reads of W and the call (the packed activations aside).
GemmArgs gemm_args(const Tensor& W, int n, float* y, const float* bias) {
    GemmArgs a;
    a.w = static_cast<const uint8_t*>(W.data);
    a.w_stride = W.row_bytes();
    a.K = W.ne0;
    a.type = W.type;
    a.n = n;
    a.y = y;
    a.ldy = W.ne1;
    a.bias = bias;
    return a;
}

// The bf16 tile GEMM: activations rounded and packed into tiles (split over
// the threads by tile), then row blocks in dynamic order.
void matmul_gemm_bf16(const Tensor& W, const float* x, int n, float* y, const float* bias, ThreadPool& pool, Isa isa) {
    const KernelTable& t = table_for(isa);
    const int64_t K = W.ne0;
    constexpr int L = kBf16TileTokens;
    const int tiles = (n + L - 1) / L;
    // grows only (no allocation once warm); 64-byte aligned: a tile row that
    // straddles two cache lines made the tile loads several times slower
    thread_local std::vector<uint16_t> packed;
    const size_t need = static_cast<size_t>(tiles) * L * K + 32;
    if (packed.size() < need) packed.resize(need);
    uint16_t* xb = packed.data() + (64 - reinterpret_cast<uintptr_t>(packed.data()) % 64) % 64 / sizeof(uint16_t);
    const PackBf16Fn pack = t.pack_bf16;
    pool.parallel_for(tiles, 1, [&](int64_t j0, int64_t j1) {
        pack(x, K, n, static_cast<int>(j0), static_cast<int>(j1), xb);
    });
    GemmJob job{gemm_bf16_kernel(W, isa), gemm_args(W, n, y, bias)};
    job.args.xb = xb;
    const GemmJob* jp = &job;
    pool.parallel_for_dynamic(W.ne1, t.gemm_bf16_row_block, [jp](int64_t r0, int64_t r1) { jp->gemm(jp->args, r0, r1); });
}

// The GEMM paths, when one applies; returns false to use the row kernels.
bool matmul_gemm(const Tensor& W, const float* x, int n, float* y, const float* bias, ThreadPool& pool, Isa isa) {
    const PrefillPath path = prefill_path(W, n, isa);
    if (path == PrefillPath::gemm_i8) {
        matmul_gemm_i8(W, x, n, y, bias, pool, isa);
        return true;
    }
    if (path == PrefillPath::gemm_bf16) {
        matmul_gemm_bf16(W, x, n, y, bias, pool, isa);
        return true;
    }
    if (path != PrefillPath::gemm_f32) return false;
    const KernelTable& t = table_for(isa);
    const int id = static_cast<int>(W.type);
    const int64_t K = W.ne0;
    const int T = t.gemm_tile_tokens;
    if (T != 8 && T != 16) fail(ErrorKind::generic, "GEMM tile of ", T, " tokens");
    const int tiles = (n + T - 1) / T;
    thread_local std::vector<float> packed;  // grows only: no allocation once warm
    const size_t need = static_cast<size_t>(tiles) * T * K;
    if (packed.size() < need) packed.resize(need);
    float* xp = packed.data();
    pool.parallel_for(tiles, 1, [&](int64_t j0, int64_t j1) {
        if (T == 8) pack_activations<8>(x, K, n, static_cast<int>(j0), static_cast<int>(j1), xp);
        else pack_activations<16>(x, K, n, static_cast<int>(j0), static_cast<int>(j1), xp);
    });

    GemmJob job{t.gemm, gemm_args(W, n, y, bias)};
    job.args.dequant = t.dequant[id] ? t.dequant[id] : dequantize_range_reference;
    job.args.xp = xp;
    const GemmJob* jp = &job;
    pool.parallel_for_dynamic(W.ne1, t.gemm_row_block, [jp](int64_t r0, int64_t r1) { jp->gemm(jp->args, r0, r1); });
    return true;
}

} // namespace

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
    quant::dequantize_row(type, src, dst, n);
}

bool layout_fits(const Tensor& W, WeightLayout layout) {
    if (layout == WeightLayout::rows) return true;
    if (layout == WeightLayout::planar) return quant::planar_fits(W.type);
    // q4_0_x8: whole groups of 8 rows of whole blocks
    return W.type == DType::Q4_0 && W.ne1 > 0 && W.ne1 % quant::kQ4_0x8Rows == 0 && W.ne0 > 0 && W.ne0 % quant::QK == 0;
}

bool weights_copied() {
    // read once: a setting of the process's environment, not state
    static const bool copied = [] {
        const char* env = std::getenv("PHICPP_REPACK");
        return !(env && std::string(env) == "0");
    }();
    return copied;
}

WeightLayout preferred_layout(const Tensor& W, Isa isa) {
    // only where a SIMD kernel exists: the scalar one gathers rows back and is slower
    const bool simd = weights_copied() && isa != Isa::scalar && table_for(isa).rows_q4_0_x8;
    if (simd && W.layout == WeightLayout::rows && layout_fits(W, WeightLayout::q4_0_x8)) return WeightLayout::q4_0_x8;
    return WeightLayout::rows;
}

Tensor repack_weight(const Tensor& W, WeightLayout layout, void* dst, ThreadPool& pool) {
    quant::check_row_length(W.type, W.ne0);
    if (W.layout != WeightLayout::rows || layout != WeightLayout::q4_0_x8 || !layout_fits(W, layout))
        fail(ErrorKind::invalid_arg, "cannot repack a ", dtype_name(W.type), " [", W.ne1, " x ", W.ne0,
             "] weight into the q4_0_x8 layout");
    const void* src = W.data;
    const int64_t K = W.ne0;
    pool.parallel_for(W.ne1 / quant::kQ4_0x8Rows, 64, [&](int64_t g0, int64_t g1) {
        quant::repack_q4_0_x8(src, dst, K, g0, g1);
    });
    Tensor out = W;
    out.data = dst;
    out.layout = layout;
    return out;
}

Tensor copy_weight(const Tensor& W, void* dst, ThreadPool& pool) {
    constexpr int64_t kPiece = int64_t{1} << 20;
    const int64_t bytes = static_cast<int64_t>(W.nbytes());
    const auto* src = static_cast<const uint8_t*>(W.data);
    auto* out = static_cast<uint8_t*>(dst);
    pool.parallel_for((bytes + kPiece - 1) / kPiece, 1, [&](int64_t p0, int64_t p1) {
        const int64_t b0 = p0 * kPiece, b1 = std::min(bytes, p1 * kPiece);
        std::memcpy(out + b0, src + b0, static_cast<size_t>(b1 - b0));
    });
    Tensor t = W;
    t.data = dst;
    return t;
}

void matmul(const Tensor& W, const float* x, int n, float* y, const float* bias, ThreadPool& pool, Isa isa,
            bool allow_gemm, DecodeWalk walk) {
    const int64_t K = W.ne0, M = W.ne1;
    if (n <= 0 || M <= 0) return;
    const int id = static_cast<int>(W.type);
    RowsKernel rows = nullptr;
    bool token_invariant = false;  // the kernel gives a token the same arithmetic at any n
    if (W.layout == WeightLayout::planar)
        fail(ErrorKind::unsupported, "the CPU kernels do not read the planar layout");
    const bool x8 = W.layout == WeightLayout::q4_0_x8;
    for (int i = static_cast<int>(isa); i >= 0 && !rows && (x8 || id < kNumTypes); --i) {
        const KernelTable& t = table_for(static_cast<Isa>(i));
        rows = x8 ? t.rows_q4_0_x8 : t.rows[id];
        token_invariant = x8 ? t.q4_0_x8_token_invariant : (t.rows_token_invariant >> id) & 1;
    }
    if (!rows) fail(ErrorKind::unsupported, "no CPU kernel for tensor type ", dtype_name(W.type));
    quant::check_row_length(W.type, K);
    if (allow_gemm && matmul_gemm(W, x, n, y, bias, pool, isa)) return;

    Job job{rows, MatmulArgs{}};
    MatmulArgs& a = job.args;
    a.w = static_cast<const uint8_t*>(W.data);
    a.w_stride = W.row_bytes();
    a.type = W.type;
    a.K = K;
    a.n = n;
    a.y = y;
    a.ldy = M;
    a.bias = bias;
    a.walk = walk;

    const DType act = quant::activation_type(W.type);
    if (act == DType::F32) {
        a.x = reinterpret_cast<const uint8_t*>(x);
        a.x_stride = static_cast<size_t>(K) * sizeof(float);
    } else {
        // Activations are quantized once per call into a per-thread arena that
        // only grows, so steady-state decode allocates nothing.
        thread_local std::vector<uint8_t> arena;
        const size_t stride = row_bytes(act, K);
        const size_t need = stride * static_cast<size_t>(n);
        if (arena.size() < need) arena.resize(need);
        const int act_id = static_cast<int>(act);
        QuantJob q{pick(isa, [act_id](const KernelTable& t) { return t.quantize_act[act_id]; }), x, K, arena.data(),
                   stride};
        if (!q.fn) fail(ErrorKind::unsupported, "no activation quantizer for ", dtype_name(act));
        const QuantJob* qp = &q;  // one pointer: fits std::function's inline storage
        pool.parallel_for(n, 1, [qp](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) qp->fn(qp->x + t * qp->K, qp->dst + t * qp->stride, qp->K);
        });
        a.x = arena.data();
        a.x_stride = stride;
    }
    // Decode: chunks of ~1/16 of the rows per thread, taken dynamically (see
    // parallel_for_dynamic); multiples of 16 rows keep threads off each
    // other's output cache lines.
    const Job* jp = &job;
    const int64_t chunk = std::max<int64_t>(16, (M / (16 * pool.size()) + 15) / 16 * 16);
    if (allow_gemm || n == 1 || token_invariant) {
        pool.parallel_for_dynamic(M, chunk, [jp](int64_t r0, int64_t r1) { jp->rows(jp->args, r0, r1); });
        return;
    }
    // Row-invariant with a kernel that treats tokens differently by count: every
    // token through the one-token kernel over the same chunks (whose arithmetic for a row depends on where the row sits in its
    // chunk, never on other tokens), a block of rows at a time so the other
    // tokens find the block's weights in cache. Blocks start at multiples of
    // kInvariantBlock from the chunk's start, so the kernels' row groups (4 or
    // 8 rows) and the chunk's tail rows fall as they do for one token.
    constexpr int64_t kInvariantBlock = 32;
    pool.parallel_for_dynamic(M, chunk, [jp](int64_t r0, int64_t r1) {
        for (int64_t b0 = r0; b0 < r1; b0 += kInvariantBlock) {
            const int64_t b1 = std::min(r1, b0 + kInvariantBlock);
            for (int t = 0; t < jp->args.n; ++t) {
                MatmulArgs one = jp->args;
                one.x += t * one.x_stride;
                one.y += t * one.ldy;
                one.n = 1;
                jp->rows(one, b0, b1);
            }
        }
    });
}

} // namespace phi::cpu
