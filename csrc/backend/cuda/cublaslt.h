// cuBLASLt, loaded at run time (dlopen) when a copy is there: the NVIDIA
// cuBLAS wheel (`pip install phicpp[cublas]`, or the one PyTorch brings) or
// the system's. phicpp builds and runs without it: the prefill GEMM of
// gemm.cu takes every matmul then.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>

namespace phi::cuda {

class CublasLt {
public:
    // Null when no library loads (or PHICPP_CUDA_CUBLASLT=0); `why` says why.
    static std::unique_ptr<CublasLt> load(std::string* why);
    ~CublasLt();
    CublasLt(const CublasLt&) = delete;
    CublasLt& operator=(const CublasLt&) = delete;
    std::string version() const;

    // D (f32, column-major M x n, leading dimension ldd) = alpha * A^T B + beta * D:
    // A: M rows of K f16 (row-major, lda), B: n rows of K f16 (ldb), so that
    // D's column j is token j and its row i output feature i, as y[n, ldd]
    // row-major. alpha and beta: host values. False when cuBLASLt has no
    // algorithm for the shape (nothing launched).
    bool matmul(const __half* A, int64_t M, int64_t K, int64_t lda, const __half* B, int n, int64_t ldb, float* D,
                int64_t ldd, const float* alpha, const float* beta, void* ws, size_t ws_bytes, cudaStream_t stream);

private:
    struct Api;
    struct Plan;
    CublasLt() = default;
    void* lib_ = nullptr;
    std::unique_ptr<Api> api_;
    void* handle_ = nullptr;
    std::map<std::tuple<int64_t, int64_t, int64_t, int, int64_t, int64_t, size_t>, std::unique_ptr<Plan>> plans_;
};

} // namespace phi::cuda
