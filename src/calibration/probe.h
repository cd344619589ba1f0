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

// A model's output on a probe text, kept with the residual stream entering
// each layer from first_layer on: a change confined to layers >= l (a probe
// of one layer's factors or one latent's quantization) is then measured by
// running layers l.. alone on the kept stream, which gives the same logits as
// the whole pass (layers below see unchanged inputs) at a fraction of its cost.
class Reference {
public:
    Reference(const Model& m, std::vector<std::vector<int32_t>> seqs, int n_ctx, int threads, int first_layer = 0);
    const std::vector<std::vector<int32_t>>& seqs() const { return seqs_; }
    const std::vector<std::vector<float>>& log_probs() const { return base_; }
    // Mean KL(reference || m) per token. m's layers below first_changed (and
    // its embeddings) must be those the reference was taken with; a
    // first_changed below the reference's first_layer runs the whole pass.
    double kl(const Model& m, int first_changed = 0) const;

private:
    std::vector<std::vector<int32_t>> seqs_;
    int n_ctx_, threads_, first_layer_;
    std::vector<std::vector<float>> base_;
    // residual_[s][l - first_layer]: seqs_[s].size() x n_embd floats.
    std::vector<std::vector<std::vector<float>>> residual_;
};

}  // namespace starkv::probe
