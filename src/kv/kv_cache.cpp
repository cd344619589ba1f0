#include "kv/kv_cache.h"

#include "model/weights.h"

namespace starkv {

KvCache::KvCache(const ModelConfig& config, int n_ctx)
    : n_ctx_(n_ctx), n_layer_(config.n_layer), n_head_kv_(config.n_head_kv), head_dim_(config.head_dim) {
    const size_t n_buffers = static_cast<size_t>(config.n_layer) * static_cast<size_t>(config.n_head_kv);
    k_w_.assign(n_buffers, config.head_dim);
    v_w_.assign(n_buffers, config.head_dim);
    k_b_.assign(n_buffers, static_cast<size_t>(config.head_dim) * sizeof(float));
    v_b_ = k_b_;
    k_q_.assign(n_buffers, LatentQuant{});
    v_q_ = k_q_;
    bytes_per_token_ = bytes_per_token_uncompressed();
}

KvCache::KvCache(const ModelConfig& config, const ModelWeights& weights, int n_ctx) : KvCache(config, n_ctx) {
    uint64_t bytes = 0;
    for (int l = 0; l < config.n_layer; ++l) {
        const LatentFactors& lat = weights.layers[static_cast<size_t>(l)].lat;
        for (int h = 0; h < n_head_kv_; ++h) {
            const size_t i = index(l, h);
            const LatentQuant& pq = weights.layers[static_cast<size_t>(l)].plain_q;
            if (!lat.active() && pq.active()) {
                k_q_[i] = v_q_[i] = pq;
                k_b_[i] = v_b_[i] = pq.row_bytes();
            }
            if (lat.active()) {
                k_w_[i] = lat.k_a[static_cast<size_t>(h)].rows;
                v_w_[i] = h == 0 ? lat.v_a.rows : 0;
                if (lat.quantized()) {
                    k_q_[i] = lat.k_q[static_cast<size_t>(h)];
                    if (h == 0) v_q_[i] = lat.v_q;
                }
                k_b_[i] = k_q_[i].active() ? k_q_[i].row_bytes() : static_cast<size_t>(k_w_[i]) * sizeof(float);
                v_b_[i] = v_q_[i].active() ? v_q_[i].row_bytes() : static_cast<size_t>(v_w_[i]) * sizeof(float);
            }
            bytes += k_b_[i] + v_b_[i];
        }
    }
    bytes_per_token_ = bytes;
}

RowLayout KvCache::row_layout() const {
    std::vector<uint32_t> bytes(2 * k_b_.size());
    for (size_t i = 0; i < k_b_.size(); ++i) {
        bytes[2 * i] = static_cast<uint32_t>(k_b_[i]);
        bytes[2 * i + 1] = static_cast<uint32_t>(v_b_[i]);
    }
    return RowLayout(n_layer_, n_head_kv_, std::move(bytes));
}

}  // namespace starkv
