// Log-likelihood of a token sequence under the model (perplexity).
#pragma once

#include <cstddef>
#include <cstdint>

#include "model/context.h"

namespace starkv {

struct ScoreResult {
    double nll_sum = 0;    // sum of -log p(t_i | t_<i), i >= 1
    size_t n_scored = 0;
};

// Resets ctx and evaluates tokens in micro-batches (bounded memory).
ScoreResult score_tokens(Context& ctx, const int32_t* tokens, size_t n);

// -log softmax(logits)[target] in double.
double token_nll(const float* logits, int n_vocab, int32_t target);

}  // namespace starkv
