#include "kv/kv_cache.h"

#include <algorithm>
#include <new>

#include "core/error.h"

namespace starkv {

KvCache::KvCache(const ModelConfig& config, int n_ctx)
    : n_ctx_(n_ctx), n_head_kv_(config.n_head_kv), head_dim_(config.head_dim) {
    const size_t n_buffers = static_cast<size_t>(config.n_layer) * static_cast<size_t>(config.n_head_kv);
    k_.resize(n_buffers);
    v_.resize(n_buffers);
}

void KvCache::ensure(int n_tokens) {
    if (n_tokens <= allocated_) return;
    // Grow geometrically so appending token by token stays amortised O(1).
    const int target = std::min(n_ctx_, std::max({n_tokens, 2 * allocated_, 256}));
    const size_t floats = static_cast<size_t>(target) * static_cast<size_t>(head_dim_);
    try {
        for (auto* buffers : {&k_, &v_})
            for (std::vector<float>& b : *buffers) b.resize(floats);
    } catch (const std::bad_alloc&) {
        fail(STARKV_ERR_OUT_OF_MEMORY, "cannot grow the KV cache to " + std::to_string(target) + " tokens");
    }
    allocated_ = target;
}

}  // namespace starkv
