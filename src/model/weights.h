// Weights of a Llama-family model held in fp32 (dequantized at load).
// Matrices are row-major [rows][cols]: a projection from n_in to n_out has
// rows = n_out, cols = n_in, as GGUF and safetensors store them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kv/latent_quant.h"

namespace starkv {

struct Matrix {
    int rows = 0;
    int cols = 0;
    std::vector<float> data;

    Matrix() = default;
    Matrix(int r, int c) : rows(r), cols(c), data(static_cast<size_t>(r) * c) {}
    const float* row(int r) const { return data.data() + static_cast<size_t>(r) * cols; }
    float* row(int r) { return data.data() + static_cast<size_t>(r) * cols; }
    bool empty() const { return data.empty(); }
};

// STAR-KV low-rank K/V of one layer (empty = the ordinary cache). Keys: per
// KV head h, k_h = U_h (A_h x) before RoPE, each head with its own rank;
// values: v = U_v (A_v x) jointly over the layer's KV heads. The cache holds
// only A_h x and A_v x.
struct LatentFactors {
    std::vector<Matrix> k_a;  // per KV head: [r_h][n_embd]
    std::vector<Matrix> k_u;  // per KV head: [head_dim][r_h]
    Matrix v_a;               // [r_v][n_embd]
    Matrix v_u;               // [n_head_kv * head_dim][r_v]
    // Quantized cache rows (docs/kv-layout.md): per KV head and for the value
    // latent; empty k_q = fp32 latents. The width is the factors' rank.
    std::vector<LatentQuant> k_q;
    LatentQuant v_q;
    bool active() const { return !k_a.empty(); }
    bool quantized() const { return !k_q.empty(); }
};

struct LayerWeights {
    std::vector<float> attn_norm;  // [n_embd]
    Matrix wq;                     // [n_head * head_dim][n_embd]
    Matrix wk;                     // [n_head_kv * head_dim][n_embd]
    Matrix wv;                     // [n_head_kv * head_dim][n_embd]
    Matrix wo;                     // [n_embd][n_head * head_dim]
    std::vector<float> ffn_norm;   // [n_embd]
    Matrix w_gate;                 // [n_ff][n_embd]
    Matrix w_up;                   // [n_ff][n_embd]
    Matrix w_down;                 // [n_embd][n_ff]
    LatentFactors lat;             // STAR-KV factors; inactive = plain K/V
    // Plain layers only: every KV head's key and value rows quantized (width
    // head_dim, docs/kv-layout.md); inactive = fp32 rows.
    LatentQuant plain_q;
};

struct ModelWeights {
    Matrix tok_embd;                // [n_vocab][n_embd]
    std::vector<float> output_norm; // [n_embd]
    Matrix output;                  // [n_vocab][n_embd]; empty when tied to tok_embd
    std::vector<LayerWeights> layers;

    const Matrix& lm_head() const { return output.empty() ? tok_embd : output; }
};

// One row of a file's tensor table, for `starkv info`.
struct TensorInfo {
    std::string name;
    std::string dtype;            // "F32", "Q4_1", ...
    std::vector<int64_t> shape;   // outermost first, e.g. {rows, cols}
    uint64_t offset = 0;          // byte offset in its file
    uint64_t n_bytes = 0;         // stored bytes
};

}  // namespace starkv
