// Decode speed of the CUDA backend on a synthetic Llama-2-7B-shaped stack
// (random weights, a few layers), through the backend's C table, beside the
// floor: bytes read per step (weights + KV) / measured device bandwidth.
// Usage: starkv_cuda_synthetic [layers=4] [context=512] [steps=64]
#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "backend/backend_api.h"
#include "starkv/starkv.h"

extern "C" const starkv_backend_api* starkv_cuda_backend_api(void);

namespace {

double copy_bandwidth() {
    const size_t bytes = 1ull << 30;
    void *a = nullptr, *b = nullptr;
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) return 0;
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    cudaEventRecord(e0);
    for (int i = 0; i < 10; ++i) cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    cudaFree(a);
    cudaFree(b);
    return 2.0 * bytes * 10 / (ms * 1e-3);  // read + write
}

}  // namespace

int main(int argc, char** argv) {
    const int layers = argc > 1 ? std::atoi(argv[1]) : 4;
    const int context = argc > 2 ? std::atoi(argv[2]) : 512;
    const int steps = argc > 3 ? std::atoi(argv[3]) : 64;
    const int E = 4096, F = 11008, H = 32, HD = 128, V = 32000;
    const starkv_backend_api* api = starkv_cuda_backend_api();
    char msg[512] = {};
    if (api->probe(0, msg, sizeof msg) != STARKV_OK) {
        std::printf("no device: %s\n", msg);
        return 0;
    }
    const double bw = copy_bandwidth();
    std::printf("device copy bandwidth %.0f GB/s (read+write)\n", bw / 1e9);

    // One random buffer, as large as the largest matrix, backs every weight.
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 0.02f);
    std::vector<float> big(static_cast<size_t>(V) * E), norm(E, 1.0f);
    for (auto& x : big) x = nd(rng);
    std::vector<double> inv_freq(HD / 2);
    for (int i = 0; i < HD / 2; ++i) inv_freq[i] = std::pow(10000.0, -2.0 * i / HD);
    std::vector<starkv_backend_layer> L(layers);
    for (auto& l : L) l = {norm.data(), big.data(), big.data(), big.data(), big.data(),
                           norm.data(), big.data(), big.data(), big.data()};

    for (int dtype : {STARKV_DTYPE_F32, STARKV_DTYPE_BF16}) {
        starkv_backend_model d{};
        d.struct_size = sizeof d;
        d.n_vocab = V; d.n_embd = E; d.n_ff = F; d.n_layer = layers;
        d.n_head = H; d.n_head_kv = H; d.head_dim = HD;
        d.n_ctx = context + steps; d.max_tokens = 64; d.rms_eps = 1e-5f;
        d.rope_layout = STARKV_ROPE_ADJACENT; d.rope_n_dims = HD; d.rope_inv_freq = inv_freq.data();
        d.weight_dtype = dtype; d.kv_dtype = dtype; d.device = 0;
        d.tok_embd = big.data(); d.output_norm = norm.data(); d.output = big.data(); d.layers = L.data();
        void* h = nullptr;
        if (api->create(&d, &h, msg, sizeof msg) != STARKV_OK) {
            std::printf("create failed: %s\n", msg);
            return 1;
        }
        std::vector<int32_t> toks(64);
        for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<int32_t>((i * 7919) % V);
        std::vector<float> logits(static_cast<size_t>(V) * 64);
        int pos = 0;
        auto t0 = std::chrono::steady_clock::now();
        for (; pos + 64 <= context; pos += 64)
            if (api->forward(h, toks.data(), 64, pos, 0, logits.data(), msg, sizeof msg) != STARKV_OK) {
                std::printf("prefill failed: %s\n", msg);
                return 1;
            }
        auto t1 = std::chrono::steady_clock::now();
        const int prefilled = pos;
        for (int s = 0; s < steps; ++s, ++pos)
            if (api->forward(h, toks.data() + s % 64, 1, pos, 0, logits.data(), msg, sizeof msg) != STARKV_OK) {
                std::printf("decode failed: %s\n", msg);
                return 1;
            }
        auto t2 = std::chrono::steady_clock::now();
        const double es = dtype == STARKV_DTYPE_BF16 ? 2 : 4;
        const double w_bytes = (static_cast<double>(layers) * (4.0 * E * E + 3.0 * E * F) + 1.0 * V * E) * es;
        const double kv_bytes = 2.0 * layers * H * HD * es * (prefilled + steps / 2.0);  // mean over the steps
        const double ms = std::chrono::duration<double, std::milli>(t2 - t1).count() / steps;
        const double floor_ms = (w_bytes + kv_bytes) / bw * 1e3;
        std::printf("%s: %d layers + head, context %d: prefill %.0f tok/s; decode %.3f ms/token (%.0f tok/s), "
                    "floor %.3f ms (%.1f MB weights + %.1f MB KV per step) -> %.0f%% of floor speed; device %.0f MB\n",
                    dtype == STARKV_DTYPE_BF16 ? "bf16" : "fp32", layers, prefilled,
                    prefilled / std::chrono::duration<double>(t1 - t0).count(), ms, 1e3 / ms, floor_ms,
                    w_bytes / 1e6, kv_bytes / 1e6, 100.0 * floor_ms / ms, api->device_bytes(h) / 1e6);
        api->destroy(h);
    }
    return 0;
}
