#include "core/thread_pool.h"

#include <algorithm>

namespace starkv {

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
    workers_.reserve(static_cast<size_t>(n_threads_ - 1));
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
    }
    start_cv_.notify_all();
    for (auto& t : workers_) t.join();
}

static void run_chunk(const std::function<void(size_t, size_t, size_t)>& fn, size_t n, size_t chunks, size_t c) {
    size_t begin = n * c / chunks, end = n * (c + 1) / chunks;
    if (begin < end) fn(begin, end, c);
}

void ThreadPool::parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn) {
    parallel_chunks(n, grain, [&fn](size_t begin, size_t end, size_t) { fn(begin, end); });
}

void ThreadPool::parallel_chunks(size_t n, size_t grain, const std::function<void(size_t, size_t, size_t)>& fn) {
    if (n == 0) return;
    size_t chunks = std::min<size_t>(static_cast<size_t>(n_threads_), (n + std::max<size_t>(grain, 1) - 1) / std::max<size_t>(grain, 1));
    if (chunks <= 1 || workers_.empty()) {
        fn(0, n, 0);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        job_ = &fn;
        job_n_ = n;
        job_chunks_ = chunks;
        pending_ = static_cast<int>(chunks) - 1;
        ++generation_;
    }
    start_cv_.notify_all();
    run_chunk(fn, n, chunks, 0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
}

void ThreadPool::worker_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
        const std::function<void(size_t, size_t, size_t)>* job;
        size_t n, chunks;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            job = job_;
            n = job_n_;
            chunks = job_chunks_;
        }
        if (static_cast<size_t>(index) < chunks) {
            run_chunk(*job, n, chunks, static_cast<size_t>(index));
            std::lock_guard<std::mutex> lock(mutex_);
            if (--pending_ == 0) done_cv_.notify_one();
        }
    }
}

}  // namespace starkv
