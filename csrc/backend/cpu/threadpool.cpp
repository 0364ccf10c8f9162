#include "backend/cpu/threadpool.h"

#include <algorithm>
#include <chrono>
#include <exception>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define PHI_CPU_RELAX() _mm_pause()
#else
#define PHI_CPU_RELAX() std::this_thread::yield()
#endif

namespace phi::cpu {

namespace {
// How long an idle worker polls before it sleeps: long enough to bridge the
// gap between the ops of one token, short enough not to burn a core when idle.
constexpr auto kSpin = std::chrono::microseconds(200);
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
    for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_.store(true);
    }
    cv_start_.notify_all();
    for (auto& t : threads_) t.join();
}

void ThreadPool::worker(int index) {
    uint64_t seen = 0;
    for (;;) {
        // poll first, then sleep until the generation moves on
        const auto until = std::chrono::steady_clock::now() + kSpin;
        int polls = 0;
        while (generation_.load(std::memory_order_acquire) == seen && !stop_.load(std::memory_order_relaxed)) {
            if (++polls < 2000) {
                PHI_CPU_RELAX();
            } else {
                std::this_thread::yield();
            }
            if (polls % 64 == 0 && std::chrono::steady_clock::now() > until) {
                std::unique_lock<std::mutex> lock(mu_);
                cv_start_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
                break;
            }
        }
        if (stop_.load()) return;
        seen = generation_.load(std::memory_order_acquire);
        try {
            (*job_)(index, n_threads_);
        } catch (...) {  // to the caller of run(), not std::terminate
            std::lock_guard<std::mutex> lock(err_mu_);
            if (!worker_err_) worker_err_ = std::current_exception();
        }
        pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
}

void ThreadPool::run(JobRef fn) {
    if (n_threads_ == 1) {
        fn(0, 1);
        return;
    }
    job_ = &fn;
    pending_.store(n_threads_ - 1, std::memory_order_relaxed);
    {
        // under the lock so a worker between its check and its wait cannot miss the wake-up
        std::lock_guard<std::mutex> lock(mu_);
        generation_.fetch_add(1, std::memory_order_acq_rel);
    }
    cv_start_.notify_all();
    // the workers reference fn: wait for them even when our share throws
    std::exception_ptr err;
    try {
        fn(0, n_threads_);
    } catch (...) {
        err = std::current_exception();
    }
    // spin briefly, then yield: on an oversubscribed machine the worker we
    // wait for may need our core to run at all
    for (int polls = 0; pending_.load(std::memory_order_acquire) != 0; ++polls) {
        if (polls < 2000) {
            PHI_CPU_RELAX();
        } else {
            std::this_thread::yield();
        }
    }
    job_ = nullptr;
    if (!err) {
        std::lock_guard<std::mutex> lock(err_mu_);
        err = worker_err_;
    }
    worker_err_ = nullptr;
    if (err) std::rethrow_exception(err);
}

} // namespace phi::cpu
