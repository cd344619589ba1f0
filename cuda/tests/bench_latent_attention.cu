// Decode attention over a 75% STAR-KV latent cache vs the memory floor, on
// Llama-2-7B and Llama-3-8B layer shapes (batch 16, head_dim 128). Not a test:
// run on the GPU machine; prints one table row per (model, context).
//   floor = latent bytes read / measured device-to-device copy bandwidth
//           (read + write counted, as docs/perf/cuda.md).
// Fresh random latents for each shape (on the device), CUDA events, median of
// the timed runs. The PyTorch SDPA baseline on the full cache is
// cuda/tests/sdpa_baseline.py, run in the same session.
// Usage: bench_latent_attention [bf16|f16|q4] [reps] [auto|key|fold|table|ktable|small|five] [page_rows] [batch]
// (the scores kernel; small: the small-batch single pass forced, five: Auto without it, the five-launch
// path). LATENT_SMALL_CHUNK / LATENT_SMALL_SPLIT: the single pass's chunk keys and KV-head groups
// (latent_small_tune). LATENT_FLUSH_L2=1: 128 MB written before every timed call (outside the
// events), so no latent is still in the 50 MB L2 from the previous call, as in a model where every
// other layer's weights and caches pass through L2 between two calls of one layer.
// q4: 4-bit latents (LatentFormat::Q4: codes + a (scale, min) per token and key head / 128 values).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "latent_attention.cuh"
#include "latent_decode_small.cuh"

using namespace starkv::cuda;

#define CK(x)                                                                                     \
    do {                                                                                          \
        cudaError_t e_ = (x);                                                                     \
        if (e_ != cudaSuccess) {                                                                  \
            std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            std::exit(1);                                                                         \
        }                                                                                         \
    } while (0)

namespace {

// Normal-ish random values (sum of 4 uniforms), scaled, from a hash of the index and seed.
template <typename T>
__global__ void fill_kernel(T* p, size_t n, unsigned seed, float scale) {
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<size_t>(gridDim.x) * blockDim.x) {
        unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed ^ static_cast<unsigned>(i >> 32) * 40503u;
        float s = 0.0f;
        for (int k = 0; k < 4; ++k) {
            h ^= h >> 15;
            h *= 2246822519u;
            h ^= h >> 13;
            h *= 3266489917u;
            h ^= h >> 16;
            s += (h & 0xffffff) / 16777216.0f - 0.5f;
        }
        p[i] = static_cast<T>(s * 1.7320508f * scale);  // variance of 4 uniforms = 1/3
    }
}

__global__ void fill_bytes_kernel(unsigned char* p, size_t n, unsigned seed) {
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<size_t>(gridDim.x) * blockDim.x) {
        unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        p[i] = static_cast<unsigned char>(h >> 8);
    }
}

__global__ void fill_u32_kernel(uint32_t* p, size_t n, uint32_t v) {
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<size_t>(gridDim.x) * blockDim.x)
        p[i] = v;
}

template <typename T>
void fill(T* p, size_t n, unsigned seed, float scale) {
    fill_kernel<T><<<2048, 256>>>(p, n, seed, scale);
    CK(cudaGetLastError());
}

float median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

double copy_bandwidth() {  // GB/s, read + write
    const size_t bytes = size_t(2) << 30;
    void *a, *b;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    CK(cudaMemset(a, 1, bytes));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> ms;
    for (int i = 0; i < 12; ++i) {
        CK(cudaEventRecord(e0));
        CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float t;
        CK(cudaEventElapsedTime(&t, e0, e1));
        if (i >= 2) ms.push_back(t);
    }
    CK(cudaFree(a));
    CK(cudaFree(b));
    return 2.0 * bytes / (median(ms) * 1e-3) / 1e9;
}

struct Model {
    const char* name;
    int n_head, n_kv, k_rank, v_rank;
};

void* g_flush = nullptr;  // LATENT_FLUSH_L2: 128 MB
constexpr size_t kFlushBytes = size_t(128) << 20;
void flush_l2(int i) {
    if (g_flush) CK(cudaMemsetAsync(g_flush, i & 0xff, kFlushBytes));
}
bool g_five = false;  // Auto without the small-batch pass

template <typename T>
void bench(const Model& m, int ctx, LatentFormat fmt, int reps, double bw, LatentScoresKernel sk, int page_rows,
           int batch) {
    LatentAttnShape s;
    if (g_five) s.small_batch_max = 0;
    s.n_seq = batch;
    s.n_head = m.n_head;
    s.n_kv = m.n_kv;
    s.head_dim = 128;
    s.rope_dims = 128;
    s.rope_half_split = true;
    s.v_rank = m.v_rank;
    s.ctx_cap = ctx;
    s.max_keys = ctx;
    s.format = fmt;
    s.scores_kernel = sk;
    for (int h = 0; h < m.n_kv; ++h) s.k_rank[h] = m.k_rank;
    // Paged: the same bytes as a pool of n_seq * ctx / page_rows pages, handed out in shuffled order
    // (a fragmented pool); the page table is read per tile.
    int* dtab = nullptr;
    if (page_rows > 0) {
        s.page_rows = page_rows;
        s.pages_per_seq = ctx / page_rows;
        std::vector<int> table(static_cast<size_t>(s.n_seq) * s.pages_per_seq);
        for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<int>(i);
        std::shuffle(table.begin(), table.end(), std::mt19937(ctx));
        CK(cudaMalloc(&dtab, table.size() * sizeof(int)));
        CK(cudaMemcpy(dtab, table.data(), table.size() * sizeof(int), cudaMemcpyHostToDevice));
    }
    const size_t kl = size_t(s.n_seq) * m.n_kv * latent_rank_pad(m.k_rank) * ctx;
    const size_t ku = size_t(m.n_kv) * 128 * latent_rank_pad(m.k_rank);
    const size_t vl = size_t(s.n_seq) * ctx * m.v_rank;
    const size_t vu = size_t(m.n_kv) * 128 * m.v_rank;
    T *dkl, *dku, *dvl, *dvu;
    float *dq, *dout;
    double* dinv;
    int* dn;
    const bool q4 = fmt == LatentFormat::Q4;
    // Q4: codes (half a byte per value) and one 4-byte (scale, min) per token and key head / 128 values.
    const size_t ksc = q4 ? size_t(s.n_seq) * m.n_kv * ctx : 0, vsc = q4 ? size_t(s.n_seq) * ctx * (m.v_rank / 128) : 0;
    uint32_t *dks = nullptr, *dvs = nullptr;
    CK(cudaMalloc(&dkl, q4 ? kl / 2 : kl * sizeof(T)));
    CK(cudaMalloc(&dku, ku * sizeof(T)));
    CK(cudaMalloc(&dvl, q4 ? vl / 2 : vl * sizeof(T)));
    if (q4) {
        CK(cudaMalloc(&dks, ksc * 4));
        CK(cudaMalloc(&dvs, vsc * 4));
    }
    CK(cudaMalloc(&dvu, vu * sizeof(T)));
    CK(cudaMalloc(&dq, size_t(s.n_seq) * m.n_head * 128 * sizeof(float)));
    CK(cudaMalloc(&dout, size_t(s.n_seq) * m.n_head * 128 * sizeof(float)));
    CK(cudaMalloc(&dinv, 64 * sizeof(double)));
    CK(cudaMalloc(&dn, s.n_seq * sizeof(int)));
    const unsigned seed = static_cast<unsigned>(ctx * 7919 + m.n_kv);
    if (q4) {  // random codes; scales 1/8 and minima -1 (values in [-1, 0.875])
        fill_bytes_kernel<<<2048, 256>>>(reinterpret_cast<unsigned char*>(dkl), kl / 2, seed + 1);
        fill_bytes_kernel<<<2048, 256>>>(reinterpret_cast<unsigned char*>(dvl), vl / 2, seed + 3);
        const __half2 sm = __floats2half2_rn(0.125f, -1.0f);
        uint32_t bits;
        std::memcpy(&bits, &sm, 4);
        fill_u32_kernel<<<2048, 256>>>(dks, ksc, bits);
        fill_u32_kernel<<<2048, 256>>>(dvs, vsc, bits);
        CK(cudaGetLastError());
    } else {
        fill(dkl, kl, seed + 1, 1.0f);
        fill(dvl, vl, seed + 3, 1.0f);
    }
    fill(dku, ku, seed + 2, 1.0f / std::sqrt(float(m.k_rank)));
    fill(dvu, vu, seed + 4, 1.0f / std::sqrt(float(m.v_rank)));
    fill(dq, size_t(s.n_seq) * m.n_head * 128, seed + 5, 1.0f);
    std::vector<double> inv(64);
    for (int i = 0; i < 64; ++i) inv[i] = std::pow(500000.0, -2.0 * i / 128);
    CK(cudaMemcpy(dinv, inv.data(), 64 * sizeof(double), cudaMemcpyHostToDevice));
    std::vector<int> nk(s.n_seq, ctx);
    CK(cudaMemcpy(dn, nk.data(), s.n_seq * sizeof(int), cudaMemcpyHostToDevice));
    const size_t ws_bytes = latent_attention_workspace(s);
    void* ws;
    CK(cudaMalloc(&ws, ws_bytes));
    LatentAttnArgs a;
    a.q = dq;
    a.k_lat = dkl;
    a.k_scale = dks;
    a.k_u = dku;
    a.v_lat = dvl;
    a.v_scale = dvs;
    a.v_u = dvu;
    a.n_keys = dn;
    a.inv_freq = dinv;
    a.out = dout;
    a.scale = 1.0f / std::sqrt(128.0f);
    a.page_table = dtab;

    cudaEvent_t ev[5];
    for (auto& e : ev) CK(cudaEventCreate(&e));
    std::vector<float> tot, t1, t2, t3, t4;
    for (int i = 0; i < reps + 3; ++i) {
        flush_l2(i);
        CK(cudaEventRecord(ev[0]));
        CK(latent_attention_timed(s, a, ws, ws_bytes, nullptr, ev[1], ev[2], ev[3]));
        CK(cudaEventRecord(ev[4]));
        CK(cudaEventSynchronize(ev[4]));
        if (i < 3) continue;  // warm-up
        float x[4], all;
        for (int k = 0; k < 4; ++k) CK(cudaEventElapsedTime(&x[k], ev[k], ev[k + 1]));
        CK(cudaEventElapsedTime(&all, ev[0], ev[4]));
        tot.push_back(all);
        t1.push_back(x[0]);
        t2.push_back(x[1]);
        t3.push_back(x[2]);
        t4.push_back(x[3]);
    }
    // The plain call (no events between the stages): the time reported.
    std::vector<float> plain;
    for (int i = 0; i < reps + 3; ++i) {
        flush_l2(i);
        CK(cudaEventRecord(ev[0]));
        CK(latent_attention(s, a, ws, ws_bytes, nullptr));
        CK(cudaEventRecord(ev[4]));
        CK(cudaEventSynchronize(ev[4]));
        float all;
        CK(cudaEventElapsedTime(&all, ev[0], ev[4]));
        if (i >= 3) plain.push_back(all);
    }
    // Bytes the attention must read: latents (keys + values) and the factors.
    const double key_bytes = q4 ? kl / 2.0 + ksc * 4.0 : double(kl) * sizeof(T);
    const double val_bytes = q4 ? vl / 2.0 + vsc * 4.0 : double(vl) * sizeof(T);
    const double bytes = key_bytes + val_bytes + double(ku + vu) * sizeof(T);
    const double floor_ms = bytes / (bw * 1e9) * 1e3;
    const double ms = median(plain);
    std::printf("%-10s %6d %9.1f %8.3f %8.3f %6.0f%% %8.3f | %7.3f (%4.0f%%) %7.3f (%4.0f%%) %6.3f %6.3f | ws %.0f MB\n",
                m.name, ctx, bytes / 1e6, floor_ms, ms, 100.0 * floor_ms / ms, median(tot), median(t1),
                100.0 * key_bytes / (bw * 1e9) * 1e3 / median(t1), median(t2),
                100.0 * val_bytes / (bw * 1e9) * 1e3 / median(t2), median(t3), median(t4), ws_bytes / 1e6);
    std::fflush(stdout);
    for (auto& e : ev) CK(cudaEventDestroy(e));
    CK(cudaFree(ws));
    CK(cudaFree(dkl));
    CK(cudaFree(dku));
    CK(cudaFree(dvl));
    CK(cudaFree(dvu));
    CK(cudaFree(dq));
    CK(cudaFree(dout));
    CK(cudaFree(dinv));
    CK(cudaFree(dn));
    CK(cudaFree(dks));
    CK(cudaFree(dvs));
    CK(cudaFree(dtab));
}

}  // namespace

int main(int argc, char** argv) {
    const bool bf16 = argc > 1 && std::strcmp(argv[1], "bf16") == 0;
    const bool q4 = argc > 1 && std::strcmp(argv[1], "q4") == 0;
    const int reps = argc > 2 ? std::atoi(argv[2]) : 20;
    const char* kname = argc > 3 ? argv[3] : "auto";
    const int page_rows = argc > 4 ? std::atoi(argv[4]) : 0;  // 0: contiguous caches
    const int batch = argc > 5 ? std::max(1, std::atoi(argv[5])) : 16;
    const LatentScoresKernel sk = std::strcmp(kname, "key") == 0    ? LatentScoresKernel::KeyRotation
                                  : std::strcmp(kname, "fold") == 0  ? LatentScoresKernel::QueryFold
                                  : std::strcmp(kname, "table") == 0 ? LatentScoresKernel::RopeTable
                                  : std::strcmp(kname, "ktable") == 0 ? LatentScoresKernel::KeyTable
                                  : std::strcmp(kname, "small") == 0 ? LatentScoresKernel::SmallBatch
                                                                     : LatentScoresKernel::Auto;
    g_five = std::strcmp(kname, "five") == 0;
    const char* ck = std::getenv("LATENT_SMALL_CHUNK");
    const char* sp = std::getenv("LATENT_SMALL_SPLIT");
    latent_small_tune(ck ? std::atoi(ck) : 0, sp ? std::atoi(sp) : 0);
    const char* fl = std::getenv("LATENT_FLUSH_L2");
    if (fl && *fl == '1') CK(cudaMalloc(&g_flush, kFlushBytes));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const double bw = copy_bandwidth();
    std::printf("device %s, %d SMs; device-to-device copy %.0f GB/s (read + write); latents %s; scores kernel %s; "
                "%s; batch %d; median of %d%s%s%s\n",
                prop.name, prop.multiProcessorCount, bw, bf16 ? "bf16" : q4 ? "q4 (4-bit + scales)" : "fp16", kname,
                page_rows > 0 ? ("pages of " + std::to_string(page_rows) + " rows, shuffled").c_str() : "contiguous",
                batch, reps, g_flush ? "; L2 flushed before each call" : "", ck ? "; chunk " : "", ck ? ck : "");
    std::printf("%-10s %6s %9s %8s %8s %7s %8s | %15s %15s %6s %6s\n", "model", "ctx", "MB read", "floor", "ms",
                "floor%", "serial", "scores ms(bw%)", "values ms(bw%)", "reduce", "expand");
    // 75% of the full cache: Llama-2-7B full = 32 heads x 128 x 2 = 8192 values/token -> 2048:
    // keys 32 heads x rank 32 + values rank 1024. Llama-3-8B full = 8 x 128 x 2 = 2048 -> 512:
    // keys 8 KV heads x rank 32 + values rank 256.
    const Model models[] = {{"llama2-7b", 32, 32, 32, 1024}, {"llama3-8b", 32, 8, 32, 256}};
    for (const Model& m : models)
        for (int ctx : {4096, 8192, 16384, 32768}) {
            if (bf16)
                bench<__nv_bfloat16>(m, ctx, LatentFormat::BF16, reps, bw, sk, page_rows, batch);
            else if (q4)
                bench<__half>(m, ctx, LatentFormat::Q4, reps, bw, sk, page_rows, batch);
            else
                bench<__half>(m, ctx, LatentFormat::F16, reps, bw, sk, page_rows, batch);
        }
    return 0;
}
