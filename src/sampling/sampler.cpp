#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace starkv {
namespace sampling {

void apply_penalties(std::vector<Candidate>& c, const std::vector<int32_t>& recent, float repeat,
                     float frequency, float presence) {
    if (recent.empty() || (repeat == 1.0f && frequency == 0.0f && presence == 0.0f)) return;
    std::unordered_map<int32_t, int> count;
    for (int32_t t : recent) ++count[t];
    for (Candidate& x : c) {
        auto it = count.find(x.id);
        if (it == count.end()) continue;
        if (repeat != 1.0f) x.logit = x.logit > 0 ? x.logit / repeat : x.logit * repeat;
        x.logit -= static_cast<float>(it->second) * frequency + presence;
    }
}

static void sort_desc(std::vector<Candidate>& c, size_t k) {
    auto cmp = [](const Candidate& a, const Candidate& b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    };
    if (k < c.size()) {
        std::partial_sort(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(k), c.end(), cmp);
        c.resize(k);
    } else {
        std::sort(c.begin(), c.end(), cmp);
    }
}

void top_k(std::vector<Candidate>& c, int k) {
    sort_desc(c, k > 0 ? static_cast<size_t>(k) : c.size());
}

std::vector<double> probabilities(const std::vector<Candidate>& c, float temperature) {
    std::vector<double> p(c.size());
    if (c.empty()) return p;
    const double t = temperature > 0 ? temperature : 1.0;
    float mx = c[0].logit;
    for (const Candidate& x : c) mx = std::max(mx, x.logit);
    double sum = 0;
    for (size_t i = 0; i < c.size(); ++i) sum += p[i] = std::exp((static_cast<double>(c[i].logit) - mx) / t);
    for (double& v : p) v /= sum;
    return p;
}

void top_p(std::vector<Candidate>& c, float p) {
    if (p >= 1.0f || c.size() <= 1) return;
    sort_desc(c, c.size());
    std::vector<double> probs = probabilities(c, 1.0f);
    double cum = 0;
    size_t keep = c.size();
    for (size_t i = 0; i < c.size(); ++i) {
        cum += probs[i];
        if (cum >= p) {
            keep = i + 1;
            break;
        }
    }
    c.resize(std::max<size_t>(keep, 1));
}

void min_p(std::vector<Candidate>& c, float p) {
    if (p <= 0.0f || c.size() <= 1) return;
    float mx = c[0].logit;
    for (const Candidate& x : c) mx = std::max(mx, x.logit);
    // prob_i / prob_max = exp(l_i - l_max) >= p  <=>  l_i >= l_max + log p
    const float threshold = std::min(mx, mx + std::log(p));  // p > 1 still keeps the max
    std::vector<Candidate> kept;
    kept.reserve(c.size());
    for (const Candidate& x : c)
        if (x.logit >= threshold) kept.push_back(x);
    c.swap(kept);
}

}  // namespace sampling

Sampler::Sampler(const SamplerOptions& options) : opt_(options), rng_(options.seed) {}

void Sampler::reset() {
    recent_.clear();
    rng_.seed(opt_.seed);
}

void Sampler::accept(int32_t token) {
    if (opt_.penalty_last_n <= 0) return;
    recent_.push_back(token);
    while (recent_.size() > static_cast<size_t>(opt_.penalty_last_n)) recent_.pop_front();
}

double Sampler::uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::sample(const float* logits, int n_vocab) {
    candidates_.resize(static_cast<size_t>(n_vocab));
    for (int i = 0; i < n_vocab; ++i) candidates_[static_cast<size_t>(i)] = {i, logits[i]};
    std::vector<int32_t> recent(recent_.begin(), recent_.end());
    sampling::apply_penalties(candidates_, recent, opt_.repeat_penalty, opt_.frequency_penalty, opt_.presence_penalty);

    if (opt_.temperature <= 0.0f) {
        const Candidate* best = &candidates_[0];
        for (const Candidate& x : candidates_)
            if (x.logit > best->logit) best = &x;
        return best->id;
    }
    sampling::top_k(candidates_, opt_.top_k);
    sampling::top_p(candidates_, opt_.top_p);
    sampling::min_p(candidates_, opt_.min_p);
    std::vector<double> p = sampling::probabilities(candidates_, opt_.temperature);
    const double u = uniform();
    double cum = 0;
    for (size_t i = 0; i < p.size(); ++i) {
        cum += p[i];
        if (u < cum) return candidates_[i].id;
    }
    return candidates_.back().id;
}

}  // namespace starkv
