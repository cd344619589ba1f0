// Causal grouped-query attention over the device KV cache, straightforward
// version (correctness first; the next issue makes it fast).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdint>

namespace starkv::cuda {

// Largest head_dim the kernel holds in registers.
constexpr int kMaxHeadDim = 256;

// q, out: [n][n_head * hd]. k_cache, v_cache: one layer, [n_kv][n_ctx][hd].
// Token t attends to positions [0, pos0 + t]. T = float or __nv_bfloat16.
// pos0_dev: when not null, pos0 is read from device memory (CUDA graphs).
template <typename T>
cudaError_t attention(const float* q, const T* k_cache, const T* v_cache, float* out, int n, int n_head, int n_kv,
                      int hd, int n_ctx, int pos0, cudaStream_t s, const int32_t* pos0_dev = nullptr);

}  // namespace starkv::cuda
