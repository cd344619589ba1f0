#include "model/score.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace starkv {

double token_nll(const float* logits, int n_vocab, int32_t target) {
    double mx = logits[0];
    for (int i = 1; i < n_vocab; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
    double sum = 0;
    for (int i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
    return -(static_cast<double>(logits[target]) - mx - std::log(sum));
}

ScoreResult score_tokens(Context& ctx, const int32_t* tokens, size_t n) {
    if (n < 2) fail(STARKV_ERR_INVALID_ARGUMENT, "scoring needs at least 2 tokens");
    if (n > static_cast<size_t>(ctx.n_ctx()))
        fail(STARKV_ERR_CONTEXT_FULL, std::to_string(n) + " tokens exceed n_ctx " + std::to_string(ctx.n_ctx()));
    ctx.reset();
    ScoreResult r;
    const int n_vocab = ctx.model().config().n_vocab;
    for (size_t done = 0; done < n;) {
        const size_t m = std::min<size_t>(n - done, Context::kMicroBatch);
        ctx.eval(tokens + done, m, true);
        for (size_t i = 0; i < m; ++i) {
            const size_t target = done + i + 1;
            if (target >= n) break;
            r.nll_sum += token_nll(ctx.logits(static_cast<int>(i)), n_vocab, tokens[target]);
            ++r.n_scored;
        }
        done += m;
    }
    return r;
}

}  // namespace starkv
