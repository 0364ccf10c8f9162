// Matrix products on the CPU: picks the kernel for the weight type and the
// selected ISA, converts the activations once per call (to Q8 blocks for
// quantized weights), and splits output rows over the thread pool.
#include "backend/cpu/matmul.h"

#include <vector>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/kernels.h"
#include "core/error.h"
#include "quant/quant.h"

namespace phi::cpu {

namespace {

const KernelTable& table_for(Isa isa) {
    switch (isa) {
        case Isa::avx512: return kernels_avx512();
        case Isa::avx2: return kernels_avx2();
        default: return kernels_scalar();
    }
}

// The kernel of the strongest ISA <= isa that has one.
template <class Fn>
Fn pick(Isa isa, Fn (KernelTable::*field)[kNumTypes], int id) {
    for (int i = static_cast<int>(isa); i >= 0; --i) {
        const Fn f = (table_for(static_cast<Isa>(i)).*field)[id];
        if (f) return f;
    }
    return nullptr;
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

} // namespace

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
    quant::dequantize_row(type, src, dst, n);
}

void matmul(const Tensor& W, const float* x, int n, float* y, const float* bias, ThreadPool& pool) {
    const int64_t K = W.ne0, M = W.ne1;
    if (n <= 0 || M <= 0) return;
    const Isa isa = current_isa();
    const int id = static_cast<int>(W.type);
    const RowsKernel rows = id < kNumTypes ? pick(isa, &KernelTable::rows, id) : nullptr;
    if (!rows) fail(ErrorKind::unsupported, "no CPU kernel for tensor type ", dtype_name(W.type));
    quant::check_row_length(W.type, K);

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
        QuantJob q{pick(isa, &KernelTable::quantize_act, static_cast<int>(act)), x, K, arena.data(), stride};
        if (!q.fn) fail(ErrorKind::unsupported, "no activation quantizer for ", dtype_name(act));
        const QuantJob* qp = &q;  // one pointer: fits std::function's inline storage
        pool.parallel_for(n, 1, [qp](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) qp->fn(qp->x + t * qp->K, qp->dst + t * qp->stride, qp->K);
        });
        a.x = arena.data();
        a.x_stride = stride;
    }
    const Job* jp = &job;
    pool.parallel_for(M, 16, [jp](int64_t r0, int64_t r1) { jp->rows(jp->args, r0, r1); });
}

} // namespace phi::cpu
