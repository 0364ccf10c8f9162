// What the GPU benchmarks in tools/ share: a CUDA call that must succeed
// (CHECK: else the benchmark stops with the error), the device and stream
// they run on, the hash their random buffers are filled from, and the mean
// time of a launch of a CUDA graph (three warm-up launches, then `reps` timed
// by events), given instantiated or as the launches to record.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#define CHECK(x)                                                             \
    do {                                                                     \
        cudaError_t e = (x);                                                 \
        if (e != cudaSuccess) {                                              \
            std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e));     \
            std::exit(1);                                                    \
        }                                                                    \
    } while (0)

// Device 0's properties and a non-blocking stream for a benchmark's launches.
struct BenchDevice {
    cudaDeviceProp props;
    cudaStream_t stream;
};
inline BenchDevice bench_device() {
    BenchDevice d;
    CHECK(cudaGetDeviceProperties(&d.props, 0));
    CHECK(cudaStreamCreateWithFlags(&d.stream, cudaStreamNonBlocking));
    return d;
}

// A well-mixed 32-bit value for element i of a benchmark's random buffer (on the device, or on the host for a reference).
__host__ __device__ __forceinline__ uint32_t bench_hash(size_t i, uint32_t seed) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    return h;
}

inline double graph_launch_us(cudaGraphExec_t ge, cudaStream_t st, int reps) {
    for (int w = 0; w < 3; ++w) CHECK(cudaGraphLaunch(ge, st));
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    CHECK(cudaEventRecord(e0, st));
    for (int r = 0; r < reps; ++r) CHECK(cudaGraphLaunch(ge, st));
    CHECK(cudaEventRecord(e1, st));
    CHECK(cudaEventSynchronize(e1));
    float ms = 0.0f;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return ms * 1e3 / reps;
}

// The launches record() issues on st, captured once as a graph that must
// instantiate, timed as graph_launch_us times it.
template <class F>
double captured_us(cudaStream_t st, int reps, F&& record) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    record();
    CHECK(cudaStreamEndCapture(st, &g));
    CHECK(cudaGraphInstantiate(&ge, g, 0));
    const double us = graph_launch_us(ge, st, reps);
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    return us;
}
