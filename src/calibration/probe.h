// End-to-end probes for calibration: the log-probabilities a model gives a
// text, and the KL divergence between two such runs. The low-rank and the
// quantization planners both measure what a change to one layer costs at
// the model's output this way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/model.h"

namespace starkv::probe {

// The first sequences of docs holding up to n tokens, from index *next on
// (advanced past them): consecutive calls cut consecutive, disjoint texts.
std::vector<std::vector<int32_t>> take(const std::vector<std::vector<int32_t>>& docs, size_t* next, int n);

// Log-probabilities (n_vocab per position) of every position of every sequence.
std::vector<std::vector<float>> log_probs(const Model& m, const std::vector<std::vector<int32_t>>& seqs, int n_ctx,
                                          int threads);

// Mean KL(base || cur) per token; both from log_probs on the same sequences.
double mean_kl(const std::vector<std::vector<float>>& base, const std::vector<std::vector<float>>& cur, size_t n_vocab);

}  // namespace starkv::probe
