// Small-batch decode over a STAR-KV latent cache: two launches instead of five.
//   1. pass: a block per (chunk of keys, group of KV heads, sequence) computes the
//      scores of all its heads for the chunk (key latents rebuilt per KV head on
//      tensor cores, RoPE from cos/sin of absolute positions computed in the block,
//      no table launch), the chunk's softmax (max, sum), and P x Vlat for all its
//      heads (each value-latent tile read once per block, mma.sync), written as
//      the chunk's partial sum (flash-decoding style).
//   2. combine: a block per (64 value-rank columns, KV head, sequence) merges the
//      chunks' partials of its columns with the global softmax and applies its
//      columns of U_v (the expand), adding into the output (zeroed by pass 1).
// Same semantics, shapes and layouts as latent_attention (latent_attention.cuh);
// latent_attention dispatches here for small batches (LatentAttnShape::small_batch_max).
// fp16 and bf16 latents, contiguous or paged caches; Q4 is not taken (falls back).
#pragma once

#include "latent_attention.cuh"

namespace starkv::cuda {

// True when the single pass takes this shape (format, limits, shared memory).
bool latent_small_supported(const LatentAttnShape& shape);
// Workspace bytes the single pass needs for this shape (0 when not supported).
size_t latent_small_workspace(const LatentAttnShape& shape);
// Enough for every call with n_seq and max_keys at most the shape's (0 when not supported).
size_t latent_small_workspace_bound(const LatentAttnShape& shape);
// Enqueues the two launches; cudaErrorInvalidValue for a shape it does not take or a short
// workspace. The events (may be null) are recorded between the two launches (benchmarks: the
// three stage events of latent_attention_timed).
cudaError_t latent_small_attention(const LatentAttnShape& shape, const LatentAttnArgs& args, void* workspace,
                                   size_t workspace_bytes, cudaStream_t s, cudaEvent_t after_pass = nullptr,
                                   cudaEvent_t after_pass2 = nullptr, cudaEvent_t after_pass3 = nullptr);
// Benchmark knob: keys per chunk (a multiple of 64) and KV-head groups per chunk; 0 = the
// built-in choice. Process-wide; not for library callers.
void latent_small_tune(int chunk_keys, int head_split);

}  // namespace starkv::cuda
