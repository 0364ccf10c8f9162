// cuBLASLt through dlopen: the few entry points phicpp calls, declared here
// with the values of cublasLt.h (CUDA 12/13; the toolkit phicpp builds with
// need not ship cuBLAS), and one cached plan (descriptors, heuristic's
// algorithm) per shape.
#include "backend/cuda/cublaslt.h"

#include <dlfcn.h>
#include <library_types.h>

#include <cstdlib>
#include <cstring>

namespace phi::cuda {
namespace {

using Status = int;  // cublasStatus_t: 0 success
struct Algo {
    uint64_t data[8];
};
struct HeuristicResult {
    Algo algo;
    size_t workspace_bytes;
    Status state;
    float waves;
    int reserved[4];
};
// cublasLtMatmulDescAttributes_t, cublasLtMatmulPreferenceAttributes_t, cublasOperation_t,
// cublasComputeType_t
constexpr int kDescTransA = 3, kDescTransB = 4;
constexpr int kPrefMaxWorkspace = 1;
constexpr int kOpN = 0, kOpT = 1;
constexpr int kCompute32F = 68;

const char* env(const char* name) {
    const char* v = std::getenv(name);
    return v && *v ? v : nullptr;
}

} // namespace

struct CublasLt::Api {
    Status (*create)(void**);
    Status (*destroy)(void*);
    size_t (*get_version)();
    Status (*desc_create)(void**, int, cudaDataType_t);
    Status (*desc_destroy)(void*);
    Status (*desc_set)(void*, int, const void*, size_t);
    Status (*layout_create)(void**, cudaDataType_t, uint64_t, uint64_t, int64_t);
    Status (*layout_destroy)(void*);
    Status (*pref_create)(void**);
    Status (*pref_destroy)(void*);
    Status (*pref_set)(void*, int, const void*, size_t);
    Status (*heuristic)(void*, void*, void*, void*, void*, void*, void*, int, HeuristicResult*, int*);
    Status (*matmul)(void*, void*, const void*, const void*, void*, const void*, void*, const void*, const void*,
                     void*, void*, void*, const Algo*, void*, size_t, cudaStream_t);
};

struct CublasLt::Plan {
    const Api* api = nullptr;
    void* desc = nullptr;
    void* a = nullptr;
    void* b = nullptr;
    void* d = nullptr;
    Algo algo{};
    bool ok = false;
    ~Plan() {
        if (a) api->layout_destroy(a);
        if (b) api->layout_destroy(b);
        if (d) api->layout_destroy(d);
        if (desc) api->desc_destroy(desc);
    }
};

std::unique_ptr<CublasLt> CublasLt::load(std::string* why) {
    const char* off = env("PHICPP_CUDA_CUBLASLT");
    if (off && std::strcmp(off, "0") == 0) {
        if (why) *why = "disabled by PHICPP_CUDA_CUBLASLT=0";
        return nullptr;
    }
    void* lib = nullptr;
    if (off && std::strcmp(off, "1") != 0) lib = dlopen(off, RTLD_NOW | RTLD_LOCAL);  // a path
    // by soname: finds a copy the Python package preloaded from the NVIDIA wheel, or the system's
    for (const char* name : {"libcublasLt.so.13", "libcublasLt.so.12"})
        if (!lib) lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        if (why) *why = "no libcublasLt.so.13 or .12 found";
        return nullptr;
    }
    std::unique_ptr<CublasLt> lt(new CublasLt());
    lt->lib_ = lib;
    lt->api_ = std::make_unique<Api>();
    Api& a = *lt->api_;
    bool all = true;
    auto sym = [&](auto& fn, const char* name) {
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
        all = all && fn;
    };
    sym(a.create, "cublasLtCreate");
    sym(a.destroy, "cublasLtDestroy");
    sym(a.get_version, "cublasLtGetVersion");
    sym(a.desc_create, "cublasLtMatmulDescCreate");
    sym(a.desc_destroy, "cublasLtMatmulDescDestroy");
    sym(a.desc_set, "cublasLtMatmulDescSetAttribute");
    sym(a.layout_create, "cublasLtMatrixLayoutCreate");
    sym(a.layout_destroy, "cublasLtMatrixLayoutDestroy");
    sym(a.pref_create, "cublasLtMatmulPreferenceCreate");
    sym(a.pref_destroy, "cublasLtMatmulPreferenceDestroy");
    sym(a.pref_set, "cublasLtMatmulPreferenceSetAttribute");
    sym(a.heuristic, "cublasLtMatmulAlgoGetHeuristic");
    sym(a.matmul, "cublasLtMatmul");
    if (!all || a.create(&lt->handle_) != 0) {
        if (why) *why = all ? "cublasLtCreate failed" : "libcublasLt lacks an entry point";
        lt->handle_ = nullptr;
        return nullptr;
    }
    return lt;
}

CublasLt::~CublasLt() {
    plans_.clear();
    if (handle_) api_->destroy(handle_);
    if (lib_) dlclose(lib_);
}

std::string CublasLt::version() const { return std::to_string(api_->get_version()); }

bool CublasLt::matmul(const __half* A, int64_t M, int64_t K, int64_t lda, const __half* B, int n, int64_t ldb,
                      float* D, int64_t ldd, const float* alpha, const float* beta, void* ws, size_t ws_bytes,
                      cudaStream_t stream) {
    const Api& a = *api_;
    auto& slot = plans_[{M, K, lda, n, ldb, ldd, ws_bytes}];
    if (!slot) {
        slot = std::make_unique<Plan>();
        Plan& p = *slot;
        p.api = &a;
        const int ta = kOpT, tb = kOpN;
        void* pref = nullptr;
        bool ok = a.desc_create(&p.desc, kCompute32F, CUDA_R_32F) == 0 &&
                  a.desc_set(p.desc, kDescTransA, &ta, sizeof ta) == 0 &&
                  a.desc_set(p.desc, kDescTransB, &tb, sizeof tb) == 0 &&
                  a.layout_create(&p.a, CUDA_R_16F, K, M, lda) == 0 &&
                  a.layout_create(&p.b, CUDA_R_16F, K, n, ldb) == 0 &&
                  a.layout_create(&p.d, CUDA_R_32F, M, n, ldd) == 0 && a.pref_create(&pref) == 0 &&
                  a.pref_set(pref, kPrefMaxWorkspace, &ws_bytes, sizeof ws_bytes) == 0;
        HeuristicResult r{};
        int found = 0;
        if (ok) ok = a.heuristic(handle_, p.desc, p.a, p.b, p.d, p.d, pref, 1, &r, &found) == 0 && found > 0;
        if (pref) a.pref_destroy(pref);
        p.algo = r.algo;
        p.ok = ok;
    }
    const Plan& p = *slot;
    return p.ok &&
           a.matmul(handle_, p.desc, alpha, A, p.a, B, p.b, beta, D, p.d, D, p.d, &p.algo, ws, ws_bytes, stream) == 0;
}

} // namespace phi::cuda
