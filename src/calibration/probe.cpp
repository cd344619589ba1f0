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

namespace {

// Log-probabilities of every position of the sequence the context just evaluated.
std::vector<float> normalized(const Context& ctx, size_t n, size_t V) {
    std::vector<float> lp(n * V);
    for (size_t i = 0; i < n; ++i) {
        const float* lg = ctx.logits(static_cast<int>(i));
        const float mx = *std::max_element(lg, lg + V);
        double z = 0;
        for (size_t j = 0; j < V; ++j) z += std::exp(static_cast<double>(lg[j] - mx));
        const float lz = mx + static_cast<float>(std::log(z));
        for (size_t j = 0; j < V; ++j) lp[i * V + j] = lg[j] - lz;
    }
    return lp;
}

std::shared_ptr<const Model> borrow(const Model& m) {
    return std::shared_ptr<const Model>(&m, [](const Model*) {});
}

}  // namespace

std::vector<std::vector<float>> log_probs(const Model& m, const std::vector<std::vector<int32_t>>& seqs, int n_ctx,
                                          int threads) {
    Context ctx(borrow(m), ContextOptions{n_ctx, threads});
    const size_t V = static_cast<size_t>(m.config().n_vocab);
    std::vector<std::vector<float>> out;
    for (const auto& s : seqs) {
        ctx.reset();
        ctx.eval(s.data(), s.size(), true);
        out.push_back(normalized(ctx, s.size(), V));
    }
    return out;
}

Reference::Reference(const Model& m, std::vector<std::vector<int32_t>> seqs, int n_ctx, int threads, int first_layer)
    : seqs_(std::move(seqs)), n_ctx_(n_ctx), threads_(threads),
      first_layer_(std::clamp(first_layer, 0, m.config().n_layer)) {
    Context ctx(borrow(m), ContextOptions{n_ctx, threads});
    const size_t V = static_cast<size_t>(m.config().n_vocab), E = static_cast<size_t>(m.config().n_embd);
    const size_t n_kept = static_cast<size_t>(m.config().n_layer - first_layer_);
    residual_.resize(seqs_.size());
    for (size_t s = 0; s < seqs_.size(); ++s) {
        auto& keep = residual_[s];
        keep.assign(n_kept, std::vector<float>(seqs_[s].size() * E));
        ctx.set_residual_observer([&](int layer, const int32_t* pos, const float* x, int n) {
            if (layer < first_layer_) return;
            for (int t = 0; t < n; ++t)
                std::copy(x + static_cast<size_t>(t) * E, x + static_cast<size_t>(t + 1) * E,
                          keep[static_cast<size_t>(layer - first_layer_)].begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(pos[t]) * E));
        });
        ctx.reset();
        ctx.eval(seqs_[s].data(), seqs_[s].size(), true);
        base_.push_back(normalized(ctx, seqs_[s].size(), V));
    }
}

double Reference::kl(const Model& m, int first_changed) const {
    // A change below the kept stream (or past the last layer) means the whole pass.
    const int start = first_changed < first_layer_ || first_changed >= m.config().n_layer ? 0 : first_changed;
    Context ctx(borrow(m), ContextOptions{n_ctx_, threads_});
    const size_t V = static_cast<size_t>(m.config().n_vocab), E = static_cast<size_t>(m.config().n_embd);
    std::vector<std::vector<float>> cur;
    for (size_t s = 0; s < seqs_.size(); ++s) {
        if (start > 0) {
            const std::vector<float>& x0 = residual_[s][static_cast<size_t>(start - first_layer_)];
            ctx.set_resume(start, [&x0, E](const int32_t* pos, float* x, int n) {
                for (int t = 0; t < n; ++t)
                    std::copy_n(x0.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(pos[t]) * E), E,
                                x + static_cast<size_t>(t) * E);
            });
        }
        ctx.reset();
        ctx.eval(seqs_[s].data(), seqs_[s].size(), true);
        cur.push_back(normalized(ctx, seqs_[s].size(), V));
    }
    return mean_kl(base_, cur, V);
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
