// Hyper-parameters of a Llama-family model, whatever file it came from.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace starkv {

enum class RopeScaling { None, Linear, Llama3 };

// Which pairs of a head's dimensions RoPE rotates together.
//  Adjacent: (0,1), (2,3), ...   GGUF llama models (llama.cpp's converter
//            permutes the Q/K rows so that adjacent pairs are correct).
//  HalfSplit: (i, i + d/2)        Hugging Face checkpoints ("rotate_half").
enum class RopeLayout { Adjacent, HalfSplit };

struct RopeConfig {
    float theta = 10000.0f;
    int n_dims = 0;  // rotated dimensions of a head (== head_dim for Llama)
    RopeLayout layout = RopeLayout::Adjacent;
    RopeScaling scaling = RopeScaling::None;
    float factor = 1.0f;            // linear and llama3
    float low_freq_factor = 1.0f;   // llama3
    float high_freq_factor = 4.0f;  // llama3
    int original_max_pos = 8192;    // llama3
    // Per-pair frequency divisors (GGUF rope_freqs.weight, how llama.cpp
    // stores Llama-3.1 scaling); empty = none.
    std::vector<float> freq_factors;
};

struct ModelConfig {
    std::string architecture = "llama";
    std::string name;
    int n_vocab = 0;
    int n_embd = 0;
    int n_ff = 0;
    int n_layer = 0;
    int n_head = 0;
    int n_head_kv = 0;
    int head_dim = 0;
    int n_ctx_train = 0;
    float rms_eps = 1e-5f;
    RopeConfig rope;
    bool tied_embeddings = false;

    // Throws Error(STARKV_ERR_UNSUPPORTED / CORRUPT) when dimensions are
    // missing, inconsistent or absurd (so no huge allocation follows).
    void validate() const;
};

}  // namespace starkv
