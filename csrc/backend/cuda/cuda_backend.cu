// The CUDA backend: device memory, weights uploaded once (quantized ones in
// the planar layout), one stream, and steps recorded as CUDA graphs.
//
// A replayable step (decode: a few tokens, no copy to the host inside) is
// first *checked*: its ops are hashed, not run. If a graph recorded from the
// same ops exists it is launched (after the position is written where the
// kernels read it); otherwise end_step() asks for the step again and the ops
// are captured into a new graph, then launched. Every op's arguments go into
// the hash, so a graph only ever replays exactly the launches it recorded.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cublaslt.h"
#include "backend/cuda/kernels.h"
#include "backend/experts_host.h"
#include "quant/repack.h"

namespace phi::cuda {

int device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // no driver or no device: not an error for a CPU user
        return 0;
    }
    return n;
}

std::string why_unavailable() {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    cudaGetLastError();
    if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice)
        return std::string("no usable CUDA device (") + cudaGetErrorString(e) + ")";
    if (e != cudaSuccess) return std::string("CUDA failed to start: ") + cudaGetErrorString(e);
    return "no CUDA device was found";
}

namespace {

int env_int(const char* name, int fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : fallback;
}

// A hash of the fields of a step's ops, a word at a time: the host hashes
// every decode step's ~200 ops before it can launch the step's graph, with
// the GPU idle meanwhile (byte-wise FNV-1a cost ~20 us a token).
struct StepHash {
    uint64_t h = 1469598103934665603ull;
    template <class T>
    void add(const T& v) {
        static_assert(sizeof(T) <= 8, "hash scalars and pointers");
        uint64_t w = 0;
        std::memcpy(&w, &v, sizeof(T));
        h = (h ^ (w + sizeof(T))) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 31;
    }
    template <class... T>
    void all(const T&... v) {
        (add(v), ...);
    }
};

// A grow-only device buffer.
class DeviceBuffer {
public:
    // True when it had to grow (the old memory is gone). Zero-filled on `s`.
    bool ensure(size_t bytes, cudaStream_t s) {
        if (bytes <= size_) return false;
        if (p_) PHI_CUDA_CHECK(cudaFree(p_));
        p_ = nullptr;
        size_ = 0;
        PHI_CUDA_CHECK(cudaMalloc(&p_, bytes));
        PHI_CUDA_CHECK(cudaMemsetAsync(p_, 0, bytes, s));
        size_ = bytes;
        return true;
    }
    void* get() const { return p_; }
    void release() {
        if (p_) cudaFree(p_);
        p_ = nullptr;
        size_ = 0;
    }

private:
    void* p_ = nullptr;
    size_t size_ = 0;
};

constexpr size_t kStageBytes = size_t{16} << 20;  // pinned staging buffer (two of them)
constexpr size_t kMaxGraphs = 16;

class CudaBackend final : public Backend {
public:
    explicit CudaBackend(int device) {
        PHI_CUDA_CHECK(cudaSetDevice(device));
        PHI_CUDA_CHECK(cudaGetDeviceProperties(&props_, device));
        PHI_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
        PHI_CUDA_CHECK(cudaMalloc(&d_pos_, sizeof(int)));
        PHI_CUDA_CHECK(cudaMemsetAsync(d_pos_, 0, sizeof(int), stream_));
        graphs_ = env_int("PHICPP_CUDA_GRAPHS", 1) != 0;
        pdl_ = props_.major >= 9 && env_int("PHICPP_CUDA_PDL", 1) != 0;
        mv_.warps = std::max(1, std::min(16, env_int("PHICPP_CUDA_MV_WARPS", mv_.warps)));
        mv_.quant_warps = std::max(1, std::min(16, env_int("PHICPP_CUDA_MV_QWARPS", mv_.quant_warps)));
        mv_.ctas_per_sm = std::max(1, env_int("PHICPP_CUDA_MV_CTAS", mv_.ctas_per_sm));
        mv_.pipe = env_int("PHICPP_CUDA_MV_PIPE", 1) != 0;
        mv_.balance = env_int("PHICPP_CUDA_MV_BALANCE", 1) != 0;
        fuse_input_ = env_int("PHICPP_CUDA_FUSE_ATTN", 1) != 0;
        attn_.warps_per_sm = std::max(1, env_int("PHICPP_CUDA_ATTN_WARPS_PER_SM", attn_.warps_per_sm));
        // (at most 8: the tile kernels of several rows use 141-202 registers a thread, so 16 warps do not launch)
        attn_.cta_warps = std::max(1, std::min(8, env_int("PHICPP_CUDA_ATTN_CTA_WARPS", attn_.cta_warps)));
        attn_.stages = std::max(0, std::min(2, env_int("PHICPP_CUDA_ATTN_STAGES", attn_.stages)));
        attn_.cta_smem_kb = std::max(0, env_int("PHICPP_CUDA_ATTN_CTA_SMEM_KB", attn_.cta_smem_kb));
        attn_.decode = env_int("PHICPP_CUDA_ATTN_DECODE", 1) != 0;
        attn_.decode_keys = std::max(1, env_int("PHICPP_CUDA_ATTN_DECODE_KEYS", attn_.decode_keys));
        decode_words_ = env_int("PHICPP_CUDA_ATTN_DECODE_WORDS", 1) != 0;
        skip_attention_ = env_int("PHICPP_CUDA_SKIP_ATTENTION", 0) != 0;
        attn_noop_ = env_int("PHICPP_CUDA_ATTN_NOOP", 0);
        if (env_int("PHICPP_CUDA_ATTN_TRACE", 0)) {
            PHI_CUDA_CHECK(cudaMalloc(&trace_, sizeof(unsigned long long) * kTraceWords));
            PHI_CUDA_CHECK(cudaMemset(trace_, 0, sizeof(unsigned long long) * kTraceWords));
        }
        carveout_ = std::min(100, env_int("PHICPP_CUDA_CARVEOUT", carveout_));
        flash_min_ = env_int("PHICPP_CUDA_FLASH_MIN", flash_min_);
        time_steps_ = env_int("PHICPP_CUDA_STEP_TIMES", 0) != 0;
        if (time_steps_)
            for (cudaEvent_t& e : io_ev_) PHI_CUDA_CHECK(cudaEventCreate(&e));
        staged_io_ = env_int("PHICPP_CUDA_STAGED_IO", 1) != 0;
        gemm_cfg_.stages = std::max(2, std::min(3, env_int("PHICPP_CUDA_GEMM_STAGES", gemm_cfg_.stages)));
        lt_ = CublasLt::load(&lt_why_);
        lt_min_f16_ = std::max(kMatvecMaxTokens + 1, env_int("PHICPP_CUDA_LT_MIN_F16", lt_min_f16_));
        lt_min_quant_ = std::max(kMatvecMaxTokens + 1, env_int("PHICPP_CUDA_LT_MIN_QUANT", lt_min_quant_));
    }
    ~CudaBackend() override {
        cudaStreamSynchronize(stream_);
        report_step_times();
        report_trace();
        for (auto& g : recorded_) cudaGraphExecDestroy(g.exec);
        for (auto& w : weights_) cudaFree(const_cast<void*>(w));
        for (void* p : allocs_) cudaFree(p);
        for (DeviceBuffer* b : {&norm_ws_, &prod_ws_, &gemm_ws_, &attn_partial_, &attn_counters_, &attn_words_, &moe_groups_, &moe_out_,
                                &lt_ws_, &lt_slice_, &lt_cublas_})
            b->release();
        for (int i = 0; i < 2; ++i) {
            if (stage_[i]) cudaFreeHost(stage_[i]);
            if (staged_[i]) cudaEventDestroy(staged_[i]);
        }
        for (cudaEvent_t e : io_ev_)
            if (e) cudaEventDestroy(e);
        cudaFree(d_pos_);
        cudaStreamDestroy(stream_);
    }

    std::string name() const override { return "cuda"; }
    std::string variant() const override {
        return std::string(props_.name) + " (sm_" + std::to_string(props_.major) + std::to_string(props_.minor) + ")" +
               (lt_ ? ", cuBLASLt " + lt_->version() : ", no cuBLASLt: " + lt_why_);
    }

    // ---- memory
    void* alloc(size_t bytes) override {
        void* p = nullptr;
        const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 256));
        if (e != cudaSuccess) {
            cudaGetLastError();
            fail(ErrorKind::generic, "out of GPU memory allocating ", bytes, " bytes (", free_mib(), " MiB free)");
        }
        PHI_CUDA_CHECK(cudaMemsetAsync(p, 0, std::max<size_t>(bytes, 256), stream_));
        allocs_.insert(p);
        return p;
    }
    void dealloc(void* p) override {
        if (!p) return;
        flush_input_step();
        cudaStreamSynchronize(stream_);
        allocs_.erase(p);
        PHI_CUDA_CHECK(cudaFree(p));
    }
    void copy_to_device(void* dst, const void* src, size_t n) override {
        flush_input_step();
        // A decode step's token ids (the model writes them just before the
        // step) wait for the step's position write and go with it: one launch
        // before the step instead of a copy and a launch. (Inside a step a copy
        // is issued as asked: a captured copy would replay from its source.)
        if (staged_io_ && !in_step_ && n > 0 && n % sizeof(int32_t) == 0 && n <= sizeof(pending_ids_.v)) {
            pending_ids_dst_ = static_cast<int32_t*>(dst);
            pending_ids_.n = static_cast<int>(n / sizeof(int32_t));
            std::memcpy(pending_ids_.v, src, n);
            return;
        }
        if (n) PHI_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream_));
    }
    void copy_to_host(void* dst, const void* src, size_t n) override {
        flush_input_step();
        if (!staged_io_ || n < kStagedCopyMin) {
            if (n) PHI_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream_));
            synchronize();
            return;
        }
        // Through the pinned staging buffers (a pageable destination makes the
        // driver stage it anyway, at more cost a call): two chunks in flight,
        // each copied out while the next one comes in.
        ensure_stage();
        if (time_steps_) PHI_CUDA_CHECK(cudaEventRecord(io_ev_[0], stream_));
        auto* d = static_cast<uint8_t*>(dst);
        const auto* s = static_cast<const uint8_t*>(src);
        size_t prev_off = 0, prev_len = 0;
        int buf = 0;
        for (size_t off = 0; off < n; off += kStageBytes, buf ^= 1) {
            const size_t len = std::min(kStageBytes, n - off);
            PHI_CUDA_CHECK(cudaMemcpyAsync(stage_[buf], s + off, len, cudaMemcpyDeviceToHost, stream_));
            PHI_CUDA_CHECK(cudaEventRecord(staged_[buf], stream_));
            if (prev_len) {
                PHI_CUDA_CHECK(cudaEventSynchronize(staged_[buf ^ 1]));
                std::memcpy(d + prev_off, stage_[buf ^ 1], prev_len);
            }
            prev_off = off;
            prev_len = len;
        }
        if (time_steps_) PHI_CUDA_CHECK(cudaEventRecord(io_ev_[1], stream_));
        synchronize();
        const auto synced = std::chrono::steady_clock::now();
        std::memcpy(d + prev_off, stage_[buf ^ 1], prev_len);
        if (time_steps_) {
            float ms = 0.0f;
            if (cudaEventElapsedTime(&ms, io_ev_[0], io_ev_[1]) == cudaSuccess) out_copy_gpu_us_ += 1e3 * ms;
            copied_at_ = std::chrono::steady_clock::now();
            out_memcpy_us_ += std::chrono::duration<double, std::micro>(copied_at_ - synced).count();
            ++out_copies_;
        }
    }
    void synchronize() override {
        flush_input_step();
        PHI_CUDA_CHECK(cudaStreamSynchronize(stream_));
        PHI_CUDA_CHECK(cudaGetLastError());
    }
    size_t device_memory_free() const override {
        size_t free = 0, total = 0;
        if (cudaMemGetInfo(&free, &total) != cudaSuccess) {
            cudaGetLastError();
            return 0;
        }
        return std::max<size_t>(free, 1);
    }
    size_t workspace_bytes(int n_batch, int width) const override {
        return 2 * static_cast<size_t>(n_batch) * width * sizeof(float) + (size_t{32} << 20) +
               (lt_ ? kLtSliceBytes + kLtCublasBytes : 0);
    }

    Tensor weight(const Tensor& host, WeightUse) override {
        if (host.layout != WeightLayout::rows)
            fail(ErrorKind::invalid_arg, "the CUDA backend takes weights in the file's layout");
        const bool is_float = host.type == DType::F32 || host.type == DType::F16 || host.type == DType::BF16;
        const quant::PlanarSplit split = quant::planar_split(host.type);
        if (!is_float && split.bits_bytes == 0)
            fail(ErrorKind::unsupported, "tensor type ", dtype_name(host.type), " is not supported by the CUDA backend");
        const size_t bytes = host.nbytes();
        void* d = nullptr;
        if (cudaMalloc(&d, std::max<size_t>(bytes, 256)) != cudaSuccess) {
            cudaGetLastError();
            fail(ErrorKind::generic, "out of GPU memory uploading a ", dtype_name(host.type), " weight of ",
                 bytes >> 20, " MiB (", free_mib(), " MiB free)");
        }
        weights_.insert(d);
        try {
            upload(host, split, static_cast<uint8_t*>(d));
        } catch (...) {
            weights_.erase(d);
            cudaFree(d);
            throw;
        }
        Tensor t = host;
        t.data = d;
        t.layout = is_float ? WeightLayout::rows : WeightLayout::planar;
        return t;
    }
    bool stacks_weights() const override { return true; }
    void free_weight(const Tensor& w) override {
        auto it = weights_.find(w.data);
        if (it == weights_.end()) return;
        flush_input_step();  // (a held-back input step may read it)
        cudaStreamSynchronize(stream_);
        weights_.erase(it);
        PHI_CUDA_CHECK(cudaFree(const_cast<void*>(w.data)));
    }

    // ---- steps
    void begin_step(int pos0, int n_tok, bool replayable) override {
        end_dangling_capture();
        in_step_ = true;
        has_pending_input_ = false;  // left by a step that threw
        trace_launch_ = 0;
        has_held_ = false;
        lt_input_ = LtInput{};
        pos0_ = pos0;
        n_tok_ = n_tok;
        hash_ = StepHash{};
        hash_.add(n_tok);
        if (time_steps_) {
            step_begun_ = std::chrono::steady_clock::now();
            if (copied_at_ != std::chrono::steady_clock::time_point{}) {  // (a staged copy of results came before)
                between_us_ += std::chrono::duration<double, std::micro>(step_begun_ - copied_at_).count();
                ++betweens_;
                copied_at_ = {};
            }
        }
        recordable_ = true;
        const bool direct = direct_next_;
        direct_next_ = false;
        if (replayable && graphs_ && n_tok <= kMatvecMaxTokens && !direct) {
            if (capture_next_) {
                set_step_inputs(pos0);
                PHI_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
                mode_ = Mode::capture;
            } else {
                mode_ = Mode::check;
            }
        } else {
            set_step_inputs(pos0);
            mode_ = Mode::direct;
        }
    }
    void set_row_invariant(bool on) override { row_invariant_ = on; }
    void set_exact_activations(bool on) override { gemm_cfg_.exact = on; }
    bool end_step() override {
        in_step_ = false;
        if (running()) flush_input_step();
        const Mode mode = mode_;
        mode_ = Mode::direct;
        if (mode == Mode::direct) return true;
        if (mode == Mode::check) {
            for (size_t i = 0; i < recorded_.size(); ++i) {
                if (recorded_[i].key != hash_.h) continue;
                std::rotate(recorded_.begin() + i, recorded_.begin() + i + 1, recorded_.end());  // most recent last
                if (time_steps_)
                    check_us_ += std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - step_begun_).count();
                StepTimer timer(*this);
                set_step_inputs(pos0_);
                PHI_CUDA_CHECK(cudaGraphLaunch(recorded_.back().exec, stream_));
                return true;
            }
            // not recorded yet: capture it next time, or (an op that waits for
            // the host) run it directly
            if (recordable_) {
                capture_next_ = true;
            } else {
                direct_next_ = true;
            }
            return false;
        }
        capture_next_ = false;
        cudaGraph_t g = nullptr;
        const cudaError_t e = cudaStreamEndCapture(stream_, &g);
        cudaGraphExec_t exec = nullptr;
        if (e != cudaSuccess || !g || cudaGraphInstantiate(&exec, g, 0) != cudaSuccess) {
            // not recordable here: run steps directly from now on
            cudaGetLastError();
            if (g) cudaGraphDestroy(g);
            graphs_ = false;
            return false;
        }
        cudaGraphDestroy(g);
        if (recorded_.size() >= kMaxGraphs) {
            cudaGraphExecDestroy(recorded_.front().exec);
            recorded_.erase(recorded_.begin());
        }
        recorded_.push_back({hash_.h, exec});
        PHI_CUDA_CHECK(cudaGraphLaunch(exec, stream_));
        return true;
    }

    // ---- ops
    void get_rows(const Tensor& table, const int32_t* ids, int n, float* out) override {
        hash_.all(1, table.data, table.type, table.ne0, table.ne1, ids, n, out);
        if (!running()) return;
        flush_input_step();
        cuda::get_rows(table, ids, n, out, launch_cfg());
    }

    void matmul(const Tensor& W, const float* x, int n, float* y, const float* bias, const RowNorm& norm,
                Epilogue ep) override {
        hash_.all(2, W.data, W.type, W.ne0, W.ne1, x, n, y, bias, norm.kind, norm.w, norm.b, norm.eps, ep, row_invariant_,
                  gemm_cfg_.exact);
        const MatmulJob j{W, x, n, y, bias, norm, ep};
        const bool mv = matvec_takes(j);
        const bool lt = !mv && use_lt(W, n);
        if (!mv) {
            if (ep == Epilogue::swiglu || lt) grow(prod_ws_, sizeof(float) * n * W.ne1);  // (lt: the product)
            grow(gemm_ws_, gemm_workspace(n, W.ne0));
            if (lt) {
                grow(lt_ws_, lt_workspace(n, W.ne0));
                grow(lt_cublas_, kLtCublasBytes);
                if (W.type != DType::F16) grow(lt_slice_, kLtSliceBytes);
            }
        }
        if (!running()) return;
        const LtInput before = lt_input_;  // (kept past the flush, which forgets it for every other op)
        flush_input_step();
        const Launch l = launch_cfg();
        if (!mv && row_invariant_ && n > kMatvecMaxTokens) {
            // the rows a few at a time through the decode kernels, whose arithmetic
            // for a row does not depend on the others
            const int64_t ldy = ep == Epilogue::swiglu ? W.ne1 / 2 : W.ne1;
            bool all = true;
            for (int r = 0; r < n && all; r += kMatvecMaxTokens)
                all = matvec_takes(MatmulJob{W, x + r * W.ne0, std::min(kMatvecMaxTokens, n - r), y + r * ldy, bias,
                                             norm, ep});
            if (all) {
                for (int r = 0; r < n; r += kMatvecMaxTokens)
                    matvec(MatmulJob{W, x + r * W.ne0, std::min(kMatvecMaxTokens, n - r), y + r * ldy, bias, norm, ep},
                           l, props_.multiProcessorCount, mv_);
                return;
            }
        }
        if (mv) {
            matvec(j, l, props_.multiProcessorCount, mv_);
            return;
        }
        void* gws = gemm_ws_.get();
        // (the norm, if any, is done as the GEMMs convert the activations to f16)
        const LtBuffers lb{lt_ws_.get(), static_cast<float*>(prod_ws_.get()), lt_slice_.get(), kLtSliceBytes,
                           lt_cublas_.get(), kLtCublasBytes};
        if (lt) {
            const LtInput input{x, n, W.ne0, norm, lt_ws_.get()};
            LtHeld held;
            if (gemm_lt(*lt_, W, x, norm, n, y, bias, ep, lb, l, before.same(input), &held)) {
                if (held.product) {
                    held_ = held;
                    has_held_ = true;
                }
                // reusable by the next matmul unless this one wrote over its rows
                const int64_t ldy = ep == Epilogue::swiglu ? W.ne1 / 2 : W.ne1;
                if (y + n * ldy <= x || x + n * W.ne0 <= y) lt_input_ = input;
                return;
            }
        }
        if (ep == Epilogue::swiglu) {
            float* p = static_cast<float*>(prod_ws_.get());
            gemm(W, x, norm, n, p, W.ne1, bias, Epilogue::store, gemm_cfg_, gws, l);
            swiglu_rows(p, n, static_cast<int>(W.ne1 / 2), y, l);
        } else {
            gemm(W, x, norm, n, y, W.ne1, bias, ep, gemm_cfg_, gws, l);
        }
    }
    // cuBLASLt for a prefill matmul: where it loaded, for F16 weights from
    // lt_min_f16_ tokens and quantized ones (dequantized per slice) from
    // lt_min_quant_; not for f32-accurate products, nor row-invariant batches
    bool use_lt(const Tensor& W, int n) const {
        if (!lt_ || gemm_cfg_.exact || row_invariant_) return false;
        if (!lt_takes(W)) return false;
        return n >= (W.type == DType::F16 ? lt_min_f16_ : lt_min_quant_);
    }

    void attention_input(const QKVRows& t, const AttentionParams& p, const QKNorm& qk, const RopeParams& rope,
                         const KVCache& cache) override {
        hash_.all(3, t.q, t.k, t.v, t.q_stride, t.kv_stride, p.n_head, p.n_head_kv, p.head_dim, qk.q_w, qk.q_b,
                  qk.k_w, qk.k_b, qk.eps, rope.n_rot, rope.inv_freq, rope.mscale, cache.k, cache.v, cache.type,
                  p.pos, p.n_tok);
        if (!running()) return;
        const int n = p.n_tok > 0 ? p.n_tok : n_tok_;
        if (has_held_ && held_.y == t.q && held_.n == n && t.q_stride == held_.M && t.kv_stride == held_.M &&
            t.k > t.q && t.v > t.q && t.v + (p.n_head_kv * p.head_dim) <= t.q + held_.M) {
            // the q|k|v rows the matmul before left unwritten: read from its product
            has_held_ = false;
            flush_input_step();
            cuda::attention_input(t, n, p, qk, rope, cache, d_pos_, launch_cfg(), &held_);
            return;
        }
        flush_input_step();
        if (n == 1 && fuse_input_) {  // done by the attention launch that follows
            pending_input_ = FusedInput{t, qk, rope, cache};
            pending_params_ = p;
            has_pending_input_ = true;
            return;
        }
        cuda::attention_input(t, n, p, qk, rope, cache, d_pos_, launch_cfg());
    }

    void attention(const float* q, int64_t q_stride, int t0, int n_q, const KVCache& cache, const AttentionParams& p,
                   float* out) override {
        if (use_flash(q, q_stride, n_q, cache, p, out)) {
            hash_.all(8, q, q_stride, t0, n_q, cache.k, cache.v, p.n_head, p.n_head_kv, p.head_dim, p.scale, p.window,
                      p.pos, out);
            if (!running()) return;
            flush_input_step();
            if (!skip_attention_) cuda::flash_attention(q, q_stride, t0, n_q, cache, p, d_pos_, out, launch_cfg());
            return;
        }
        const AttentionPlan plan =
            attention_plan(n_q, p, pos0_ + p.pos + t0 + n_q, cache.type,
                           {props_.multiProcessorCount, props_.sharedMemPerBlockOptin,
                            props_.sharedMemPerMultiprocessor},
                           attn_, row_invariant_);
        if (plan.decode && n_q > 1) {
            // rows that must each give their own step's bits: the first rows, if their
            // key blocks are smaller than the last row's, in a launch of their own
            auto block_keys = [&](int t) {
                return decode_block_keys(decode_row_keys(pos0_ + p.pos + t0 + t + 1, p.window), p.n_head,
                                         props_.multiProcessorCount, attn_.decode_keys);
            };
            int m = n_q - 1;
            while (m > 0 && block_keys(m - 1) == plan.block_keys) --m;
            if (m > 0) {
                attention(q, q_stride, t0, m, cache, p, out);
                attention(q + m * q_stride, q_stride, t0 + m, n_q - m, cache, p,
                          out + static_cast<int64_t>(m) * p.n_head * p.head_dim);
                return;
            }
        }
        hash_.all(4, q, q_stride, t0, n_q, cache.k, cache.v, cache.type, p.n_head, p.n_head_kv, p.head_dim, p.scale,
                  p.window, p.pos, out, plan.tiles, plan.splits, plan.warps, plan.stages, plan.q_rows, plan.decode,
                  plan.block_keys);
        const bool words = plan.decode && decode_words_ && plan.splits <= cuda::kDecodeWordsMaxSplits;
        if (plan.splits > 1) {
            if (words) grow(attn_words_, sizeof(unsigned long long) * plan.partial_floats());
            else grow(attn_partial_, sizeof(float) * plan.partial_floats());
            grow(attn_counters_, sizeof(int) * plan.tiles);
        }
        if (!running()) return;
        if (skip_attention_) {  // timing only: what attention costs a step (the output is wrong)
            has_pending_input_ = false;
            return;
        }
        lt_input_ = LtInput{};
        if (has_held_) flush_input_step();  // (never held in a step that fuses the input step)
        const AttentionWorkspace ws{static_cast<float*>(attn_partial_.get()), static_cast<int*>(attn_counters_.get()),
                                    words ? static_cast<unsigned long long*>(attn_words_.get()) : nullptr};
        const bool fuse = has_pending_input_ && n_q == 1 && t0 == 0 && pending_input_.rows.q == q &&
                          pending_input_.cache.k == cache.k && pending_params_.n_head == p.n_head &&
                          pending_params_.n_head_kv == p.n_head_kv && pending_params_.head_dim == p.head_dim &&
                          pending_params_.pos == p.pos;
        if (!fuse) flush_input_step();
        has_pending_input_ = false;
        unsigned long long* trace = nullptr;
        if (trace_ && trace_launch_ < kTraceLaunches && plan.tiles * plan.splits <= kTraceCtas)
            trace = trace_ + static_cast<size_t>(trace_launch_++) * kTraceCtas * 8;
        cuda::attention(q, q_stride, t0, n_q, cache, p, plan, ws, d_pos_, out, launch_cfg(),
                        fuse ? &pending_input_ : nullptr, attn_noop_, trace);
    }

    // Batches of flash_min_ tokens or more through the tensor-core kernel,
    // never where the product must be exact or match the one-token path's bits
    bool use_flash(const float* q, int64_t q_stride, int n_q, const KVCache& cache, const AttentionParams& p,
                   const float* out) const {
        if (flash_min_ <= 0 || n_q < flash_min_ || gemm_cfg_.exact || row_invariant_) return false;
        return cuda::flash_attention_takes(p.head_dim, cache.type, q, q_stride, out);
    }

    // Experts: decode batches (and row-invariant batches, 8 tokens at a time)
    // through moe.cu's kernels, which read the picks on the GPU; larger
    // batches through the prefill GEMM over the picks grouped by expert on the
    // GPU; experts neither takes (over kMoeMaxExperts) grouped on the host
    // (the step then waits for the picks: such steps are never recorded).
    void route_top2(const float* scores, int n, int n_expert, float jitter, ExpertPick* picks) override {
        hash_.all(5, scores, n, n_expert, jitter, picks);
        if (!running()) return;
        flush_input_step();
        cuda::route_top2(scores, n, n_expert, jitter, picks, launch_cfg());
    }
    void experts_swiglu(const Experts& gate, const Experts& up, const float* x, int n, const ExpertPick* picks,
                        const RowNorm& norm, float* h) override {
        hash_.all(6, x, n, picks, h, norm.kind, norm.w, norm.b, norm.eps);
        hash_experts(up);
        const int64_t K = gate.w[0].ne0, F = gate.w[0].ne1;
        const ExpertPath path =
            expert_path(cuda::experts_fit(gate, &up, x, norm, false), cuda::experts_alike(gate, &up), gate, n);
        if (path == ExpertPath::gemm) {
            grow(moe_groups_, cuda::expert_groups_bytes(n, gate.n));
            if (norm.kind != NormKind::none) grow(norm_ws_, sizeof(float) * n * K);
            grow(prod_ws_, sizeof(float) * 2 * n * 2 * F);
            grow(gemm_ws_, gemm_workspace(n, K));
        }
        if (!running()) return;
        flush_input_step();
        const Launch l = launch_cfg();
        if (path == ExpertPath::kernels) {
            expert_chunks(gate, n, [&](int t, int m) {
                return cuda::experts_swiglu(gate, up, x + t * K, m, picks + 2 * t, norm, h + 2 * t * F, l,
                                            props_.multiProcessorCount);
            });
        } else if (path == ExpertPath::gemm) {
            const cuda::ExpertGroups g = cuda::expert_groups_at(moe_groups_.get(), n, gate.n);
            cuda::moe_group(picks, n, gate.n, g, l);
            const float* xin = x;
            if (norm.kind != NormKind::none) {
                norm_rows(x, n, static_cast<int>(K), norm, static_cast<float*>(norm_ws_.get()), l);
                xin = static_cast<const float*>(norm_ws_.get());
            }
            float* gu = static_cast<float*>(prod_ws_.get());  // [2n][gate | up]
            cuda::gemm_experts(gate, xin, n, 1, g, gu, 2 * F, gemm_cfg_, gemm_ws_.get(), l);
            cuda::gemm_experts(up, xin, n, 1, g, gu + F, 2 * F, gemm_cfg_, gemm_ws_.get(), l);
            swiglu_rows(gu, 2 * n, static_cast<int>(F), h, l);
        } else {
            experts_swiglu_grouped(*this, gate, up, x, n, picks, norm, h);
        }
    }
    void experts_down_add(const Experts& down, const float* h, int n, const ExpertPick* picks, float* x) override {
        hash_.all(7, h, n, picks, x);
        const int64_t F = down.w[0].ne0, E = down.w[0].ne1;
        const ExpertPath path =
            expert_path(cuda::experts_fit(down, nullptr, h, RowNorm{}, true), cuda::experts_alike(down, nullptr), down, n);
        if (path == ExpertPath::gemm) {
            grow(moe_groups_, cuda::expert_groups_bytes(n, down.n));
            grow(moe_out_, sizeof(float) * 2 * n * E);
            grow(gemm_ws_, gemm_workspace(2 * n, F));
        }
        if (!running()) return;
        flush_input_step();
        const Launch l = launch_cfg();
        if (path == ExpertPath::kernels) {
            expert_chunks(down, n, [&](int t, int m) {
                return cuda::experts_down_add(down, h + 2 * t * F, m, picks + 2 * t, x + t * E, l,
                                              props_.multiProcessorCount);
            });
        } else if (path == ExpertPath::gemm) {
            const cuda::ExpertGroups g = cuda::expert_groups_at(moe_groups_.get(), n, down.n);
            cuda::moe_group(picks, n, down.n, g, l);
            float* o = static_cast<float*>(moe_out_.get());  // [2n][E]: each pick's output
            cuda::gemm_experts(down, h, 2 * n, 0, g, o, E, gemm_cfg_, gemm_ws_.get(), l);
            cuda::experts_combine(o, n, static_cast<int>(E), picks, x, l);
        } else {
            experts_down_add_grouped(*this, down, h, n, picks, x);
        }
    }

private:
    enum class Mode { direct, check, capture };
    void hash_experts(const Experts& e) {
        hash_.add(e.n);
        for (int i = 0; i < e.n; ++i) hash_.all(e.w[i].data, e.w[i].type, e.w[i].ne0, e.w[i].ne1);
    }
    // How an expert op over n tokens runs: moe.cu's decode kernels when they
    // `fit` and the batch is a decode's (or row-invariant); else the grouped
    // GEMM when it takes the experts (`gemm_fit`); else on the host, which
    // waits for the picks, so the step is not recorded.
    enum class ExpertPath { kernels, gemm, host };
    ExpertPath expert_path(bool fit, bool gemm_fit, const Experts& e, int n) {
        const ExpertPath path = fit && (n <= kMatvecMaxTokens || row_invariant_) ? ExpertPath::kernels
                                : gemm_fit                                        ? ExpertPath::gemm
                                                                                  : ExpertPath::host;
        hash_.add(static_cast<int>(path));
        hash_experts(e);
        if (path == ExpertPath::host) recordable_ = false;
        return path;
    }
    // The decode kernels over tokens [t, t + m), m at most kMatvecMaxTokens.
    template <class Chunk>
    void expert_chunks(const Experts& e, int n, Chunk&& chunk) {
        for (int t = 0; t < n; t += kMatvecMaxTokens)
            if (!chunk(t, std::min(kMatvecMaxTokens, n - t)))
                fail(ErrorKind::unsupported, "no CUDA expert kernel fits ", dtype_name(e.w[0].type), " experts of ",
                     e.w[0].ne1, " x ", e.w[0].ne0);
    }
    struct Recorded {
        uint64_t key;
        cudaGraphExec_t exec;
    };

    Launch launch_cfg() const { return Launch{stream_, pdl_, carveout_}; }

    // PHICPP_CUDA_STEP_TIMES=1: the GPU time of each replayed step (from its
    // position write to the graph's end), summed and printed at exit, so that
    // a benchmark's time per token splits into the GPU's and the host's.
    struct StepTimer {
        CudaBackend& be;
        cudaEvent_t ev[2] = {nullptr, nullptr};
        explicit StepTimer(CudaBackend& b) : be(b) {
            if (!be.time_steps_) return;
            for (cudaEvent_t& e : ev) PHI_CUDA_CHECK(cudaEventCreate(&e));
            PHI_CUDA_CHECK(cudaEventRecord(ev[0], be.stream_));
        }
        ~StepTimer() {
            if (!ev[0]) return;
            cudaEventRecord(ev[1], be.stream_);
            be.timed_.push_back({ev[0], ev[1]});
            if (be.timed_.size() >= 256) be.collect_step_times();
        }
    };
    void collect_step_times() {
        for (auto& [a, b] : timed_) {
            float ms = 0.0f;
            if (cudaEventSynchronize(b) == cudaSuccess && cudaEventElapsedTime(&ms, a, b) == cudaSuccess) {
                step_ms_.push_back(ms);
            }
            cudaEventDestroy(a);
            cudaEventDestroy(b);
        }
        cudaGetLastError();
        timed_.clear();
    }
    void report_step_times() {
        if (!time_steps_) return;
        collect_step_times();
        if (step_ms_.empty()) return;
        std::vector<float> v = step_ms_;
        std::sort(v.begin(), v.end());
        double sum = 0.0;
        for (float x : v) sum += x;
        std::fprintf(stderr,
                     "phicpp cuda: %zu replayed steps, GPU time per step: mean %.1f us, median %.1f us; "
                     "host time issuing and checking a step: mean %.1f us\n",
                     v.size(), 1e3 * sum / v.size(), 1e3 * v[v.size() / 2], check_us_ / v.size());
        if (out_copies_ && betweens_)
            std::fprintf(stderr,
                         "phicpp cuda: results copied out %zu times: on the GPU %.1f us, then on the host %.1f us; "
                         "from a copy's end to the next step's begin (the caller): %.1f us\n",
                         out_copies_, out_copy_gpu_us_ / out_copies_, out_memcpy_us_ / out_copies_, between_us_ / betweens_);
    }
    // A deferred input step that no attention took.
    void flush_input_step() {
        lt_input_ = LtInput{};  // (every op but a matmul right after one: see matmul)
        if (pending_ids_dst_) {  // token ids that no step took: copied as they were asked for
            PHI_CUDA_CHECK(cudaMemcpyAsync(pending_ids_dst_, pending_ids_.v, sizeof(int32_t) * pending_ids_.n,
                                           cudaMemcpyHostToDevice, stream_));
            pending_ids_dst_ = nullptr;
        }
        if (has_held_) {
            has_held_ = false;
            lt_epilogue(held_, launch_cfg());
        }
        if (!has_pending_input_) return;
        has_pending_input_ = false;
        cuda::attention_input(pending_input_.rows, 1, pending_params_, pending_input_.qk, pending_input_.rope,
                              pending_input_.cache, d_pos_, launch_cfg());
    }
    bool running() const { return mode_ != Mode::check; }
    size_t free_mib() const { return device_memory_free() >> 20; }

    // A workspace that grows takes new memory: recorded steps that used the old
    // one can no longer replay.
    // (A capture never grows one: the check before it ran the same ops.)
    void grow(DeviceBuffer& b, size_t bytes) {
        if (b.ensure(bytes, stream_)) drop_recorded();
    }
    void drop_recorded() {
        cudaStreamSynchronize(stream_);
        for (auto& g : recorded_) cudaGraphExecDestroy(g.exec);
        recorded_.clear();
    }
    // An op that threw during a capture leaves the stream capturing: end it.
    void end_dangling_capture() {
        cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
        if (cudaStreamIsCapturing(stream_, &st) == cudaSuccess && st != cudaStreamCaptureStatusNone) {
            cudaGraph_t g = nullptr;
            cudaStreamEndCapture(stream_, &g);
            if (g) cudaGraphDestroy(g);
            cudaGetLastError();
            capture_next_ = false;
        }
    }

    // The step's position, with the token ids copy_to_device held back.
    void set_step_inputs(int pos0) {
        cuda::set_step_inputs(d_pos_, pos0, pending_ids_dst_, pending_ids_dst_ ? pending_ids_ : cuda::StepIds{},
                              launch_cfg());
        pending_ids_dst_ = nullptr;
    }
    void ensure_stage() {
        for (int i = 0; i < 2; ++i) {
            if (!stage_[i]) {
                PHI_CUDA_CHECK(cudaHostAlloc(&stage_[i], kStageBytes, cudaHostAllocDefault));
                PHI_CUDA_CHECK(cudaEventCreateWithFlags(&staged_[i], cudaEventDisableTiming));
            }
        }
    }
    void upload(const Tensor& host, const quant::PlanarSplit& split, uint8_t* dst) {
        ensure_stage();
        const size_t row = host.row_bytes();
        if (row > kStageBytes) fail(ErrorKind::unsupported, "a weight row of ", row, " bytes is too long for CUDA");
        const int64_t rows_per_chunk = std::max<int64_t>(1, static_cast<int64_t>(kStageBytes / row));
        const auto* src = static_cast<const uint8_t*>(host.data);
        const int64_t nb = split.bits_bytes ? host.ne0 / dtype_traits(host.type).block_size : 0;
        const size_t bits = split.bits_bytes, rest = split.bits_bytes ? dtype_traits(host.type).type_size - bits : 0;
        uint8_t* dst_rest = dst + static_cast<size_t>(host.ne1) * nb * bits;
        int buf = 0;
        for (int64_t r0 = 0; r0 < host.ne1; r0 += rows_per_chunk, buf ^= 1) {
            const int64_t nr = std::min(rows_per_chunk, host.ne1 - r0);
            PHI_CUDA_CHECK(cudaEventSynchronize(staged_[buf]));  // its previous copy is done
            uint8_t* st = static_cast<uint8_t*>(stage_[buf]);
            if (split.bits_bytes) {
                const size_t nbits = static_cast<size_t>(nr) * nb * bits;
                quant::repack_planar_rows(src + r0 * row, st, st + nbits, host.type, nr, host.ne0);
                PHI_CUDA_CHECK(cudaMemcpyAsync(dst + r0 * nb * bits, st, nbits, cudaMemcpyHostToDevice, stream_));
                PHI_CUDA_CHECK(cudaMemcpyAsync(dst_rest + r0 * nb * rest, st + nbits, nr * nb * rest,
                                               cudaMemcpyHostToDevice, stream_));
            } else {
                std::memcpy(st, src + r0 * row, nr * row);
                PHI_CUDA_CHECK(cudaMemcpyAsync(dst + r0 * row, st, nr * row, cudaMemcpyHostToDevice, stream_));
            }
            PHI_CUDA_CHECK(cudaEventRecord(staged_[buf], stream_));
        }
    }

    cudaDeviceProp props_{};
    cudaStream_t stream_ = nullptr;
    int* d_pos_ = nullptr;  // the step's pos0, where the kernels read it
    bool graphs_ = true, pdl_ = true;
    // The activations the last cuBLASLt matmul converted (f16 and token scales
    // in lt_ws_): a matmul right after it of the same rows with the same norm
    // (q, k, v stored apart; the MLP of phi2's parallel block) takes them as
    // they are. Any other op forgets them (flush_input_step).
    struct LtInput {
        const float* x = nullptr;
        int n = 0;
        int64_t K = 0;
        RowNorm norm;
        const void* ws = nullptr;
        bool same(const LtInput& o) const {
            return x && x == o.x && n == o.n && K == o.K && ws == o.ws && norm.kind == o.norm.kind &&
                   norm.w == o.norm.w && norm.b == o.norm.b && norm.eps == o.norm.eps;
        }
    };
    LtInput lt_input_;
    // A cuBLASLt store whose epilogue has not run (its y not yet written): the
    // attention input step right after it reads the product itself (one pass
    // over the q|k|v rows less); any other op runs it first (flush_input_step).
    LtHeld held_;
    bool has_held_ = false;
    MatvecConfig mv_;  // how decode matmuls are launched
    bool row_invariant_ = false;  // batches of rows through the decode kernels, 8 at a time
    GemmConfig gemm_cfg_;  // prefill GEMMs: exact activations (the model's choice), F16 pipeline depth
    bool fuse_input_ = true;  // a one-token step's input step runs inside its attention
    cuda::AttentionTuning attn_;  // how the one-token (tile) attention spreads the keys
    bool skip_attention_ = false;
    bool decode_words_ = true;  // the decode kernel's key blocks combined through marked words (else fenced floats)
    int attn_noop_ = 0;  // timing only: attention launched as an empty kernel (1), without its shared memory (2)
    // Timing only (PHICPP_CUDA_ATTN_TRACE=1): the global timer at points of
    // each attention CTA (attention_tile.cuh's trace_point: 0 entry, 1 before
    // the PDL wait, 2 after it, 3 the token's rows ready, 4 the warp's chunks
    // done, 5 the CTA's warps combined, 6 output stored or split ticket drawn,
    // 7 the last split's combine done), for the first kTraceLaunches
    // attention launches of a step; the last step's are printed at exit, per
    // launch in us from its first CTA's entry.
    static constexpr int kTraceLaunches = 64, kTraceCtas = 2048;
    static constexpr size_t kTraceWords = size_t{kTraceLaunches} * kTraceCtas * 8;
    unsigned long long* trace_ = nullptr;
    int trace_launch_ = 0;  // of the step being issued
    void report_trace() {
        if (!trace_) return;
        std::vector<unsigned long long> h(kTraceWords);
        cudaMemcpy(h.data(), trace_, h.size() * sizeof(h[0]), cudaMemcpyDeviceToHost);
        cudaFree(trace_);
        for (int l = 0; l < kTraceLaunches; ++l) {
            const unsigned long long* t = h.data() + static_cast<size_t>(l) * kTraceCtas * 8;
            unsigned long long t0 = ~0ull;
            for (int c = 0; c < kTraceCtas; ++c)
                if (t[c * 8]) t0 = std::min(t0, t[c * 8]);
            if (t0 == ~0ull) continue;
            std::vector<double> v[8];  // per point, the CTAs that recorded it
            for (int c = 0; c < kTraceCtas; ++c)
                for (int k = 0; k < 8; ++k)
                    if (t[c * 8] && t[c * 8 + k] >= t0) v[k].push_back(1e-3 * static_cast<double>(t[c * 8 + k] - t0));
            for (auto& x : v) std::sort(x.begin(), x.end());
            auto lo = [](const std::vector<double>& x) { return x.empty() ? -1.0 : x.front(); };
            auto hi = [](const std::vector<double>& x) { return x.empty() ? -1.0 : x.back(); };
            auto med = [](const std::vector<double>& x) { return x.empty() ? -1.0 : x[x.size() / 2]; };
            std::fprintf(stderr,
                         "attn trace %d: ctas %zu entry %.2f..%.2f prewait %.2f..%.2f waited %.2f..%.2f qready med %.2f "
                         "chunks med %.2f max %.2f combined med %.2f out/ticket max %.2f end max %.2f\n",
                         l, v[0].size(), lo(v[0]), hi(v[0]), lo(v[1]), hi(v[1]), lo(v[2]), hi(v[2]), med(v[3]), med(v[4]),
                         hi(v[4]), med(v[5]), hi(v[6]), hi(v[7]));
        }
    }
    int carveout_ = -1;
    int flash_min_ = 16;  // tokens from which a batch's attention is flash attention (0: never)
    bool time_steps_ = false;
    std::chrono::steady_clock::time_point step_begun_, copied_at_;
    double check_us_ = 0.0, out_copy_gpu_us_ = 0.0, out_memcpy_us_ = 0.0, between_us_ = 0.0;
    size_t out_copies_ = 0, betweens_ = 0;
    cudaEvent_t io_ev_[2] = {nullptr, nullptr};  // (step times: around a copy of results)
    std::vector<std::pair<cudaEvent_t, cudaEvent_t>> timed_;
    std::vector<float> step_ms_;
    bool has_pending_input_ = false;
    FusedInput pending_input_;
    AttentionParams pending_params_;
    std::unordered_set<const void*> weights_;
    std::unordered_set<void*> allocs_;
    DeviceBuffer norm_ws_, prod_ws_, gemm_ws_, attn_partial_, attn_counters_, attn_words_, moe_groups_, moe_out_;
    // cuBLASLt (null where no library loaded): its buffers, and the batch sizes from which it runs
    static constexpr size_t kLtSliceBytes = size_t{16} << 20, kLtCublasBytes = size_t{32} << 20;
    std::unique_ptr<CublasLt> lt_;
    std::string lt_why_;
    DeviceBuffer lt_ws_, lt_slice_, lt_cublas_;
    int lt_min_f16_ = kMatvecMaxTokens + 1, lt_min_quant_ = 64;  // (H100, 2026-12-02: docs/CUDA.md)
    void* stage_[2] = {nullptr, nullptr};
    cudaEvent_t staged_[2] = {nullptr, nullptr};
    // PHICPP_CUDA_STAGED_IO=0: logits copied straight to the caller's memory
    // and token ids by a copy of their own (measuring knob)
    bool staged_io_ = true;
    static constexpr size_t kStagedCopyMin = 4096;
    bool in_step_ = false;  // between begin_step and end_step
    cuda::StepIds pending_ids_;
    int32_t* pending_ids_dst_ = nullptr;  // where the held-back ids go (null: none)
    // the step being issued
    Mode mode_ = Mode::direct;
    bool capture_next_ = false;
    bool recordable_ = true;     // no op of the step so far waits for the host
    bool direct_next_ = false;   // the step just checked has one that does
    int pos0_ = 0, n_tok_ = 0;
    StepHash hash_;
    std::vector<Recorded> recorded_;
};

} // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<CudaBackend>(device); }

bool memory_info(size_t& free, size_t& total) {
    if (device_count() == 0) return false;
    if (cudaSetDevice(0) != cudaSuccess || cudaMemGetInfo(&free, &total) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return true;
}

} // namespace phi::cuda
