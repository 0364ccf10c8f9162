#include "backend/cpu/cpu_backend.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "core/error.h"

namespace phi::cpu {
namespace {

// Memory for repacked weights: tensors side by side in large chunks advised
// as transparent huge pages where the kernel offers them, so a 2 GB model
// takes ~1k page faults at load instead of ~500k (the kernel's page zeroing
// stays) and decode walks fewer TLB entries. A chunk's unused tail is never
// touched, so it costs address space, not memory.
class WeightArena {
public:
    WeightArena() = default;
    WeightArena(const WeightArena&) = delete;
    WeightArena& operator=(const WeightArena&) = delete;
    ~WeightArena() {
        for (void* c : chunks_) std::free(c);
    }
    void* alloc(size_t bytes) {
        bytes = (bytes + 63) / 64 * 64;
        if (bytes > left_) {
            constexpr size_t kHuge = size_t{2} << 20, kChunk = size_t{256} << 20;
            const size_t size = std::max(kChunk, (bytes + kHuge - 1) / kHuge * kHuge);
            void* c = std::aligned_alloc(kHuge, size);
            if (!c) fail(ErrorKind::generic, "out of memory repacking a weight of ", bytes, " bytes");
#ifdef MADV_HUGEPAGE
            madvise(c, size, MADV_HUGEPAGE);  // advice only: without THP, plain pages
#endif
            chunks_.push_back(c);
            next_ = static_cast<uint8_t*>(c);
            left_ = size;
        }
        void* p = next_;
        next_ += bytes;
        left_ -= bytes;
        return p;
    }

private:
    std::vector<void*> chunks_;
    uint8_t* next_ = nullptr;
    size_t left_ = 0;
};

class CpuBackend final : public Backend {
public:
    explicit CpuBackend(int n_threads) : pool_(n_threads) {}

    std::string name() const override { return "cpu"; }

    void* alloc(size_t bytes) override {
        // 64-byte aligned so rows never straddle more cache lines than needed
        const size_t rounded = (bytes + 63) / 64 * 64;
        void* p = std::aligned_alloc(64, rounded ? rounded : 64);
        if (!p) fail(ErrorKind::generic, "out of memory allocating ", bytes, " bytes");
        std::memset(p, 0, rounded);
        return p;
    }
    void dealloc(void* p) override { std::free(p); }
    void copy_to_device(void* dst, const void* src, size_t n) override { std::memcpy(dst, src, n); }
    void copy_to_host(void* dst, const void* src, size_t n) override {
        if (dst != src) std::memcpy(dst, src, n);
    }
    // Mapped file pages used in place, except matmul-only weights with a faster
    // interleaved layout (Q4_0 on AVX2/AVX-512): those are repacked into memory
    // the backend owns, once, at load.
    Tensor weight(const Tensor& host, WeightUse use) override {
        if (use != WeightUse::matmul) return host;
        const WeightLayout layout = preferred_layout(host);
        if (layout == WeightLayout::rows) return host;
        return repack_weight(host, layout, repacked_.alloc(host.nbytes()), pool_);
    }
    void synchronize() override {}

    void get_rows(const Tensor& table, const int32_t* ids, int n, float* out) override {
        for (int i = 0; i < n; ++i) {
            if (ids[i] < 0 || ids[i] >= table.ne1)
                fail(ErrorKind::invalid_arg, "token id ", ids[i], " is out of range [0, ", table.ne1, ")");
            dequantize_row(table.type, static_cast<const char*>(table.data) + table.row_bytes() * ids[i],
                           out + static_cast<int64_t>(i) * table.ne0, table.ne0);
        }
    }
    void layer_norm(const float* x, const float* w, const float* b, float eps, int n_rows, int dim,
                    float* y) override {
        pool_.parallel_for(n_rows, 1, [&](int64_t r0, int64_t r1) {
            cpu::layer_norm(x + r0 * dim, w, b, eps, static_cast<int>(r1 - r0), dim, y + r0 * dim);
        });
    }
    void rms_norm(const float* x, const float* w, float eps, int n_rows, int dim, float* y) override {
        pool_.parallel_for(n_rows, 1, [&](int64_t r0, int64_t r1) {
            cpu::rms_norm(x + r0 * dim, w, eps, static_cast<int>(r1 - r0), dim, y + r0 * dim);
        });
    }
    void matmul(const Tensor& W, const float* x, int n, float* y, const float* bias) override {
        cpu::matmul(W, x, n, y, bias, pool_);
    }
    void rope_neox(float* x, int n_tok, int64_t row_stride, int n_heads, int head_dim, int pos0,
                   const RopeParams& rope) override {
        pool_.parallel_for(n_tok, 1, [&](int64_t t0, int64_t t1) {
            cpu::rope_neox(x + t0 * row_stride, static_cast<int>(t1 - t0), row_stride, n_heads, head_dim,
                           pos0 + static_cast<int>(t0), rope);
        });
    }
    void kv_store(void* cache, DType type, int width, const float* src, int64_t src_stride, int pos0,
                  int n_tok) override {
        for (int t = 0; t < n_tok; ++t) {
            const float* s = src + t * src_stride;
            const int64_t row = static_cast<int64_t>(pos0 + t) * width;
            if (type == DType::F32) {
                std::memcpy(static_cast<float*>(cache) + row, s, sizeof(float) * width);
            } else if (type == DType::F16) {
                cpu::f32_to_f16_auto(s, static_cast<uint16_t*>(cache) + row, static_cast<size_t>(width));
            } else {
                fail(ErrorKind::unsupported, "KV cache type ", dtype_name(type), " is not supported on the CPU");
            }
        }
    }
    void attention(const float* q, int64_t q_stride, const void* k_cache, const void* v_cache, DType cache_type,
                   int n_tok, int pos0, const AttentionParams& p, float* out) override {
        cpu::attention_auto(q, q_stride, k_cache, v_cache, cache_type, n_tok, pos0, p, out, pool_);
    }
    void gelu_tanh(float* x, size_t n) override {
        pool_.parallel_for(static_cast<int64_t>(n), 1024,
                           [&](int64_t b, int64_t e) { cpu::gelu_tanh_auto(x + b, static_cast<size_t>(e - b)); });
    }
    void swiglu(const float* gate_up, int n_rows, int ff, float* out) override {
        pool_.parallel_for(n_rows, 1, [&](int64_t r0, int64_t r1) {
            cpu::swiglu_auto(gate_up + r0 * 2 * ff, static_cast<int>(r1 - r0), ff, out + r0 * ff);
        });
    }
    void add(float* y, const float* x, size_t n) override {
        for (size_t i = 0; i < n; ++i) y[i] += x[i];
    }
    void copy_rows(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int n_rows,
                   int width) override {
        for (int r = 0; r < n_rows; ++r)
            std::memcpy(dst + r * dst_stride, src + r * src_stride, sizeof(float) * width);
    }

private:
    ThreadPool pool_;
    WeightArena repacked_;  // weights this backend copied into another layout
};

} // namespace

std::unique_ptr<Backend> make_cpu_backend(int n_threads) {
    if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    return std::make_unique<CpuBackend>(n_threads);
}

} // namespace phi::cpu
