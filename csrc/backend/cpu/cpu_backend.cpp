#include "backend/cpu/cpu_backend.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "backend/experts_host.h"
#include "core/error.h"
#include "core/host_memory.h"
#include "quant/quant.h"

namespace phi::cpu {
namespace {

// Memory for copied and repacked weights: tensors side by side in large chunks advised
// as transparent huge pages where the kernel offers them, so a 2 GB model
// takes ~1k page faults at load instead of ~500k (the kernel's page zeroing
// stays) and decode walks fewer TLB entries. A chunk's unused tail is never
// touched, so it costs address space, not memory. Chunks grow with what the
// arena holds (2 MiB, then as much as so far, up to 256 MiB), so a small
// model, or a file that only claims to be a large one, reserves little.
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
            const size_t grown = std::min(kChunk, std::max(kHuge, held_));
            const size_t size = std::max(grown, (bytes + kHuge - 1) / kHuge * kHuge);
            void* c = std::aligned_alloc(kHuge, size);
            if (!c) fail(ErrorKind::generic, "out of memory repacking a weight of ", bytes, " bytes");
#ifdef MADV_HUGEPAGE
            madvise(c, size, MADV_HUGEPAGE);  // advice only: without THP, plain pages
#endif
            chunks_.push_back(c);
            next_ = static_cast<uint8_t*>(c);
            left_ = size;
            held_ += size;
        }
        void* p = next_;
        next_ += bytes;
        left_ -= bytes;
        last_ = p;
        last_bytes_ = bytes;
        return p;
    }
    // Gives back the latest allocation (others stay until the arena goes): a
    // weight made and freed again, as the op tests do, reuses its memory.
    void free(const void* p) {
        if (p != last_ || !last_) return;
        next_ -= last_bytes_;
        left_ += last_bytes_;
        last_ = nullptr;
    }

private:
    std::vector<void*> chunks_;
    uint8_t* next_ = nullptr;
    size_t left_ = 0;
    size_t held_ = 0;  // bytes in all chunks
    const void* last_ = nullptr;
    size_t last_bytes_ = 0;
};

// Grow-only f32 scratch for the steps a fused op takes one at a time on the
// CPU (a normalized input, a product before its epilogue).
class GrowBuffer {
public:
    float* get(size_t n) {
        if (n > size_) {
            std::free(p_);
            p_ = static_cast<float*>(std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64));
            if (!p_) fail(ErrorKind::generic, "out of memory allocating ", n * sizeof(float), " bytes of scratch");
            size_ = n;
        }
        return p_;
    }
    GrowBuffer() = default;
    GrowBuffer(const GrowBuffer&) = delete;
    GrowBuffer& operator=(const GrowBuffer&) = delete;
    ~GrowBuffer() { std::free(p_); }

private:
    float* p_ = nullptr;
    size_t size_ = 0;
};

class CpuBackend final : public Backend {
public:
    CpuBackend(int n_threads, Isa isa) : pool_(n_threads), isa_(isa) {}

    std::string name() const override { return "cpu"; }
    std::string variant() const override { return isa_name(isa_); }

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
    // Mapped file pages used in place, except matmul-only weights: those are
    // copied once, at load, into memory the backend owns (huge pages where the
    // kernel offers them), repacked where a faster interleaved layout exists
    // (Q4_0 on AVX2/AVX-512). Decode streams them every token, and mapped
    // file pages can stream slower: on a 2-vCPU Xeon VM (2026-12-04) two
    // threads read a 4 GB file mapping at 18.5 GB/s and a copy of it at 31
    // (Phi-3-mini Q8_0 decode from the mapping 4.6 t/s, llama.cpp from its
    // own copy 7.0).
    Tensor weight(const Tensor& host, WeightUse use) override {
        if (use != WeightUse::matmul || host.layout != WeightLayout::rows || !copy_weights_) return host;
        const WeightLayout layout = preferred_layout(host, isa_);
        void* dst = repacked_.alloc(host.nbytes());
        if (layout == WeightLayout::rows) return copy_weight(host, dst, pool_);
        return repack_weight(host, layout, dst, pool_);
    }
    void free_weight(const Tensor& w) override { repacked_.free(w.data); }
    // Copies are anonymous memory, which the kernel cannot drop: a model that
    // would not fit beside what else it allocates (one near or beyond the size
    // of RAM) stays mapped, its pages read again from the file as needed,
    // rather than the process being killed once the copies are written.
    std::string expect_weights(size_t weight_bytes, size_t other_bytes) override {
        constexpr size_t kSpare = size_t{256} << 20;  // (this process's own growth, the arena's last chunk)
        constexpr size_t MiB = size_t{1} << 20;
        const size_t avail = host_memory_available();
        copy_weights_ = weights_copied() && (avail == 0 || weight_bytes + other_bytes + kSpare <= avail);
        if (copy_weights_ || !weights_copied()) return {};
        return "the weights (" + std::to_string(weight_bytes / MiB) + " MiB) and the cache and buffers (" +
               std::to_string(other_bytes / MiB) + " MiB) do not fit in the " + std::to_string(avail / MiB) +
               " MiB of memory available, so the weights are read from the file as needed instead of copied "
               "into memory: decoding will be slower";
    }
    void synchronize() override {}

    void begin_step(int pos0, int n_tok, bool) override {
        pos0_ = pos0;
        n_tok_ = n_tok;
    }
    bool end_step() override { return true; }
    void set_row_invariant(bool on) override { row_invariant_ = on; }
    void set_exact_activations(bool) override {}  // (f32 activations for float weights always)

    void get_rows(const Tensor& table, const int32_t* ids, int n, float* out) override {
        for (int i = 0; i < n; ++i) {
            if (ids[i] < 0 || ids[i] >= table.ne1)
                fail(ErrorKind::invalid_arg, "token id ", ids[i], " is out of range [0, ", table.ne1, ")");
            dequantize_row(table.type, static_cast<const char*>(table.data) + table.row_bytes() * ids[i],
                           out + static_cast<int64_t>(i) * table.ne0, table.ne0);
        }
    }

    // The fused matmul one step at a time: normalize into scratch, multiply
    // (into y, or into scratch when the epilogue still needs the product),
    // then the epilogue.
    void matmul(const Tensor& W, const float* x, int n, float* y, const float* bias, const RowNorm& norm,
                Epilogue ep) override {
        const int K = static_cast<int>(W.ne0);
        const int64_t M = W.ne1;
        if (norm.kind != NormKind::none) {
            float* xn = norm_scratch_.get(static_cast<size_t>(n) * K);
            pool_.parallel_for(n, 1, [&](int64_t r0, int64_t r1) {
                const int rows = static_cast<int>(r1 - r0);
                if (norm.kind == NormKind::layer)
                    cpu::layer_norm(x + r0 * K, norm.w, norm.b, norm.eps, rows, K, xn + r0 * K);
                else
                    cpu::rms_norm(x + r0 * K, norm.w, norm.eps, rows, K, xn + r0 * K);
            });
            x = xn;
        }
        switch (ep) {
            case Epilogue::store: cpu::matmul(W, x, n, y, bias, pool_, isa_, !row_invariant_, walk_); return;
            case Epilogue::gelu: {
                cpu::matmul(W, x, n, y, bias, pool_, isa_, !row_invariant_, walk_);
                const size_t total = static_cast<size_t>(n) * M;
                pool_.parallel_for(static_cast<int64_t>(total), 1024, [&](int64_t b, int64_t e) {
                    cpu::gelu_tanh_auto(y + b, static_cast<size_t>(e - b), isa_);
                });
                return;
            }
            case Epilogue::add: {
                float* p = product_scratch_.get(static_cast<size_t>(n) * M);
                cpu::matmul(W, x, n, p, bias, pool_, isa_, !row_invariant_, walk_);
                const size_t total = static_cast<size_t>(n) * M;
                for (size_t i = 0; i < total; ++i) y[i] += p[i];
                return;
            }
            case Epilogue::swiglu: {
                if (M % 2) fail(ErrorKind::invalid_arg, "swiglu needs an even number of rows, got ", M);
                float* p = product_scratch_.get(static_cast<size_t>(n) * M);
                cpu::matmul(W, x, n, p, bias, pool_, isa_, !row_invariant_, walk_);
                const int ff = static_cast<int>(M / 2);
                pool_.parallel_for(n, 1, [&](int64_t r0, int64_t r1) {
                    cpu::swiglu_auto(p + r0 * 2 * ff, static_cast<int>(r1 - r0), ff, y + r0 * ff, isa_);
                });
                return;
            }
        }
    }

    void attention_input(const QKVRows& t, const AttentionParams& p, const QKNorm& qk, const RopeParams& rope,
                         const KVCache& cache) override {
        const int hd = p.head_dim, kv_width = p.n_head_kv * p.head_dim;
        pool_.parallel_for(p.n_tok > 0 ? p.n_tok : n_tok_, 1, [&](int64_t t0, int64_t t1) {
            for (int64_t i = t0; i < t1; ++i) {
                float* q = t.q + i * t.q_stride;
                float* k = t.k + i * t.kv_stride;
                if (qk.q_w) {
                    cpu::layer_norm(q, qk.q_w, qk.q_b, qk.eps, p.n_head, hd, q);
                    cpu::layer_norm(k, qk.k_w, qk.k_b, qk.eps, p.n_head_kv, hd, k);
                }
                const int pos = pos0_ + p.pos + static_cast<int>(i);
                cpu::rope_neox(q, 1, t.q_stride, p.n_head, hd, pos, rope);
                cpu::rope_neox(k, 1, t.kv_stride, p.n_head_kv, hd, pos, rope);
                const int row = cache.slots ? pos % cache.slots : pos;
                store_row(cache.k, cache.type, kv_width, k, row);
                store_row(cache.v, cache.type, kv_width, t.v + i * t.kv_stride, row);
            }
        });
    }
    void attention(const float* q, int64_t q_stride, int t0, int n_q, const KVCache& cache, const AttentionParams& p,
                   float* out) override {
        const int pos0 = pos0_ + p.pos + t0;
        const bool quantized = cache.type == DType::Q8_0 || cache.type == DType::Q4_0;
        if (quantized && p.head_dim % 32 != 0)  // a head's slice of a row is read alone: whole blocks
            fail(ErrorKind::invalid_arg, "a ", dtype_name(cache.type), " KV cache needs a head size that is a "
                 "multiple of 32, not ", p.head_dim);
        if (quantized && n_q >= kDequantizeCacheRows) {
            // many queries read every key: the cache rows in f32 once, then the f32 kernels
            // (one query reads each key once: dequantized on the way, no copy)
            const int rows = cache.slots ? std::min(cache.slots, pos0 + n_q) : pos0 + n_q;
            const int width = p.n_head_kv * p.head_dim;
            float* k = kv_scratch_.get(2 * static_cast<size_t>(rows) * width);
            float* v = k + static_cast<size_t>(rows) * width;
            const size_t row_b = row_bytes(cache.type, width);
            pool_.parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
                for (int64_t r = r0; r < r1; ++r) {
                    quant::dequantize_row(cache.type, static_cast<const char*>(cache.k) + r * row_b, k + r * width, width);
                    quant::dequantize_row(cache.type, static_cast<const char*>(cache.v) + r * row_b, v + r * width, width);
                }
            });
            cpu::attention_auto(q, q_stride, k, v, DType::F32, cache.slots, n_q, pos0, p, out, pool_, isa_);
            return;
        }
        cpu::attention_auto(q, q_stride, cache.k, cache.v, cache.type, cache.slots, n_q, pos0, p, out, pool_, isa_);
    }

    // Experts: routing per row, then a matmul per expert over the rows that
    // picked it (experts_host.cpp); in host memory its copies are memcpys.
    void route_top2(const float* scores, int n, int n_expert, float jitter, ExpertPick* picks) override {
        for (int t = 0; t < n; ++t) {
            ExpertPick two[2];
            sparsemixer_top2(scores + static_cast<int64_t>(t) * n_expert, n_expert, jitter, two);
            picks[2 * t] = two[0];
            picks[2 * t + 1] = two[1];
        }
    }
    void experts_swiglu(const Experts& gate, const Experts& up, const float* x, int n, const ExpertPick* picks,
                        const RowNorm& norm, float* h) override {
        experts_swiglu_grouped(*this, gate, up, x, n, picks, norm, h);
    }
    void experts_down_add(const Experts& down, const float* h, int n, const ExpertPick* picks, float* x) override {
        experts_down_add_grouped(*this, down, h, n, picks, x);
    }

private:
    void store_row(void* cache, DType type, int width, const float* src, int slot) const {
        const int64_t row = static_cast<int64_t>(slot) * width;
        if (type == DType::F32) {
            std::memcpy(static_cast<float*>(cache) + row, src, sizeof(float) * width);
        } else if (type == DType::F16) {
            cpu::f32_to_f16_auto(src, static_cast<uint16_t*>(cache) + row, static_cast<size_t>(width), isa_);
        } else if (type == DType::Q8_0 || type == DType::Q4_0) {
            // whole blocks per head (Model checks head_dim % 32): a head's slice dequantizes alone
            quant::quantize_row(type, src, static_cast<char*>(cache) + slot * row_bytes(type, width), width);
        } else {
            fail(ErrorKind::unsupported, "KV cache type ", dtype_name(type), " is not supported on the CPU");
        }
    }

    ThreadPool pool_;
    const Isa isa_;
    const DecodeWalk walk_ = decode_walk();  // this CPU's (cpu_features.h)
    WeightArena repacked_;  // the matmul weights this backend copied (repacked where it can)
    GrowBuffer norm_scratch_, product_scratch_;
    GrowBuffer kv_scratch_;  // a quantized cache's rows in f32, for a step of many queries
    static constexpr int kDequantizeCacheRows = 8;
    int pos0_ = 0, n_tok_ = 0;
    bool row_invariant_ = false;  // no GEMM path: rows keep their one-row arithmetic
    bool copy_weights_ = weights_copied();  // matmul weights copied at load (expect_weights may say no)
};

} // namespace

std::unique_ptr<Backend> make_cpu_backend(int n_threads, const std::string& isa) {
    const Isa chosen = choose_isa(isa);
    if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    return std::make_unique<CpuBackend>(n_threads, chosen);
}

} // namespace phi::cpu
