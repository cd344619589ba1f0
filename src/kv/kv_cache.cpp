#include "kv/kv_cache.h"

#include <algorithm>
#include <new>

#include "core/error.h"
#include "model/weights.h"

namespace starkv {

KvCache::KvCache(const ModelConfig& config, int n_ctx)
    : n_ctx_(n_ctx), n_head_kv_(config.n_head_kv), head_dim_(config.head_dim) {
    const size_t n_buffers = static_cast<size_t>(config.n_layer) * static_cast<size_t>(config.n_head_kv);
    k_.resize(n_buffers);
    v_.resize(n_buffers);
    k_w_.assign(n_buffers, config.head_dim);
    v_w_.assign(n_buffers, config.head_dim);
    bytes_per_token_ = bytes_per_token_uncompressed();
}

KvCache::KvCache(const ModelConfig& config, const ModelWeights& weights, int n_ctx) : KvCache(config, n_ctx) {
    uint64_t floats = 0;
    for (int l = 0; l < config.n_layer; ++l) {
        const LatentFactors& lat = weights.layers[static_cast<size_t>(l)].lat;
        for (int h = 0; h < n_head_kv_; ++h) {
            if (lat.active()) {
                k_w_[index(l, h)] = lat.k_a[static_cast<size_t>(h)].rows;
                v_w_[index(l, h)] = h == 0 ? lat.v_a.rows : 0;
            }
            floats += static_cast<uint64_t>(k_w_[index(l, h)] + v_w_[index(l, h)]);
        }
    }
    bytes_per_token_ = floats * sizeof(float);
}

void KvCache::ensure(int n_tokens) {
    if (n_tokens <= allocated_) return;
    // Grow geometrically so appending token by token stays amortised O(1).
    const int target = std::min(n_ctx_, std::max({n_tokens, 2 * allocated_, 256}));
    try {
        for (size_t i = 0; i < k_.size(); ++i) {
            k_[i].resize(static_cast<size_t>(target) * static_cast<size_t>(k_w_[i]));
            v_[i].resize(static_cast<size_t>(target) * static_cast<size_t>(v_w_[i]));
        }
    } catch (const std::bad_alloc&) {
        fail(STARKV_ERR_OUT_OF_MEMORY, "cannot grow the KV cache to " + std::to_string(target) + " tokens");
    }
    allocated_ = target;
}

}  // namespace starkv
