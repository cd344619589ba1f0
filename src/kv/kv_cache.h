// The KV cache: fp32 rows per layer, KV head and position. A plain layer
// holds keys and values (head_dim floats per head); a STAR-KV layer holds
// latents instead: a key latent per KV head with that head's rank, and one
// value latent of rank r_v (kept in the row of KV head 0; the other heads'
// value rows are empty).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace starkv {

struct ModelWeights;

class KvCache {
public:
    // Capacity n_ctx tokens; memory is taken as tokens arrive (ensure), so a
    // large n_ctx costs nothing until it is used. All layers plain.
    KvCache(const ModelConfig& config, int n_ctx);
    // Row widths from the weights: latent layers get their ranks.
    KvCache(const ModelConfig& config, const ModelWeights& weights, int n_ctx);

    // Makes room for positions [0, n_tokens) (n_tokens <= n_ctx). Throws
    // Error(STARKV_ERR_OUT_OF_MEMORY) and keeps the cache intact when the
    // memory cannot be had.
    void ensure(int n_tokens);

    int n_ctx() const { return n_ctx_; }
    int head_dim() const { return head_dim_; }
    // Rows of one KV head are contiguous over positions
    // ([layer][kv_head][pos][width]), so attention streams them.
    float* k(int layer, int kv_head, int pos) { return k_[index(layer, kv_head)].data() + offset(k_w_, layer, kv_head, pos); }
    float* v(int layer, int kv_head, int pos) { return v_[index(layer, kv_head)].data() + offset(v_w_, layer, kv_head, pos); }
    const float* k(int layer, int kv_head, int pos) const { return k_[index(layer, kv_head)].data() + offset(k_w_, layer, kv_head, pos); }
    const float* v(int layer, int kv_head, int pos) const { return v_[index(layer, kv_head)].data() + offset(v_w_, layer, kv_head, pos); }
    // Floats per position of a row (head_dim in plain layers, a rank in latent ones).
    int k_width(int layer, int kv_head) const { return k_w_[index(layer, kv_head)]; }
    int v_width(int layer, int kv_head) const { return v_w_[index(layer, kv_head)]; }

    uint64_t bytes_per_token() const { return bytes_per_token_; }
    // What the same model's cache would take with every layer plain.
    uint64_t bytes_per_token_uncompressed() const {
        return 2ull * k_.size() * static_cast<uint64_t>(head_dim_) * sizeof(float);
    }
    uint64_t bytes_reserved() const { return bytes_per_token() * static_cast<uint64_t>(allocated_); }

private:
    size_t index(int layer, int kv_head) const {
        return static_cast<size_t>(layer) * static_cast<size_t>(n_head_kv_) + static_cast<size_t>(kv_head);
    }
    static size_t offset(const std::vector<int>& w, size_t i, int pos) {
        return static_cast<size_t>(pos) * static_cast<size_t>(w[i]);
    }
    size_t offset(const std::vector<int>& w, int layer, int kv_head, int pos) const {
        return offset(w, index(layer, kv_head), pos);
    }

    int n_ctx_;
    int allocated_ = 0;  // positions backed by memory
    int n_head_kv_;
    int head_dim_;
    uint64_t bytes_per_token_ = 0;
    std::vector<int> k_w_, v_w_;             // row width per (layer, kv head)
    std::vector<std::vector<float>> k_, v_;  // one buffer per (layer, kv head)
};

}  // namespace starkv
