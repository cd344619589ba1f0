// The plain (uncompressed) KV cache: fp32 keys and values per layer and
// position. The STAR-KV latent cache replaces this behind the same calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace starkv {

class KvCache {
public:
    // Throws Error(STARKV_ERR_OUT_OF_MEMORY) when the buffers cannot be had.
    KvCache(const ModelConfig& config, int n_ctx);

    int n_ctx() const { return n_ctx_; }
    int head_dim() const { return head_dim_; }
    // Keys and values of one KV head are contiguous over positions
    // ([layer][kv_head][pos][head_dim]), so attention streams them.
    float* k(int layer, int kv_head, int pos) { return k_[index(layer, kv_head, pos)].data() + offset(pos); }
    float* v(int layer, int kv_head, int pos) { return v_[index(layer, kv_head, pos)].data() + offset(pos); }
    const float* k(int layer, int kv_head, int pos) const { return k_[index(layer, kv_head, pos)].data() + offset(pos); }
    const float* v(int layer, int kv_head, int pos) const { return v_[index(layer, kv_head, pos)].data() + offset(pos); }

    uint64_t bytes_per_token() const {
        return 2ull * k_.size() * static_cast<uint64_t>(head_dim_) * sizeof(float);
    }
    uint64_t bytes_reserved() const { return bytes_per_token() * static_cast<uint64_t>(n_ctx_); }

private:
    size_t index(int layer, int kv_head, int) const {
        return static_cast<size_t>(layer) * static_cast<size_t>(n_head_kv_) + static_cast<size_t>(kv_head);
    }
    size_t offset(int pos) const { return static_cast<size_t>(pos) * static_cast<size_t>(head_dim_); }

    int n_ctx_;
    int n_head_kv_;
    int head_dim_;
    std::vector<std::vector<float>> k_, v_;  // one buffer per (layer, kv head)
};

}  // namespace starkv
