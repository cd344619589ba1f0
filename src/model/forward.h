// The Llama forward pass on the CPU backend: a batch of rows (tokens of one
// or several sequences, each at its own position) in, KV rows written to the
// paged pool, logits of the chosen rows out.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/thread_pool.h"
#include "kv/kv_cache.h"
#include "kv/paged_rows.h"
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
    // Calibration probes only (calibration/probe.h): observe_residual sees the
    // residual stream entering each layer (rows' positions given); with
    // resume set, a pass starts at layer resume_layer and resume writes the
    // rows' residual stream there in place of the embeddings, so a change
    // confined to layers >= resume_layer is measured without the layers below.
    std::function<void(int layer, const int32_t* pos, const float* x, int n)> observe_residual;
    std::function<void(const int32_t* pos, float* x, int n)> resume;
    int resume_layer = 0;
    void reserve(const ModelConfig& c, int n_tokens, int n_ctx, int n_threads);
};

// The rows of one pass: row t is tokens[t] of sequence seq[t] (an index into
// the PagedRows) at position pos[t]. The rows of one sequence are at
// consecutive positions, in order, and every position below a sequence's
// first row is already in the cache: row t attends to positions [0, pos[t]].
struct ForwardRows {
    const int32_t* tokens = nullptr;
    const int32_t* pos = nullptr;
    const int32_t* seq = nullptr;
    int n = 0;
    const int32_t* logit_rows = nullptr;  // rows whose logits are wanted, ascending
    int n_logits = 0;
};

// Writes the rows' keys/values (in fmt's formats) into kv and, when logits is
// non-null, n_vocab floats per logit row into it.
void forward(const Model& model, const KvCache& fmt, const PagedRows& kv, ForwardScratch& s, ThreadPool& pool,
             const ForwardRows& rows, float* logits);

}  // namespace starkv
