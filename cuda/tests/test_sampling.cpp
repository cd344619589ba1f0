// Device sampling (kernels/sampling.cu) against the CPU sampler's filters
// (src/sampling/sampler.h): argmax exact, ties to the lowest id; the filtered
// distribution (top-k, top-p, min-p, temperature) the same support and
// probabilities; the draw at a given uniform the same token.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "sampling.cuh"
#include "sampling/sampler.h"

namespace {

bool have_device() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

template <typename T>
T* upload(const std::vector<T>& h) {
    T* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, h.size() * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    return p;
}
template <typename T>
std::vector<T> download(const T* p, size_t n) {
    std::vector<T> h(n);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
}

std::vector<float> random_logits(size_t n, float scale, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

}  // namespace

TEST(CudaSampling, ArgmaxMatchesCpuIncludingTies) {
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    const int rows = 4, n = 32000;
    std::vector<float> h = random_logits(static_cast<size_t>(rows) * n, 3.0f, 5);
    // Row 1: the maximum twice (the first must win); row 3: every logit equal.
    float* r1 = &h[n];
    const float mx = *std::max_element(r1, r1 + n) + 1.0f;
    r1[20000] = mx;
    r1[777] = mx;
    std::fill(h.begin() + 3 * n, h.end(), -2.5f);
    float* d = upload(h);
    int32_t* out = nullptr;
    ASSERT_EQ(cudaMalloc(&out, rows * sizeof(int32_t)), cudaSuccess);
    ASSERT_EQ(starkv::cuda::argmax_rows(d, rows, n, out, nullptr), cudaSuccess);
    const std::vector<int32_t> got = download(out, rows);
    for (int r = 0; r < rows; ++r) {
        const float* row = h.data() + static_cast<size_t>(r) * n;
        EXPECT_EQ(got[r], std::max_element(row, row + n) - row) << "row " << r;
    }
    EXPECT_EQ(got[1], 777);
    EXPECT_EQ(got[3], 0);
    cudaFree(d);
    cudaFree(out);
}

TEST(CudaSampling, FilteredDistributionAndDrawMatchCpu) {
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    const int n = 32000;
    starkv::cuda::Sampling sampling;
    ASSERT_EQ(sampling.init(n), cudaSuccess);
    float* probs = nullptr;
    int32_t* token = nullptr;
    ASSERT_EQ(cudaMalloc(&probs, n * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&token, sizeof(int32_t)), cudaSuccess);
    const starkv::cuda::SampleParams cases[] = {
        {40, 0.95f, 0.05f, 0.8f}, {0, 0.9f, 0.0f, 1.5f}, {5, 1.0f, 0.0f, 0.5f}, {0, 1.0f, 0.0f, 1.0f}, {1000, 0.5f, 0.01f, 1.0f}};
    unsigned seed = 11;
    for (const auto& p : cases) {
        for (float scale : {1.0f, 4.0f}) {
            const std::vector<float> h = random_logits(n, scale, seed++);
            // The CPU's filters, as Sampler::sample applies them.
            std::vector<starkv::Candidate> c(n);
            for (int i = 0; i < n; ++i) c[i] = {i, h[i]};
            starkv::sampling::top_k(c, p.top_k);
            starkv::sampling::top_p(c, p.top_p);
            starkv::sampling::min_p(c, p.min_p);
            const std::vector<double> pc = starkv::sampling::probabilities(c, p.temperature);
            std::vector<double> want(n, 0.0);
            for (size_t i = 0; i < c.size(); ++i) want[c[i].id] = pc[i];
            float* d = upload(h);
            for (double u : {0.05, 0.5, 0.93}) {
                ASSERT_EQ(sampling.sample(d, p, u, probs, token, nullptr), cudaSuccess);
                const std::vector<float> got = download(probs, n);
                size_t kept = 0;
                double err = 0;
                for (int i = 0; i < n; ++i) {
                    kept += got[i] > 0;
                    EXPECT_EQ(got[i] > 0, want[i] > 0) << "token " << i;
                    err = std::max(err, std::fabs(got[i] - want[i]));
                }
                EXPECT_EQ(kept, c.size()) << "top_k " << p.top_k << " top_p " << p.top_p;
                EXPECT_LT(err, 1e-6);
                double cum = 0;
                int32_t want_tok = c.back().id;
                for (size_t i = 0; i < c.size(); ++i)
                    if (u < (cum += pc[i])) {
                        want_tok = c[i].id;
                        break;
                    }
                EXPECT_EQ(download(token, 1)[0], want_tok) << "u " << u;
            }
            cudaFree(d);
        }
    }
    cudaFree(probs);
    cudaFree(token);
}
