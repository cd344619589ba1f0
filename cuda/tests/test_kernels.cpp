// Each CUDA kernel against the CPU reference (src/backend/cpu_ops.h) on fresh
// random inputs, device outputs poisoned (NaN) before each run. Skips without
// a device, so CI (no GPU) still builds and runs it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "attention.cuh"
#include "backend/cpu_ops.h"
#include "elementwise.cuh"
#include "gemm.cuh"

using namespace starkv;

namespace {

bool have_device() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}
#define REQUIRE_DEVICE() \
    if (!have_device()) GTEST_SKIP() << "no CUDA device"

std::mt19937 rng(1234);
std::vector<float> randn(size_t n, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// Device copy of a host vector; freed at scope end.
template <typename T>
struct Dev {
    T* p = nullptr;
    size_t n = 0;
    explicit Dev(size_t count) : n(count) { EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)), cudaSuccess); }
    explicit Dev(const std::vector<T>& h) : Dev(h.size()) {
        EXPECT_EQ(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    }
    ~Dev() { cudaFree(p); }
    void poison() { EXPECT_EQ(cudaMemset(p, 0xff, n * sizeof(T)), cudaSuccess); }  // NaN for float
    std::vector<T> get() const {
        std::vector<T> h(n);
        EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
        return h;
    }
};

// max |a - b| / max |b|: relative to the output's scale; NaN fails.
double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
    double num = 0, den = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
        if (std::isnan(got[i])) return INFINITY;
        num = std::max(num, d);
        den = std::max(den, std::fabs(static_cast<double>(want[i])));
    }
    return den > 0 ? num / den : num;
}

std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& v) {
    std::vector<__nv_bfloat16> r(v.size());
    for (size_t i = 0; i < v.size(); ++i) r[i] = __float2bfloat16_rn(v[i]);
    return r;
}

std::vector<__half> to_f16(const std::vector<float>& v) {
    std::vector<__half> r(v.size());
    for (size_t i = 0; i < v.size(); ++i) r[i] = __float2half_rn(v[i]);
    return r;
}

}  // namespace

TEST(CudaKernels, EmbedGather) {
    REQUIRE_DEVICE();
    const int V = 50, E = 96, n = 7;
    auto table = randn(static_cast<size_t>(V) * E);
    std::vector<int32_t> tok = {3, 0, 49, 17, 17, 5, 22};
    Dev<float> dt(table), out(static_cast<size_t>(n) * E);
    Dev<int32_t> dtok(tok);
    out.poison();
    ASSERT_EQ(cuda::embed_gather(dt.p, dtok.p, n, E, out.p, nullptr), cudaSuccess);
    std::vector<float> want;
    for (int t : tok) want.insert(want.end(), table.begin() + t * E, table.begin() + (t + 1) * E);
    EXPECT_EQ(rel_err(out.get(), want), 0.0);
}

TEST(CudaKernels, RmsNorm) {
    REQUIRE_DEVICE();
    for (int E : {64, 288, 4096}) {
        const int n = 5;
        auto x = randn(static_cast<size_t>(n) * E, 3.0f), w = randn(E);
        Dev<float> dx(x), dw(w), out(x.size());
        out.poison();
        ASSERT_EQ(cuda::rms_norm(dx.p, dw.p, out.p, n, E, 1e-5f, nullptr), cudaSuccess);
        std::vector<float> want(x.size());
        for (int t = 0; t < n; ++t) cpu::rms_norm(&x[t * E], w.data(), &want[t * E], E, 1e-5f);
        EXPECT_LT(rel_err(out.get(), want), 1e-5) << "E=" << E;
    }
}

TEST(CudaKernels, RopeBothLayoutsWithScaling) {
    REQUIRE_DEVICE();
    for (auto layout : {RopeLayout::Adjacent, RopeLayout::HalfSplit}) {
        RopeConfig rc;
        rc.theta = 500000.0f;
        rc.n_dims = 64;
        rc.layout = layout;
        rc.scaling = RopeScaling::Llama3;
        rc.factor = 8.0f;
        cpu::RopeTable table(rc);
        const int n = 4, heads = 6, hd = 64, pos0 = 1000;
        auto x = randn(static_cast<size_t>(n) * heads * hd);
        Dev<float> dx(x);
        Dev<double> inv(table.inv_freq());
        ASSERT_EQ(cuda::rope(dx.p, n, heads, hd, heads * hd, rc.n_dims, inv.p, layout == RopeLayout::HalfSplit, pos0,
                             nullptr),
                  cudaSuccess);
        auto want = x;
        for (int t = 0; t < n; ++t) table.apply(&want[static_cast<size_t>(t) * heads * hd], heads, hd, pos0 + t);
        EXPECT_LT(rel_err(dx.get(), want), 1e-5) << "layout " << static_cast<int>(layout);
    }
}

TEST(CudaKernels, SwigluAndResidual) {
    REQUIRE_DEVICE();
    const size_t n = 10000;
    auto g = randn(n, 4.0f), u = randn(n);
    Dev<float> dg(g), du(u), out(n);
    out.poison();
    ASSERT_EQ(cuda::swiglu(dg.p, du.p, out.p, n, nullptr), cudaSuccess);
    std::vector<float> want(n);
    cpu::swiglu(g.data(), u.data(), want.data(), static_cast<int>(n));
    EXPECT_LT(rel_err(out.get(), want), 1e-5);

    ASSERT_EQ(cuda::add_inplace(dg.p, du.p, n, nullptr), cudaSuccess);
    for (size_t i = 0; i < n; ++i) want[i] = g[i] + u[i];
    EXPECT_EQ(rel_err(dg.get(), want), 0.0);
}

// Attention for n tokens at pos0.. against cpu::attention_group; the cache is
// filled on the device by kv_store (fp32 or bf16). split: the split-K decode
// kernel (n = 1), its position read from device memory.
template <typename T>
void check_attention(int n_head, int n_kv, int hd, int n, int pos0, double tol, bool split = false) {
    const int n_ctx = pos0 + n + 3;
    const int kvd = n_kv * hd, qd = n_head * hd, total = pos0 + n;
    auto k = randn(static_cast<size_t>(total) * kvd), v = randn(static_cast<size_t>(total) * kvd);
    auto q = randn(static_cast<size_t>(n) * qd, 2.0f);
    Dev<float> dk(k), dv(v), dq(q), out(static_cast<size_t>(n) * qd);
    Dev<T> kc(static_cast<size_t>(n_kv) * n_ctx * hd), vc(static_cast<size_t>(n_kv) * n_ctx * hd);
    ASSERT_EQ(cuda::kv_store<T>(dk.p, kc.p, total, n_kv, hd, n_ctx, 0, nullptr), cudaSuccess);
    ASSERT_EQ(cuda::kv_store<T>(dv.p, vc.p, total, n_kv, hd, n_ctx, 0, nullptr), cudaSuccess);
    out.poison();
    if (split) {
        ASSERT_EQ(n, 1);
        const size_t ws_bytes = cuda::attention_decode_workspace(n_head, n_kv, hd, n_ctx);
        Dev<float> ws((ws_bytes + 3) / 4);
        ws.poison();  // every partial the combine step reads is written first
        const std::vector<int32_t> p0{pos0};
        Dev<int32_t> dpos(p0);
        ASSERT_EQ(cuda::attention_decode<T>(dq.p, kc.p, vc.p, out.p, n_head, n_kv, hd, n_ctx, 0, dpos.p, ws.p, ws_bytes,
                                            nullptr),
                  cudaSuccess);
        // A workspace one byte short is refused.
        EXPECT_EQ(cuda::attention_decode<T>(dq.p, kc.p, vc.p, out.p, n_head, n_kv, hd, n_ctx, 0, dpos.p, ws.p,
                                            ws_bytes - 1, nullptr),
                  cudaErrorInvalidValue);
    } else {
        ASSERT_EQ(cuda::attention<T>(dq.p, kc.p, vc.p, out.p, n, n_head, n_kv, hd, n_ctx, pos0, nullptr), cudaSuccess);
    }
    // CPU: per-KV-head contiguous caches.
    const int group = n_head / n_kv;
    std::vector<float> want(static_cast<size_t>(n) * qd), scores(static_cast<size_t>(group) * total);
    for (int h = 0; h < n_kv; ++h) {
        std::vector<float> kh(static_cast<size_t>(total) * hd), vh(kh.size());
        for (int p = 0; p < total; ++p)
            for (int d = 0; d < hd; ++d) {
                kh[static_cast<size_t>(p) * hd + d] = k[static_cast<size_t>(p) * kvd + h * hd + d];
                vh[static_cast<size_t>(p) * hd + d] = v[static_cast<size_t>(p) * kvd + h * hd + d];
            }
        for (int t = 0; t < n; ++t) {
            const size_t qo = static_cast<size_t>(t) * qd + static_cast<size_t>(h) * group * hd;
            cpu::attention_group(&q[qo], kh.data(), vh.data(), hd, pos0 + t + 1, group, hd, &want[qo], scores.data());
        }
    }
    EXPECT_LT(rel_err(out.get(), want), tol) << "heads " << n_head << "/" << n_kv << " hd " << hd << " n " << n;
}

TEST(CudaKernels, AttentionF32) {
    REQUIRE_DEVICE();
    check_attention<float>(8, 4, 8, 3, 0, 1e-5);     // stories260K's shape, first token
    check_attention<float>(8, 4, 8, 5, 37, 1e-5);
    check_attention<float>(32, 8, 128, 2, 700, 1e-5);  // Llama-3-8B's heads
    check_attention<float>(9, 3, 64, 4, 130, 1e-5);
}

TEST(CudaKernels, AttentionBf16Cache) {
    REQUIRE_DEVICE();
    check_attention<__nv_bfloat16>(32, 8, 128, 2, 700, 1e-2);
    check_attention<__nv_bfloat16>(8, 4, 8, 5, 37, 1e-2);
}

// The split-K decode kernel: MHA, GQA groups 3, 4 and 8, head_dim 64 and 128, contexts that end
// inside the first chunk, on a chunk boundary (256, 512 keys) and a key past it, fp32 and bf16.
TEST(CudaKernels, AttentionDecodeSplitK) {
    REQUIRE_DEVICE();
    for (int pos0 : {0, 100, 255, 256, 511, 700}) {
        check_attention<float>(32, 8, 128, 1, pos0, 1e-5, true);
        check_attention<float>(32, 32, 128, 1, pos0, 1e-5, true);
        check_attention<float>(9, 3, 64, 1, pos0, 1e-5, true);
        check_attention<float>(16, 2, 64, 1, pos0, 1e-5, true);
        check_attention<__nv_bfloat16>(32, 8, 128, 1, pos0, 1e-2, true);
    }
    // Shapes it does not take are refused (attention() serves them).
    EXPECT_EQ(cuda::attention_decode<float>(nullptr, nullptr, nullptr, nullptr, 8, 4, 8, 64, 0, nullptr, nullptr, 0,
                                            nullptr),
              cudaErrorInvalidValue);
}

TEST(CudaKernels, GemmF32Bf16AndF16) {
    REQUIRE_DEVICE();
    cuda::Gemm gemm;
    std::string why;
    ASSERT_TRUE(gemm.init(32u << 20, &why)) << why;
    ThreadPool pool(4);
    for (auto [rows, cols, n] : {std::tuple{288, 64, 1}, std::tuple{300, 256, 5}, std::tuple{512, 4096, 64}}) {
        Matrix w(rows, cols);
        w.data = randn(static_cast<size_t>(rows) * cols, 0.05f);
        auto x = randn(static_cast<size_t>(n) * cols);
        std::vector<float> want(static_cast<size_t>(n) * rows);
        cpu::matmul(w, x.data(), n, want.data(), pool);
        Dev<float> dw(w.data), dx(x), y(want.size());
        y.poison();
        ASSERT_TRUE(gemm.run(dw.p, dx.p, y.p, rows, cols, n, cuda::kGemmF32, nullptr, &why)) << why;
        EXPECT_LT(rel_err(y.get(), want), 1e-5) << rows << "x" << cols << "x" << n << " fp32";
        Dev<__nv_bfloat16> bw(to_bf16(w.data)), bx(to_bf16(x));
        y.poison();
        ASSERT_TRUE(gemm.run(bw.p, bx.p, y.p, rows, cols, n, cuda::kGemmBf16, nullptr, &why)) << why;
        EXPECT_LT(rel_err(y.get(), want), 1e-2) << rows << "x" << cols << "x" << n << " bf16";
        // fp16 keeps 3 more mantissa bits than bf16: a tighter bound.
        Dev<__half> hw(to_f16(w.data)), hx(to_f16(x));
        y.poison();
        ASSERT_TRUE(gemm.run(hw.p, hx.p, y.p, rows, cols, n, cuda::kGemmF16, nullptr, &why)) << why;
        EXPECT_LT(rel_err(y.get(), want), 2e-3) << rows << "x" << cols << "x" << n << " f16";
    }
}

// Decode-shaped GEMMs of one Llama-2-7B layer (n = 1): achieved weight
// bandwidth, to compare with the device's measured copy bandwidth (the floor).
TEST(CudaBench, Llama7bLayerDecodeGemms) {
    REQUIRE_DEVICE();
    if (!std::getenv("STARKV_CUDA_BENCH")) GTEST_SKIP() << "set STARKV_CUDA_BENCH=1";
    const int E = 4096, F = 11008, layers = 4;
    cuda::Gemm gemm;
    std::string why;
    ASSERT_TRUE(gemm.init(32u << 20, &why)) << why;
    // Measured bandwidth: a device-to-device copy of 1 GiB (read + write).
    {
        const size_t bytes = 1ull << 30;
        void *a = nullptr, *b = nullptr;
        ASSERT_EQ(cudaMalloc(&a, bytes), cudaSuccess);
        ASSERT_EQ(cudaMalloc(&b, bytes), cudaSuccess);
        cudaEvent_t e0, e1;
        cudaEventCreate(&e0);
        cudaEventCreate(&e1);
        cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
        cudaEventRecord(e0);
        for (int i = 0; i < 10; ++i) cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        std::printf("[bench] device copy bandwidth: %.0f GB/s (read+write)\n", 2.0 * bytes * 10 / (ms * 1e6));
        cudaFree(a);
        cudaFree(b);
    }
    for (bool bf16 : {false, true}) {
        const size_t es = bf16 ? 2 : 4;
        struct Shape { int rows, cols; };
        const Shape shapes[] = {{E, E}, {E, E}, {E, E}, {E, E}, {F, E}, {F, E}, {E, F}};
        std::vector<void*> ws;
        size_t weight_bytes = 0;
        for (int l = 0; l < layers; ++l)
            for (auto s : shapes) {
                void* p = nullptr;
                ASSERT_EQ(cudaMalloc(&p, static_cast<size_t>(s.rows) * s.cols * es), cudaSuccess);
                cudaMemset(p, 0, static_cast<size_t>(s.rows) * s.cols * es);
                ws.push_back(p);
                weight_bytes += static_cast<size_t>(s.rows) * s.cols * es;
            }
        void *x = nullptr, *y = nullptr;
        cudaMalloc(&x, F * es);
        cudaMalloc(&y, F * 4);
        cudaMemset(x, 0, F * es);
        auto step = [&] {
            size_t i = 0;
            for (int l = 0; l < layers; ++l)
                for (auto s : shapes)
                    ASSERT_TRUE(gemm.run(ws[i++], x, static_cast<float*>(y), s.rows, s.cols, 1, bf16, nullptr, &why));
        };
        step();
        cudaDeviceSynchronize();
        cudaEvent_t e0, e1;
        cudaEventCreate(&e0);
        cudaEventCreate(&e1);
        const int iters = 20;
        cudaEventRecord(e0);
        for (int it = 0; it < iters; ++it) step();
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        const double per = ms / iters;
        std::printf("[bench] %s: %d Llama-2-7B layers' projections at n=1: %.3f ms/step, %.0f GB/s of weights "
                    "(%.1f MB)\n",
                    bf16 ? "bf16" : "fp32", layers, per, weight_bytes / (per * 1e6), weight_bytes / 1e6);
        for (void* p : ws) cudaFree(p);
        cudaFree(x);
        cudaFree(y);
    }
}
