// Row reads: embedding rows of any weight type as f32 (get_rows), and the
// step position the other kernels read.
#include <algorithm>

#include "backend/cuda/formats.cuh"
#include "backend/cuda/kernels.h"

namespace phi::cuda {
namespace {

template <class F>
__global__ void get_rows_quant(PlanarView w, const int32_t* ids, int units, int64_t K, float* out) {
    pdl_wait();
    pdl_launch_dependents();
    const int unit = blockIdx.x * blockDim.x + threadIdx.x;
    if (unit >= units) return;
    const int i = blockIdx.y;
    Unit u;
    F::unpack(load_unit<F>(w, ids[i], unit), unit % F::kUnits, u);
    float* o = out + i * K + static_cast<int64_t>(unit) * 32;
#pragma unroll
    for (int e = 0; e < 32; ++e) o[e] = unit_value(u, e);
}

template <class T>
__global__ void get_rows_float(const uint8_t* w, int64_t row_bytes, const int32_t* ids, int64_t K, float* out) {
    pdl_wait();
    pdl_launch_dependents();
    const int i = blockIdx.y;
    const uint8_t* row = w + ids[i] * row_bytes;
    for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < K;
         k += static_cast<int64_t>(gridDim.x) * blockDim.x)
        out[i * K + k] = FloatFmt<T>::get(row, k);
}

// The kernels after it may read *p before they wait for the kernel before
// them (attention reads the step's position early): the store is made
// visible before they may start. The step's few token ids travel in the
// same launch (no copy of their own before the step).
__global__ void set_step_inputs_kernel(int* p, int v, int32_t* ids_dst, StepIds ids) {
    pdl_wait();
    *p = v;
    for (int i = 0; i < ids.n; ++i) ids_dst[i] = ids.v[i];
    __threadfence();
    pdl_launch_dependents();
}

template <class F>
void run_quant(const Tensor& t, const int32_t* ids, int n, float* out, const Launch& l) {
    PlanarView w;
    w.nb = t.ne0 / F::kBlock;
    w.bits = static_cast<const uint8_t*>(t.data);
    w.rest = w.bits + t.ne1 * w.nb * F::kBits;
    const int units = static_cast<int>(w.nb) * F::kUnits;
    launch(get_rows_quant<F>, dim3(ceil_div(units, 128), n), dim3(128), 0, l, w, ids, units, t.ne0, out);
}

template <class T>
void run_float(const Tensor& t, const int32_t* ids, int n, float* out, const Launch& l) {
    const int blocks = std::max(1, std::min(ceil_div(t.ne0, 256), 64));
    launch(get_rows_float<T>, dim3(blocks, n), dim3(256), 0, l, static_cast<const uint8_t*>(t.data),
           static_cast<int64_t>(t.row_bytes()), ids, t.ne0, out);
}

} // namespace

void get_rows(const Tensor& t, const int32_t* ids, int n, float* out, const Launch& l) {
    if (n <= 0) return;
    with_weight_format(
        t.type, [&](auto tag) { run_float<typename decltype(tag)::type>(t, ids, n, out, l); },
        [&](auto tag) { run_quant<typename decltype(tag)::type>(t, ids, n, out, l); });
}

void set_step_inputs(int* p, int v, int32_t* ids_dst, const StepIds& ids, const Launch& l) {
    launch(set_step_inputs_kernel, dim3(1), dim3(1), 0, l, p, v, ids_dst, ids);
}

} // namespace phi::cuda
