// The CPU backend's operations, fp32. Each is a plain function over raw
// buffers so that tests can compare it against a float64 reference and the
// benchmarks can time it alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "model/config.h"
#include "model/weights.h"

namespace starkv::cpu {

// Dot product of n floats (vectorised).
float dot(const float* a, const float* b, size_t n);

// out[d] = sum_c z[c] * mt[c * n + d], d < n: a matrix-vector product with
// the matrix given transposed (r rows of n, contiguous), vectorised over d.
void matvec_t(const float* mt, const float* z, size_t r, size_t n, float* out);

// out[t][r] = sum_i W[r][i] * x[t][i] for t < n_tokens; x is [n_tokens][W.cols],
// out is [n_tokens][W.rows].
void matmul(const Matrix& w, const float* x, int n_tokens, float* out, ThreadPool& pool);

// out = x / sqrt(mean(x^2) + eps) * weight, n elements (out may alias x).
void rms_norm(const float* x, const float* weight, float* out, int n, float eps);

// Rotation frequencies of each pair of a head's dimensions, scaling applied.
class RopeTable {
public:
    explicit RopeTable(const RopeConfig& rope);
    // Rotates n_heads heads of head_dim floats at x (contiguous) for position pos.
    void apply(float* x, int n_heads, int head_dim, int pos) const;
    const std::vector<double>& inv_freq() const { return inv_freq_; }

private:
    RopeConfig cfg_;
    std::vector<double> inv_freq_;  // per pair, n_dims / 2
};

// out = silu(gate) * up, n elements (out may alias gate).
void swiglu(const float* gate, const float* up, float* out, int n);

// In-place softmax of n floats.
void softmax(float* x, int n);

// Causal attention of the `group` query heads that share one KV head, for one
// query over n_keys keys: q is [group][head_dim]; key/value row t is at
// k + t * stride, v + t * stride; out is [group][head_dim]. Each key and value
// row is read once for the whole group. scores holds group * n_keys floats.
void attention_group(const float* q, const float* k, const float* v, size_t stride, int n_keys, int group,
                     int head_dim, float* out, float* scores);

// Causal attention of one query token at position `pos` over keys/values at
// positions [0, pos]: q is [n_head][head_dim]; k_cache / v_cache rows are
// [n_head_kv * head_dim] per position, row stride `kv_stride` floats; out is
// [n_head][head_dim]. scratch holds (n_head / n_head_kv) * (pos + 1) floats.
void attention_one(const float* q, const float* k_cache, const float* v_cache, size_t kv_stride,
                   int pos, int n_head, int n_head_kv, int head_dim, float* out, float* scratch);

}  // namespace starkv::cpu
