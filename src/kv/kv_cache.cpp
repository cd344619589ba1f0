#include "kv/kv_cache.h"

#include <new>

#include "core/error.h"

namespace starkv {

KvCache::KvCache(const ModelConfig& config, int n_ctx)
    : n_ctx_(n_ctx), n_head_kv_(config.n_head_kv), head_dim_(config.head_dim) {
    const size_t n_buffers = static_cast<size_t>(config.n_layer) * static_cast<size_t>(config.n_head_kv);
    const size_t floats = static_cast<size_t>(n_ctx) * static_cast<size_t>(head_dim_);
    try {
        k_.resize(n_buffers);
        v_.resize(n_buffers);
        for (size_t i = 0; i < n_buffers; ++i) {
            k_[i].assign(floats, 0.0f);
            v_[i].assign(floats, 0.0f);
        }
    } catch (const std::bad_alloc&) {
        fail(STARKV_ERR_OUT_OF_MEMORY, "cannot allocate a KV cache of " + std::to_string(n_ctx) + " tokens");
    }
}

}  // namespace starkv
