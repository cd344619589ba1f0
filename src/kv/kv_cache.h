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
    size_t row_floats() const { return row_; }  // floats per position per layer (n_head_kv * head_dim)
    float* k(int layer, int pos) { return k_[static_cast<size_t>(layer)].data() + static_cast<size_t>(pos) * row_; }
    float* v(int layer, int pos) { return v_[static_cast<size_t>(layer)].data() + static_cast<size_t>(pos) * row_; }
    const float* k(int layer, int pos) const { return k_[static_cast<size_t>(layer)].data() + static_cast<size_t>(pos) * row_; }
    const float* v(int layer, int pos) const { return v_[static_cast<size_t>(layer)].data() + static_cast<size_t>(pos) * row_; }

    uint64_t bytes_per_token() const { return 2ull * k_.size() * row_ * sizeof(float); }
    uint64_t bytes_reserved() const { return bytes_per_token() * static_cast<uint64_t>(n_ctx_); }

private:
    int n_ctx_;
    size_t row_;
    std::vector<std::vector<float>> k_, v_;
};

}  // namespace starkv
