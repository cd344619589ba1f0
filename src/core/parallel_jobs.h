// Independent jobs run on short-lived std::thread workers while the calling
// thread reports completions (progress callbacks stay on the caller's thread).
#pragma once

#include <cstddef>
#include <functional>

namespace starkv {

// Runs job(0) .. job(n-1), each exactly once, on up to n_threads workers
// (0 = std::thread::hardware_concurrency()). The calling thread waits and calls
// tick(done) once per finished job, done = 1, 2, ..., n, in that order; tick
// returning false cancels: unstarted jobs are skipped and, once the workers
// have stopped, Error(STARKV_ERR_CANCELLED) is thrown. An exception from a job
// stops the others and is rethrown on the calling thread (the first one wins).
void run_jobs(size_t n, const std::function<void(size_t)>& job,
              const std::function<bool(size_t)>& tick, unsigned n_threads = 0);

}  // namespace starkv
