// Causal grouped-query attention over the device KV cache: a straightforward
// kernel for any pass (one block per token and query head), and a split-K
// decode kernel for one token (flash-decoding: blocks over chunks of the
// cache, each reading its keys and values once for the whole query group,
// then a combine step), which is what a decode step runs.
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

// One query token (decode): the same result as attention() with n = 1, split
// over chunks of kDecodeChunk keys so a long cache is read by many blocks.
// Takes head_dim 64 or 128 and groups of up to 8 query heads per KV head
// (else cudaErrorInvalidValue: use attention()). The grid covers n_ctx
// positions (blocks past pos0 + 1 keys return at once), so a captured graph
// serves every position. ws: attention_decode_workspace() bytes, 0 for a shape
// it does not take.
constexpr int kDecodeChunk = 256;
size_t attention_decode_workspace(int n_head, int n_kv, int hd, int n_ctx);
template <typename T>
cudaError_t attention_decode(const float* q, const T* k_cache, const T* v_cache, float* out, int n_head, int n_kv,
                             int hd, int n_ctx, int pos0, const int32_t* pos0_dev, void* ws, size_t ws_bytes,
                             cudaStream_t s);

}  // namespace starkv::cuda
