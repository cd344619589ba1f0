#include "calibration/probe.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "model/context.h"

namespace starkv::probe {

std::vector<std::vector<int32_t>> take(const std::vector<std::vector<int32_t>>& docs, size_t* next, int n) {
    std::vector<std::vector<int32_t>> out;
    size_t got = 0;
    while (*next < docs.size() && got < static_cast<size_t>(n)) {
        out.push_back(docs[*next]);
        got += docs[(*next)++].size();
    }
    return out;
}

std::vector<std::vector<float>> log_probs(const Model& m, const std::vector<std::vector<int32_t>>& seqs, int n_ctx,
                                          int threads) {
    Context ctx(std::shared_ptr<const Model>(&m, [](const Model*) {}), ContextOptions{n_ctx, threads});
    const size_t V = static_cast<size_t>(m.config().n_vocab);
    std::vector<std::vector<float>> out;
    for (const auto& s : seqs) {
        ctx.reset();
        ctx.eval(s.data(), s.size(), true);
        std::vector<float> lp(s.size() * V);
        for (size_t i = 0; i < s.size(); ++i) {
            const float* lg = ctx.logits(static_cast<int>(i));
            const float mx = *std::max_element(lg, lg + V);
            double z = 0;
            for (size_t j = 0; j < V; ++j) z += std::exp(static_cast<double>(lg[j] - mx));
            const float lz = mx + static_cast<float>(std::log(z));
            for (size_t j = 0; j < V; ++j) lp[i * V + j] = lg[j] - lz;
        }
        out.push_back(std::move(lp));
    }
    return out;
}

double mean_kl(const std::vector<std::vector<float>>& base, const std::vector<std::vector<float>>& cur, size_t n_vocab) {
    double kl = 0;
    size_t n = 0;
    for (size_t s = 0; s < base.size() && s < cur.size(); ++s)
        for (size_t i = 0; i + n_vocab <= base[s].size() && i + n_vocab <= cur[s].size(); i += n_vocab, ++n)
            for (size_t j = 0; j < n_vocab; ++j) {
                const double p = std::exp(static_cast<double>(base[s][i + j]));
                kl += p * (static_cast<double>(base[s][i + j]) - static_cast<double>(cur[s][i + j]));
            }
    return n ? kl / static_cast<double>(n) : 0.0;
}

}  // namespace starkv::probe
