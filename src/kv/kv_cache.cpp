#include "kv/kv_cache.h"

#include <new>

#include "core/error.h"

namespace starkv {

KvCache::KvCache(const ModelConfig& config, int n_ctx)
    : n_ctx_(n_ctx), row_(static_cast<size_t>(config.n_head_kv) * static_cast<size_t>(config.head_dim)) {
    try {
        k_.resize(static_cast<size_t>(config.n_layer));
        v_.resize(static_cast<size_t>(config.n_layer));
        for (int l = 0; l < config.n_layer; ++l) {
            k_[static_cast<size_t>(l)].assign(row_ * static_cast<size_t>(n_ctx), 0.0f);
            v_[static_cast<size_t>(l)].assign(row_ * static_cast<size_t>(n_ctx), 0.0f);
        }
    } catch (const std::bad_alloc&) {
        fail(STARKV_ERR_OUT_OF_MEMORY, "cannot allocate a KV cache of " + std::to_string(n_ctx) + " tokens");
    }
}

}  // namespace starkv
