// The STAR-KV latent kernels (kernels/latent_ops.cu) against a float64
// reference written from the definition: keys rebuilt per KV head (ragged
// ranks) and rotated at their own positions, softmax over the causal prefix,
// values summed in latent space and expanded by U_v. The prefix is longer than
// one chunk of the online softmax; the position comes from the host or from
// device memory (the CUDA graph's way).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "latent_ops.cuh"

namespace {

bool have_device() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

template <typename T>
T* upload(const std::vector<T>& h) {
    T* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(h.size(), 1) * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    return p;
}

struct Case {
    int n_head, n_kv, hd, n_dims;
    bool half_split;
    std::vector<int> ranks;
    int rv, n_ctx, pos0, n;
};

void run_case(const Case& c, bool pos_on_device) {
    std::mt19937 rng(99);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    auto randn = [&](size_t k) {
        std::vector<float> v(k);
        for (auto& x : v) x = nd(rng);
        return v;
    };
    std::vector<int32_t> off, rank(c.ranks.begin(), c.ranks.end());
    int Rk = 0;
    for (int r : c.ranks) {
        off.push_back(Rk);
        Rk += r;
    }
    const int R = Rk + c.rv, n_pos = c.pos0 + c.n, qd = c.n_head * c.hd;
    // Latents of the earlier positions already in the cache; the n new ones stored by latent_store.
    std::vector<float> cache = randn(static_cast<size_t>(c.n_ctx) * R), fresh = randn(static_cast<size_t>(c.n) * R);
    std::vector<float> ku = randn(static_cast<size_t>(c.hd) * Rk), vu = randn(static_cast<size_t>(c.n_kv) * c.hd * c.rv);
    std::vector<float> q = randn(static_cast<size_t>(c.n) * qd);
    for (auto& x : ku) x *= 0.3f;
    std::vector<double> inv_freq(c.n_dims / 2);
    for (int i = 0; i < c.n_dims / 2; ++i) inv_freq[i] = std::pow(10000.0, -2.0 * i / c.n_dims);

    float* d_cache = upload(cache);
    float* d_fresh = upload(fresh);
    float* d_ku = upload(ku);
    float* d_vu = upload(vu);
    float* d_q = upload(q);
    int32_t* d_off = upload(off);
    int32_t* d_rank = upload(rank);
    double* d_if = upload(inv_freq);
    int32_t* d_pos = upload(std::vector<int32_t>{c.pos0});
    float *d_keys = nullptr, *d_out = nullptr;
    ASSERT_EQ(cudaMalloc(&d_keys, static_cast<size_t>(c.n_kv) * c.n_ctx * c.hd * 4), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&d_out, static_cast<size_t>(c.n) * qd * 4), cudaSuccess);
    ASSERT_EQ(cudaMemset(d_out, 0xff, static_cast<size_t>(c.n) * qd * 4), cudaSuccess);
    const int32_t* pd = pos_on_device ? d_pos : nullptr;
    const int host_pos0 = pos_on_device ? -12345 : c.pos0;  // must be ignored
    using namespace starkv::cuda;
    ASSERT_EQ(latent_store(d_fresh, d_cache, c.n, R, c.n_ctx, pos_on_device ? 0 : c.pos0, pd, nullptr), cudaSuccess);
    ASSERT_EQ(latent_keys(d_cache, R, d_ku, d_off, d_rank, c.n_kv, c.hd, c.n_dims, d_if, c.half_split, d_keys, c.n_ctx,
                          c.n, host_pos0, pd, nullptr),
              cudaSuccess);
    ASSERT_EQ(latent_attention_ref(d_q, d_keys, d_cache, R, Rk, c.rv, d_vu, d_out, c.n, c.n_head, c.n_kv, c.hd,
                                   c.n_ctx, host_pos0, pd, nullptr),
              cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<float> out(static_cast<size_t>(c.n) * qd);
    ASSERT_EQ(cudaMemcpy(out.data(), d_out, out.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);

    // Reference.
    for (int t = 0; t < c.n; ++t)
        std::copy(fresh.begin() + static_cast<size_t>(t) * R, fresh.begin() + static_cast<size_t>(t + 1) * R,
                  cache.begin() + static_cast<size_t>(c.pos0 + t) * R);
    const int half = c.n_dims / 2;
    std::vector<double> keys(static_cast<size_t>(c.n_kv) * n_pos * c.hd);
    for (int h = 0; h < c.n_kv; ++h)
        for (int p = 0; p < n_pos; ++p) {
            double* k = &keys[(static_cast<size_t>(h) * n_pos + p) * c.hd];
            for (int d = 0; d < c.hd; ++d) {
                double s = 0;
                for (int r = 0; r < rank[h]; ++r)
                    s += static_cast<double>(ku[static_cast<size_t>(c.hd) * off[h] + d * rank[h] + r]) *
                         cache[static_cast<size_t>(p) * R + off[h] + r];
                k[d] = s;
            }
            for (int i = 0; i < half; ++i) {
                const double a = p * inv_freq[i];
                const int ia = c.half_split ? i : 2 * i, ib = c.half_split ? i + half : 2 * i + 1;
                const double x0 = k[ia], x1 = k[ib];
                k[ia] = x0 * std::cos(a) - x1 * std::sin(a);
                k[ib] = x0 * std::sin(a) + x1 * std::cos(a);
            }
        }
    double num = 0, den = 0;
    const int group = c.n_head / c.n_kv;
    for (int t = 0; t < c.n; ++t)
        for (int qh = 0; qh < c.n_head; ++qh) {
            const int h = qh / group, nk = c.pos0 + t + 1;
            std::vector<double> sc(nk);
            double mx = -1e300, sum = 0;
            for (int j = 0; j < nk; ++j) {
                double s = 0;
                for (int d = 0; d < c.hd; ++d)
                    s += q[static_cast<size_t>(t) * qd + qh * c.hd + d] * keys[(static_cast<size_t>(h) * n_pos + j) * c.hd + d];
                sc[j] = s / std::sqrt(static_cast<double>(c.hd));
                mx = std::max(mx, sc[j]);
            }
            for (double& s : sc) sum += s = std::exp(s - mx);
            std::vector<double> acc(c.rv, 0.0);
            for (int j = 0; j < nk; ++j)
                for (int r = 0; r < c.rv; ++r) acc[r] += sc[j] / sum * cache[static_cast<size_t>(j) * R + Rk + r];
            for (int d = 0; d < c.hd; ++d) {
                double o = 0;
                for (int r = 0; r < c.rv; ++r) o += vu[(static_cast<size_t>(h) * c.hd + d) * c.rv + r] * acc[r];
                const float g = out[static_cast<size_t>(t) * qd + qh * c.hd + d];
                ASSERT_FALSE(std::isnan(g));
                num = std::max(num, std::fabs(g - o));
                den = std::max(den, std::fabs(o));
            }
        }
    EXPECT_LT(num / den, 1e-5) << "hd " << c.hd << " pos on device " << pos_on_device;
    for (void* p : {static_cast<void*>(d_cache), static_cast<void*>(d_fresh), static_cast<void*>(d_ku),
                    static_cast<void*>(d_vu), static_cast<void*>(d_q), static_cast<void*>(d_off),
                    static_cast<void*>(d_rank), static_cast<void*>(d_if), static_cast<void*>(d_pos),
                    static_cast<void*>(d_keys), static_cast<void*>(d_out)})
        cudaFree(p);
}

}  // namespace

TEST(CudaKernels, LatentAttentionMatchesDefinition) {
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    // stories260K-like (adjacent pairs), and a half-split one with partial rotary dims.
    const Case a{8, 4, 8, 8, false, {3, 5, 2, 8}, 6, 320, 290, 5};
    const Case b{6, 2, 64, 32, true, {17, 40}, 48, 600, 511, 3};
    for (bool dev : {false, true}) {
        run_case(a, dev);
        run_case(b, dev);
    }
}
