// The Llama forward pass on the CPU backend: a batch of tokens at consecutive
// positions in, KV rows appended, logits out.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/model.h"

namespace starkv {

// Activations of one micro-batch, reused across calls (no allocation per step).
struct ForwardScratch {
    int capacity = 0;  // tokens
    std::vector<float> x, xn, q, k, v, attn, proj, gate, up;
    std::vector<float> att_scores;  // per pool thread: group * n_ctx attention scores
    size_t scores_per_thread = 0;
    // STAR-KV layers: latents of the micro-batch, keys reconstructed for every
    // cached position of one layer, per-thread latent value sums. Grown on use.
    std::vector<float> lat, keys, lat_acc;
    // RoPE cos/sin per position ([pos][n_dims / 2] pairs), grown on use: latent
    // layers rotate every cached key at every step.
    std::vector<float> rope_cs;
    std::vector<float> u_t;  // key up-projections of one layer, transposed ([r_h][head_dim] per head)
    int rope_positions = 0;
    // Calibration only: called per layer with the K/V projections' input
    // (n rows of n_embd normed hidden states). Unset in inference.
    std::function<void(int layer, const float* xn, int n)> observe_kv_input;
    void reserve(const ModelConfig& c, int n_tokens, int n_ctx, int n_threads);
};

// Runs tokens[0..n) at positions pos0..pos0+n-1 (all < kv.n_ctx()), writing
// their keys/values into kv. logits receives n_vocab floats per token when
// all_logits, else only the last token's; logits == nullptr skips the head.
void forward(const Model& model, KvCache& kv, ForwardScratch& s, ThreadPool& pool, const int32_t* tokens,
             int n, int pos0, bool all_logits, float* logits);

}  // namespace starkv
