// A fixed set of worker threads for data-parallel loops. One pool per context:
// a context is used by one thread at a time, so parallel_for is never re-entered.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace starkv {

class ThreadPool {
public:
    // n_threads counts the calling thread: n_threads - 1 workers are started.
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }

    // Splits [0, n) into contiguous chunks of at least `grain` items and runs
    // fn(begin, end) on them, the caller included; returns when all are done.
    // fn must not throw.
    void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn);
    // Same, and fn also receives its chunk's index (< size()), distinct among
    // the chunks running at once: an index into per-thread scratch.
    void parallel_chunks(size_t n, size_t grain, const std::function<void(size_t, size_t, size_t)>& fn);

private:
    void worker_loop(int index);

    int n_threads_;
    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable start_cv_;
    std::condition_variable done_cv_;
    const std::function<void(size_t, size_t, size_t)>* job_ = nullptr;
    size_t job_n_ = 0;
    size_t job_chunks_ = 0;
    uint64_t generation_ = 0;
    int pending_ = 0;
    bool stop_ = false;
};

}  // namespace starkv
