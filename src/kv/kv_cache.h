// The KV cache's row formats per layer and KV head (docs/kv-layout.md). A
// plain layer holds fp32 keys and values (head_dim floats per head); a
// STAR-KV layer holds latents instead: a key latent per KV head with that
// head's rank, and one value latent of rank r_v (kept in the row of KV head 0;
// the other heads' value rows are empty). Latent rows are fp32, or quantized
// (latent_quant.h) when the bundle carries a quantization plan. The rows
// themselves live in a PagePool (kv/page_pool.h); row_layout() sizes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kv/latent_quant.h"
#include "kv/page_pool.h"
#include "model/config.h"

namespace starkv {

struct ModelWeights;

class KvCache {
public:
    // n_ctx: the most tokens a sequence may hold. All layers plain.
    KvCache(const ModelConfig& config, int n_ctx);
    // Row formats from the weights: latent layers get their ranks and plans.
    KvCache(const ModelConfig& config, const ModelWeights& weights, int n_ctx);

    int n_ctx() const { return n_ctx_; }
    int head_dim() const { return head_dim_; }
    // A row holds k_row_bytes() bytes: k_width() fp32 values, or a quantized
    // latent when k_quant() is non-null.
    size_t k_row_bytes(int layer, int kv_head) const { return k_b_[index(layer, kv_head)]; }
    size_t v_row_bytes(int layer, int kv_head) const { return v_b_[index(layer, kv_head)]; }
    // Null for fp32 rows.
    const LatentQuant* k_quant(int layer, int kv_head) const { return fmt(k_q_, layer, kv_head); }
    const LatentQuant* v_quant(int layer, int kv_head) const { return fmt(v_q_, layer, kv_head); }
    // Values per position of a row (head_dim in plain layers, a rank in latent ones).
    int k_width(int layer, int kv_head) const { return k_w_[index(layer, kv_head)]; }
    int v_width(int layer, int kv_head) const { return v_w_[index(layer, kv_head)]; }

    // True bytes per token over all layers: codes, scales and padding.
    uint64_t bytes_per_token() const { return bytes_per_token_; }
    // What the same model's cache would take with every layer plain (fp32).
    uint64_t bytes_per_token_uncompressed() const {
        return 2ull * k_b_.size() * static_cast<uint64_t>(head_dim_) * sizeof(float);
    }
    // Bytes per token of every (layer, KV head, K|V) stream, for the PagePool.
    RowLayout row_layout() const;

private:
    size_t index(int layer, int kv_head) const {
        return static_cast<size_t>(layer) * static_cast<size_t>(n_head_kv_) + static_cast<size_t>(kv_head);
    }
    const LatentQuant* fmt(const std::vector<LatentQuant>& q, int layer, int kv_head) const {
        const LatentQuant& f = q[index(layer, kv_head)];
        return f.active() ? &f : nullptr;
    }

    int n_ctx_;
    int n_layer_;
    int n_head_kv_;
    int head_dim_;
    uint64_t bytes_per_token_ = 0;
    std::vector<int> k_w_, v_w_;               // values per row, per (layer, kv head)
    std::vector<size_t> k_b_, v_b_;            // bytes per row
    std::vector<LatentQuant> k_q_, v_q_;       // row format (inactive = fp32)
};

}  // namespace starkv
