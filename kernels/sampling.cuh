// Token sampling on the device, with the CPU sampler's semantics
// (src/sampling/sampler.cpp): candidates ordered by logit descending, ties by
// id ascending; top-k keeps the first k (k <= 0: all); top-p the smallest
// prefix whose probability (temperature 1) reaches p; min-p those with
// prob >= p * max prob; then softmax at the temperature and a draw that walks
// the kept candidates in order. Penalties stay on the host.
#pragma once

#include <cuda_runtime.h>
#include <cstddef>
#include <cstdint>

namespace starkv::cuda {

// out[r] = index of the largest of row r's n logits (the first on ties).
cudaError_t argmax_rows(const float* logits, int n_rows, int n, int32_t* out, cudaStream_t s);

struct SampleParams {
    int top_k = 40;
    float top_p = 0.95f;
    float min_p = 0.05f;
    float temperature = 0.8f;  // > 0 (temperature 0 is argmax_rows)
};

// Device scratch for one row of n logits.
class Sampling {
public:
    Sampling() = default;
    ~Sampling();
    Sampling(const Sampling&) = delete;
    Sampling& operator=(const Sampling&) = delete;
    cudaError_t init(int n);
    // Filtered distribution of logits[0..n) into probs[0..n) (by token id, 0 for
    // removed tokens) and, drawing with u in [0, 1), the token into *token.
    // probs may be null. All on the stream; device pointers.
    cudaError_t sample(const float* logits, const SampleParams& p, double u, float* probs, int32_t* token,
                       cudaStream_t s);

private:
    int n_ = 0;
    void *temp_ = nullptr;
    size_t temp_bytes_ = 0;
    float *keys_ = nullptr;
    int32_t *ids_in_ = nullptr, *ids_ = nullptr;
};

}  // namespace starkv::cuda
