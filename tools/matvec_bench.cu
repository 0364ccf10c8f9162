// The decode matmuls alone, on the GPU: a Phi-3-mini-shaped stack of layers'
// matmuls (norm+qkv, wo+add, norm+gate_up+SwiGLU, down+add) with distinct
// weights per layer (nothing stays in L2), recorded as one CUDA graph with
// programmatic dependent launch as the backend records a step; then each
// matrix kind alone, the same way. Prints microseconds per token and the share
// of 4.8 TB/s for each launch configuration given, so kernel designs can be
// compared without the rest of the model.
//
//   matvec_bench TYPE [LAYERS] CONFIG...
//   TYPE: f16 | bf16 | q8_0 | q4_0 | q4_1 | q5_0 | q5_1 | q2_k | q3_k | q4_k | q5_k | q6_k | iq4_nl | iq4_xs
//   CONFIG: WARPS:CTAS_PER_SM[:PIPE[:BALANCE]] (e.g. 8:4, 16:1:0, 16:4:1:0); BALANCE (default 1):
//   the pipelined kernel (Q4_K) with as few warps a CTA as keep its rounds of tasks
// Built here against the backend's static library that tools/device_build.sh
// leaves in build/device, then carried to the device (it runs in seconds):
//   nvcc -std=c++17 -O2 -arch=sm_90a -Icsrc tools/matvec_bench.cu build/device/libphicore.a \
//     -o .bench/matvec_bench -lpthread && strip .bench/matvec_bench
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/kernels.h"
#include "cuda_bench.cuh"

using namespace phi;

namespace {

__global__ void fill_random(uint8_t* p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const uint32_t h = bench_hash(i, seed);
        // keep float16 exponents small (no inf/nan): clear bit 6 of every odd byte
        p[i] = static_cast<uint8_t>(i % 2 ? h & 0xBF : h);
    }
}

struct Mat {
    Tensor W;
    size_t bytes = 0;
};

Mat make(DType t, int64_t K, int64_t M, uint32_t seed) {
    Mat m;
    m.W.type = t;
    m.W.ne0 = K;
    m.W.ne1 = M;
    const bool fl = t == DType::F16 || t == DType::F32 || t == DType::BF16;
    m.W.layout = fl ? WeightLayout::rows : WeightLayout::planar;
    m.bytes = m.W.nbytes();
    void* d = nullptr;
    CHECK(cudaMalloc(&d, m.bytes + 32));
    fill_random<<<1024, 256>>>(static_cast<uint8_t*>(d), m.bytes + 32, seed);
    m.W.data = d;
    return m;
}

struct Cfg {
    std::string name;
    cuda::MatvecConfig mv;
};

Cfg parse(const char* s) {
    Cfg c;
    c.name = s;
    c.mv.warps = c.mv.quant_warps = std::atoi(s);
    if (const char* colon = std::strchr(s, ':')) {
        c.mv.ctas_per_sm = std::atoi(colon + 1);
        if (const char* c2 = std::strchr(colon + 1, ':')) {
            c.mv.pipe = std::atoi(c2 + 1) != 0;  // WARPS:CTAS:PIPE
            if (const char* c3 = std::strchr(c2 + 1, ':')) c.mv.balance = std::atoi(c3 + 1) != 0;  // WARPS:CTAS:PIPE:BALANCE
        }
    }
    return c;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: matvec_bench TYPE [LAYERS] CONFIG...\n");
        return 2;
    }
    const std::string ts = argv[1];
    const DType t = ts == "f16" ? DType::F16 : ts == "q8_0" ? DType::Q8_0 : ts == "q4_k" ? DType::Q4_K
                  : ts == "q6_k" ? DType::Q6_K : ts == "q5_k" ? DType::Q5_K : ts == "iq4_nl" ? DType::IQ4_NL
                  : ts == "iq4_xs" ? DType::IQ4_XS : ts == "q2_k" ? DType::Q2_K : ts == "q3_k" ? DType::Q3_K
                  : ts == "q5_0" ? DType::Q5_0 : ts == "q4_1" ? DType::Q4_1 : ts == "q5_1" ? DType::Q5_1
                  : ts == "bf16" ? DType::BF16 : DType::Q4_0;
    int a = 2, layers = 32;
    if (!std::strchr(argv[2], ':')) layers = std::atoi(argv[a++]);
    const BenchDevice dev = bench_device();
    const int sm = dev.props.multiProcessorCount;
    cudaStream_t st = dev.stream;
    const int64_t D = 3072, FF = 8192;
    struct Layer {
        Mat qkv, wo, gu, down;
    };
    std::vector<Layer> L(layers);
    double bytes = 0;
    for (int i = 0; i < layers; ++i) {
        // BENCH_M_DIV=d: every matrix with 1/d of its rows (the fixed cost of a launch shows)
        const int64_t d = std::getenv("BENCH_M_DIV") ? std::max(1, std::atoi(std::getenv("BENCH_M_DIV"))) : 1;
        L[i] = {make(t, D, 3 * D / d, 4 * i), make(t, D, D / d, 4 * i + 1), make(t, D, 2 * FF / d, 4 * i + 2),
                make(t, FF, D / d, 4 * i + 3)};
        bytes += L[i].qkv.bytes + L[i].wo.bytes + L[i].gu.bytes + L[i].down.bytes;
    }
    float *x, *h, *qkv, *ff, *nw;
    CHECK(cudaMalloc(&x, D * 4));
    CHECK(cudaMalloc(&h, FF * 4));
    CHECK(cudaMalloc(&qkv, 3 * D * 4));
    CHECK(cudaMalloc(&ff, FF * 4));
    CHECK(cudaMalloc(&nw, FF * 4));
    std::vector<float> ones(FF, 1.0f), xs(D);
    for (int i = 0; i < D; ++i) xs[i] = std::sin(0.37f * i);
    CHECK(cudaMemcpy(nw, ones.data(), FF * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(x, xs.data(), D * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(h, xs.data(), D * 4, cudaMemcpyHostToDevice));
    CHECK(cudaDeviceSynchronize());
    RowNorm rms;
    // BENCH_NORM=0: no input norm fused into qkv and gate_up
    rms.kind = std::getenv("BENCH_NORM") && std::atoi(std::getenv("BENCH_NORM")) == 0 ? NormKind::none : NormKind::rms;
    rms.w = nw;
    rms.eps = 1e-5f;
    const cuda::Launch l{st, dev.props.major >= 9 && !(std::getenv("BENCH_PDL") && std::atoi(std::getenv("BENCH_PDL")) == 0)};

    std::printf("%s, %d layers, %.2f GB of weights; us per token (share of 4.8 TB/s)\n", ts.c_str(), layers, bytes / 1e9);
    std::printf("%-24s %14s %14s %14s %14s %14s\n", "config", "chain", "qkv", "wo", "gate_up", "down");
    for (; a < argc; ++a) {
        const Cfg c = parse(argv[a]);
        std::printf("%-24s", c.name.c_str());
        for (int kind = -1; kind < 4; ++kind) {
            auto issue = [&]() {
                for (int i = 0; i < layers; ++i) {
                    if (kind < 0 || kind == 0) cuda::matvec({L[i].qkv.W, x, 1, qkv, nullptr, rms, Epilogue::store}, l, sm, c.mv);
                    if (kind < 0 || kind == 1) cuda::matvec({L[i].wo.W, qkv, 1, x, nullptr, {}, Epilogue::add}, l, sm, c.mv);
                    if (kind < 0 || kind == 2) cuda::matvec({L[i].gu.W, x, 1, ff, nullptr, rms, Epilogue::swiglu}, l, sm, c.mv);
                    if (kind < 0 || kind == 3) cuda::matvec({L[i].down.W, ff, 1, h, nullptr, {}, Epilogue::add}, l, sm, c.mv);
                }
            };
            double kb = 0;
            for (int i = 0; i < layers; ++i)
                kb += kind < 0 ? L[i].qkv.bytes + L[i].wo.bytes + L[i].gu.bytes + L[i].down.bytes
                      : kind == 0 ? L[i].qkv.bytes : kind == 1 ? L[i].wo.bytes : kind == 2 ? L[i].gu.bytes : L[i].down.bytes;
            cudaGraph_t g;
            cudaGraphExec_t ge;
            CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
            issue();
            CHECK(cudaStreamEndCapture(st, &g));
            if (cudaGraphInstantiate(&ge, g, 0) != cudaSuccess) {
                cudaGetLastError();
                cudaGraphDestroy(g);
                std::printf(" %14s", "-");
                continue;
            }
            const double us = graph_launch_us(ge, st, 20);
            std::printf(" %8.1f (%2.0f%%)", us, 100.0 * kb / (us * 1e-6) / 4.8e12);
            cudaGraphExecDestroy(ge);
            cudaGraphDestroy(g);
        }
        std::printf("\n");
        std::fflush(stdout);
    }
    return 0;
}
