// A fixed pool of worker threads for data-parallel loops. The calling thread
// takes part, so n_threads = 1 runs inline with no synchronization at all.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace phi::cpu {

class ThreadPool {
public:
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }

    // Runs fn(thread_index, n_threads) once on every thread and waits for all.
    void run(const std::function<void(int, int)>& fn);

    // Splits [0, n) into contiguous chunks, one per thread (in multiples of
    // `grain`, so threads never share a cache line of output), and runs
    // fn(begin, end) for each non-empty chunk.
    void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

private:
    void worker(int index);

    int n_threads_;
    std::vector<std::thread> threads_;
    std::mutex mu_;
    std::condition_variable cv_start_, cv_done_;
    const std::function<void(int, int)>* job_ = nullptr;
    uint64_t generation_ = 0;
    int pending_ = 0;
    bool stop_ = false;
};

} // namespace phi::cpu
