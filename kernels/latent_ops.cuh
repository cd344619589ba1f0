// STAR-KV latent layers on the device, straightforward version (correctness
// first; kernels/latent_attention.* is the fused fast one). The layer's cache
// holds one row per position: every KV head's key latent (ragged ranks, head
// h at k_off[h], k_rank[h] floats), then the value latent (v_rank floats at
// v_off). Keys are rebuilt from their latents (U_h z, then RoPE at the key's
// own position); values are summed in latent space and expanded with the
// head's rows of U_v.
//
// pos0_dev: when not null, pos0 is read from device memory (so a captured
// CUDA graph is reusable across steps) and the host pos0 is ignored.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>

namespace starkv::cuda {

// cache[pos0 + t][0..R) = lat[t][0..R) for t < n.
cudaError_t latent_store(const float* lat, float* cache, int n, int R, int n_ctx, int pos0,
                         const int32_t* pos0_dev, cudaStream_t s);

// Rebuilds the keys of positions [0, pos0 + n) into keys [n_kv][n_ctx][hd]:
// keys[h][p] = RoPE_p(U_h cache[p][k_off[h] ..]). k_u: heads' U_h ([hd][k_rank[h]],
// row-major) back to back, head h at hd * k_off[h]. k_off, k_rank on the device.
// inv_freq: n_dims / 2 doubles (the core's table); half_split selects the layout.
cudaError_t latent_keys(const float* cache, int R, const float* k_u, const int32_t* k_off, const int32_t* k_rank,
                        int n_kv, int hd, int n_dims, const double* inv_freq, bool half_split, float* keys,
                        int n_ctx, int n, int pos0, const int32_t* pos0_dev, cudaStream_t s);

// Causal attention of n tokens (q: [n][n_head * hd], already rotated) over the
// rebuilt keys and the value latents (cache column v_off, v_rank wide); out
// [n][n_head * hd] = U_v[kv head rows] (sum_j p_j z_j). v_u: [n_kv * hd][v_rank].
cudaError_t latent_attention_ref(const float* q, const float* keys, const float* cache, int R, int v_off, int v_rank,
                                 const float* v_u, float* out, int n, int n_head, int n_kv, int hd, int n_ctx,
                                 int pos0, const int32_t* pos0_dev, cudaStream_t s);

// The fused kernels' caches (kernels/latent_attention.cuh, fp16, one sequence):
// lat [n][R] (as latent_store takes it) written at positions pos0.. into
// k16 (KV head h at cap * k_roff[h], rows of k_pad[h] halves, [cap][k_pad[h]])
// and v16 ([cap][v_pad]). col_head[c]: the KV head of latent column c, -1 for
// the value columns (at v_off); col_in[c]: its column within that head.
// Padding columns are not written (the caller zeroes them once).
cudaError_t latent_store_f16(const float* lat, int n, int R, const int32_t* col_head, const int32_t* col_in,
                             const int32_t* k_roff, const int32_t* k_pad, int v_off, int v_pad, __half* k16,
                             __half* v16, int cap, int pos0, const int32_t* pos0_dev, cudaStream_t s);

// n_keys[i] = pos0 + first + i + 1 for i < n: query token first + i of a pass
// at pos0 attends to the positions before it and itself (causal).
cudaError_t causal_key_counts(int32_t* n_keys, int n, int first, int pos0, const int32_t* pos0_dev, cudaStream_t s);

}  // namespace starkv::cuda
