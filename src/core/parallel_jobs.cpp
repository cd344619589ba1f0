#include "core/parallel_jobs.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.h"

namespace starkv {

void run_jobs(size_t n, const std::function<void(size_t)>& job, const std::function<bool(size_t)>& tick,
              unsigned n_threads) {
    if (n == 0) return;
    if (n_threads == 0) n_threads = std::max(1u, std::thread::hardware_concurrency());
    const size_t n_workers = std::min<size_t>(n_threads, n);

    std::atomic<size_t> next{0};
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::condition_variable cv;
    size_t done = 0, active = n_workers;
    std::exception_ptr error;

    auto worker = [&] {
        for (;;) {
            if (stop.load(std::memory_order_relaxed)) break;
            const size_t i = next.fetch_add(1);
            if (i >= n) break;
            std::exception_ptr e;
            try {
                job(i);
            } catch (...) {
                e = std::current_exception();
            }
            std::lock_guard<std::mutex> lock(mu);
            if (e) {
                if (!error) error = e;
                stop = true;
            } else {
                ++done;
            }
            cv.notify_all();
        }
        std::lock_guard<std::mutex> lock(mu);
        --active;
        cv.notify_all();
    };

    std::vector<std::thread> threads;
    threads.reserve(n_workers);
    bool cancelled = false;
    try {
        for (size_t t = 0; t < n_workers; ++t) threads.emplace_back(worker);
        size_t reported = 0;
        std::unique_lock<std::mutex> lock(mu);
        while (reported < n) {
            cv.wait(lock, [&] { return done > reported || active == 0 || error; });
            if (error) break;
            if (done == reported) break;  // workers gone (cannot happen without an error)
            const size_t now = done;
            lock.unlock();
            while (reported < now && !cancelled) {
                ++reported;
                if (tick && !tick(reported)) cancelled = true;
            }
            lock.lock();
            if (cancelled) break;
        }
    } catch (...) {
        // tick threw or a thread failed to start: stop the workers, then rethrow.
        stop = true;
        for (auto& th : threads) th.join();
        throw;
    }
    stop = true;
    for (auto& th : threads) th.join();
    if (error) std::rethrow_exception(error);
    if (cancelled) fail(STARKV_ERR_CANCELLED, "cancelled by the progress callback");
}

}  // namespace starkv
