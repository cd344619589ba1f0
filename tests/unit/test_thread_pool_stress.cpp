// Stress of the per-context ThreadPool (run under TSan by scripts/test.sh:
// the names carry "Thread"/"Parallel"): back-to-back jobs of every size and
// grain, chunk indices distinct among running chunks, pools created and
// destroyed while idle or right after a job.
#include <gtest/gtest.h>

#include <atomic>
#include <numeric>
#include <thread>
#include <vector>

#include "core/thread_pool.h"

namespace {

TEST(ThreadPoolStress, ParallelForCoversEveryIndexOnce) {
    for (int threads : {1, 2, 3, 4, 8}) {
        starkv::ThreadPool pool(threads);
        for (size_t n = 0; n < 200; n += 7) {
            for (size_t grain : {size_t{0}, size_t{1}, size_t{3}, size_t{64}}) {
                std::vector<std::atomic<int>> hits(n);
                pool.parallel_for(n, grain, [&](size_t b, size_t e) {
                    for (size_t i = b; i < e; ++i) hits[i].fetch_add(1, std::memory_order_relaxed);
                });
                for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << threads << " " << n << " " << grain;
            }
        }
    }
}

TEST(ThreadPoolStress, ParallelChunksUseDistinctScratch) {
    starkv::ThreadPool pool(4);
    std::vector<long> scratch(static_cast<size_t>(pool.size()), 0);  // plain: TSan flags a shared chunk index
    for (int round = 0; round < 2000; ++round) {
        std::fill(scratch.begin(), scratch.end(), 0);
        const size_t n = 1 + static_cast<size_t>(round % 97);
        pool.parallel_chunks(n, 1, [&](size_t b, size_t e, size_t c) {
            ASSERT_LT(c, scratch.size());
            for (size_t i = b; i < e; ++i) scratch[c] += static_cast<long>(i);
        });
        ASSERT_EQ(std::accumulate(scratch.begin(), scratch.end(), 0L), static_cast<long>(n * (n - 1) / 2)) << round;
    }
}

TEST(ThreadPoolStress, CreateDestroyConcurrentPools) {
    std::vector<std::thread> users;
    std::atomic<long> total{0};
    for (int t = 0; t < 4; ++t)
        users.emplace_back([&, t] {
            for (int i = 0; i < 50; ++i) {
                starkv::ThreadPool pool(1 + (t + i) % 4);
                if (i % 3 == 0) continue;  // destroyed without ever running a job
                std::atomic<long> sum{0};
                pool.parallel_for(100, 1, [&](size_t b, size_t e) {
                    for (size_t k = b; k < e; ++k) sum.fetch_add(static_cast<long>(k), std::memory_order_relaxed);
                });
                total.fetch_add(sum.load());
            }
        });
    for (auto& u : users) u.join();
    long expected = 0;
    for (int t = 0; t < 4; ++t)
        for (int i = 0; i < 50; ++i)
            if (i % 3) expected += 4950;
    EXPECT_EQ(total.load(), expected);
}

}  // namespace
