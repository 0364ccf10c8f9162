// A fixed pool of worker threads for data-parallel loops. The calling thread
// takes part, so n_threads = 1 runs inline with no synchronization at all.
//
// Decode dispatches a few hundred small jobs per token, so handing out a job
// must cost microseconds: workers spin briefly on an atomic generation
// counter before sleeping on a condition variable, and jobs are passed as a
// non-owning function reference (no std::function, no allocation).
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace phi::cpu {

// A non-owning reference to a callable void(int, int); the callable must
// outlive the call it is passed to.
class JobRef {
public:
    template <class F>
    JobRef(F& f) : obj_(static_cast<void*>(&f)), call_([](void* o, int a, int b) { (*static_cast<F*>(o))(a, b); }) {}
    void operator()(int a, int b) const { call_(obj_, a, b); }

private:
    void* obj_;
    void (*call_)(void*, int, int);
};

class ThreadPool {
public:
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }

    // Runs fn(thread_index, n_threads) once on every thread and waits for all.
    // An exception from any thread's share is rethrown here (the caller's own
    // first), after every thread has finished.
    void run(JobRef fn);

    // Splits [0, n) into contiguous chunks, one per thread (in multiples of
    // `grain`, so threads never share a cache line of output), and runs
    // fn(begin, end) for each non-empty chunk.
    template <class F>
    void parallel_for(int64_t n, int64_t grain, F&& fn) {
        if (n <= 0) return;
        if (grain < 1) grain = 1;
        const int64_t n_chunks = (n + grain - 1) / grain;
        if (n_threads_ == 1 || n_chunks == 1) {
            fn(int64_t{0}, n);
            return;
        }
        auto job = [&](int ti, int nt) {
            const int64_t per = (n_chunks + nt - 1) / nt;
            const int64_t b = std::min(n, ti * per * grain);
            const int64_t e = std::min(n, (ti + 1) * per * grain);
            if (b < e) fn(b, e);
        };
        run(JobRef(job));
    }

    // Like parallel_for, but threads take chunks of `chunk` items from a shared
    // counter as they finish: on a shared host one core can run slower than
    // the other for a while (steal time), and a static split would make the
    // whole op wait for it. For loops of many similar, sizeable chunks.
    template <class F>
    void parallel_for_dynamic(int64_t n, int64_t chunk, F&& fn) {
        if (n <= 0) return;
        if (chunk < 1) chunk = 1;
        const int64_t n_chunks = (n + chunk - 1) / chunk;
        if (n_threads_ == 1 || n_chunks == 1) {
            fn(int64_t{0}, n);
            return;
        }
        std::atomic<int64_t> next{0};
        auto job = [&](int, int) {
            for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < n_chunks;)
                fn(c * chunk, std::min(n, (c + 1) * chunk));
        };
        run(JobRef(job));
    }

private:
    void worker(int index);

    int n_threads_;
    std::vector<std::thread> threads_;
    std::mutex mu_;
    std::condition_variable cv_start_;
    JobRef* job_ = nullptr;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> pending_{0};
    std::atomic<bool> stop_{false};
    std::mutex err_mu_;
    std::exception_ptr worker_err_;  // the first exception a worker's share threw in this run()
};

} // namespace phi::cpu
