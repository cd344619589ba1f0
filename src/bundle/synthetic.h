// Models of real shapes with random weights, for speed and memory
// measurements where the weights' values do not matter (their text is noise).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/model_source.h"

namespace starkv {

struct SyntheticModel {
    ModelSource source;               // config, a byte-fallback SPM vocab, F16 matrices, F32 norms
    std::vector<SourceTensor> latent; // STAR-KV factors (F32), empty without compression
    nlohmann::json kv_meta;           // the bundle's "compression" entry
};

// shape: "llama2-7b" or "llama3-8b" (Error STARKV_ERR_INVALID_ARGUMENT
// otherwise); n_layers 0 = the model's 32; kv_compress in [0, 1): the fraction
// of the KV cache removed in compressed layers (all but the first two and the
// last, as calibration's default, when there are more than three), with random
// orthonormal factors of the ranks that rate implies. Weights are drawn on all
// cores from a fixed seed.
SyntheticModel make_synthetic_model(const std::string& shape, int n_layers, float kv_compress);

// rows x n, row-major, with orthonormal rows (rows <= n): distinct rows of a
// Hadamard matrix with random column signs when n is a power of two (exact,
// O(rows * n)), else Gram-Schmidt of Gaussian rows.
std::vector<float> random_orthonormal_rows(int rows, int n, uint64_t seed);

}  // namespace starkv
