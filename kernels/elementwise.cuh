// Element-wise and per-row kernels of the Llama forward pass. Each dispatch
// function launches on `stream` and returns the launch's error (never aborts).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>

namespace starkv::cuda {

// out[t] = table[tokens[t]] (rows of E floats).
cudaError_t embed_gather(const float* table, const int32_t* tokens, int n, int E, float* out, cudaStream_t s);
// out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w, n rows of E.
cudaError_t rms_norm(const float* x, const float* w, float* out, int n, int E, float eps, cudaStream_t s);
// Rotates n_heads heads (head_dim apart, rows of row_stride floats) of token t at
// position pos0 + t. inv_freq: n_dims / 2 doubles. half_split selects the layout.
// pos0_dev (here and below): when not null, pos0 is read from device memory, so
// that a captured CUDA graph serves every step; the host pos0 is then ignored.
cudaError_t rope(float* x, int n, int n_heads, int head_dim, int row_stride, int n_dims, const double* inv_freq,
                 bool half_split, int pos0, cudaStream_t s, const int32_t* pos0_dev = nullptr);
// out = silu(gate) * up (out may alias gate).
cudaError_t swiglu(const float* gate, const float* up, float* out, size_t n, cudaStream_t s);
// x += y.
cudaError_t add_inplace(float* x, const float* y, size_t n, cudaStream_t s);
// fp32 -> bf16 (round to nearest even).
cudaError_t to_bf16(const float* x, __nv_bfloat16* out, size_t n, cudaStream_t s);
// fp32 -> fp16 (round to nearest even; beyond 65504 becomes inf).
cudaError_t to_f16(const float* x, __half* out, size_t n, cudaStream_t s);
// Writes n tokens' keys/values ([t][n_kv * hd]) into a cache laid out
// [kv_head][n_ctx][hd] at positions pos0.. ; T = float or __nv_bfloat16.
template <typename T>
cudaError_t kv_store(const float* src, T* cache, int n, int n_kv, int hd, int n_ctx, int pos0, cudaStream_t s,
                     const int32_t* pos0_dev = nullptr);

}  // namespace starkv::cuda
