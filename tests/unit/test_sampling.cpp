// The sampler (src/sampling/sampler.h) against naive references written here
// from the documented definitions: each filter alone, probabilities, greedy,
// seeded reproducibility, and the empirical distribution of many draws.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "ref_math.h"
#include "sampling/sampler.h"

using starkv::Candidate;
namespace sampling = starkv::sampling;

namespace {

// Distinct random logits (a random permutation of a spaced grid plus jitter),
// so "the k largest" is well defined.
std::vector<Candidate> random_candidates(int n, uint32_t seed, float spread = 4.0f) {
    std::mt19937 rng(seed);
    std::vector<int> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    std::uniform_real_distribution<float> jitter(0.0f, 0.5f);
    std::vector<Candidate> c;
    for (int i = 0; i < n; ++i)
        c.push_back({i, spread * (static_cast<float>(order[static_cast<size_t>(i)]) + jitter(rng)) / n - spread / 2});
    return c;
}

// Candidates sorted by logit, descending (ids tie-broken ascending).
std::vector<Candidate> sorted_desc(std::vector<Candidate> c) {
    std::stable_sort(c.begin(), c.end(), [](const Candidate& a, const Candidate& b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    });
    return c;
}

std::vector<double> ref_softmax(const std::vector<Candidate>& c, double temperature) {
    double mx = -1e300;
    for (const Candidate& x : c) mx = std::max(mx, static_cast<double>(x.logit));
    std::vector<double> p;
    double sum = 0;
    for (const Candidate& x : c) {
        p.push_back(std::exp((x.logit - mx) / temperature));
        sum += p.back();
    }
    for (double& v : p) v /= sum;
    return p;
}

std::set<int32_t> ids(const std::vector<Candidate>& c) {
    std::set<int32_t> s;
    for (const Candidate& x : c) s.insert(x.id);
    return s;
}

// ---- filters ---------------------------------------------------------------------

TEST(Sampling, TopKKeepsExactlyTheKLargest) {
    for (int n : {1, 2, 10, 513}) {
        for (int k : {1, 2, 5, 40, 512, 513, 1000}) {
            std::vector<Candidate> c = random_candidates(n, static_cast<uint32_t>(n * 1000 + k));
            std::vector<Candidate> ref = sorted_desc(c);
            ref.resize(std::min<size_t>(static_cast<size_t>(k), ref.size()));
            sampling::top_k(c, k);
            ASSERT_EQ(c.size(), ref.size()) << "n " << n << " k " << k;
            for (size_t i = 0; i < c.size(); ++i) {
                EXPECT_EQ(c[i].id, ref[i].id) << "n " << n << " k " << k << " rank " << i;
                EXPECT_EQ(c[i].logit, ref[i].logit);
            }
        }
    }
    // k <= 0 disables the filter (keeps everything).
    std::vector<Candidate> c = random_candidates(50, 7);
    sampling::top_k(c, 0);
    EXPECT_EQ(c.size(), 50u);
    // Ties at the cut: the kept logits are the k largest as a multiset.
    std::vector<Candidate> t = {{0, 1.0f}, {1, 3.0f}, {2, 2.0f}, {3, 2.0f}, {4, 2.0f}, {5, 0.0f}};
    sampling::top_k(t, 3);
    ASSERT_EQ(t.size(), 3u);
    EXPECT_EQ(t[0].logit, 3.0f);
    EXPECT_EQ(t[1].logit, 2.0f);
    EXPECT_EQ(t[2].logit, 2.0f);
}

TEST(Sampling, TopPKeepsTheMinimalPrefixWithMassAtLeastP) {
    for (int n : {1, 2, 10, 100, 512}) {
        for (float p : {0.01f, 0.1f, 0.5f, 0.9f, 0.95f, 0.999f}) {
            for (float spread : {2.0f, 20.0f}) {
                std::vector<Candidate> c = random_candidates(n, static_cast<uint32_t>(n * 7 + static_cast<int>(p * 1000)), spread);
                std::vector<Candidate> ref = sorted_desc(c);
                std::vector<double> probs = ref_softmax(ref, 1.0);
                size_t m = ref.size();
                double cum = 0;
                for (size_t i = 0; i < ref.size(); ++i) {
                    cum += probs[i];
                    if (cum >= p) {
                        m = i + 1;
                        break;
                    }
                }
                ref.resize(m);
                sampling::top_p(c, p);
                ASSERT_EQ(c.size(), ref.size()) << "n " << n << " p " << p;
                for (size_t i = 0; i < c.size(); ++i) EXPECT_EQ(c[i].id, ref[i].id) << "n " << n << " p " << p;
                // Minimality: one fewer candidate holds less than p.
                double kept = 0;
                for (size_t i = 0; i + 1 < m; ++i) kept += probs[i];
                EXPECT_LT(kept, p);
            }
        }
    }
    std::vector<Candidate> c = random_candidates(30, 11);
    sampling::top_p(c, 1.0f);
    EXPECT_EQ(c.size(), 30u);
}

TEST(Sampling, MinPKeepsProbAtLeastPTimesMax) {
    int checked = 0;
    for (int n : {1, 2, 10, 512}) {
        for (float p : {0.0f, 0.01f, 0.05f, 0.1f, 0.5f, 1.0f}) {
            std::vector<Candidate> c = random_candidates(n, static_cast<uint32_t>(n * 13 + static_cast<int>(p * 100)), 12.0f);
            const std::vector<Candidate> in = c;
            std::vector<double> probs = ref_softmax(in, 1.0);
            const double pmax = *std::max_element(probs.begin(), probs.end());
            sampling::min_p(c, p);
            std::set<int32_t> kept = ids(c);
            ASSERT_FALSE(c.empty());
            for (size_t i = 0; i < in.size(); ++i) {
                const double ratio = probs[i] / (pmax * p);
                if (std::fabs(ratio - 1.0) < 1e-5) continue;  // at the threshold float and double may differ
                EXPECT_EQ(kept.count(in[i].id) == 1, probs[i] >= p * pmax || n == 1 || p <= 0)
                    << "n " << n << " p " << p << " id " << in[i].id;
                ++checked;
            }
            // The filter keeps the input order of the survivors.
            for (size_t i = 1; i < c.size(); ++i) EXPECT_LT(c[i - 1].id, c[i].id);
        }
    }
    EXPECT_GT(checked, 1000);
}

TEST(Sampling, EveryFilterKeepsAtLeastOneCandidate) {
    // sampler.h: "Each keeps at least one candidate", whatever the parameter.
    for (float p : {1.0f, 1.5f, 100.0f}) {
        std::vector<Candidate> c = random_candidates(20, 3);
        sampling::min_p(c, p);
        ASSERT_EQ(c.size(), 1u) << "min_p " << p;  // only the most probable has prob >= p * max for p >= 1
        EXPECT_EQ(c[0].id, sorted_desc(random_candidates(20, 3))[0].id);
    }
    for (float p : {0.0f, -1.0f}) {
        std::vector<Candidate> c = random_candidates(20, 4);
        sampling::top_p(c, p);
        EXPECT_EQ(c.size(), 1u) << "top_p " << p;
    }
    std::vector<Candidate> c = random_candidates(20, 5);
    sampling::top_k(c, 1);
    EXPECT_EQ(c.size(), 1u);
    // Through the Sampler: min_p > 1 leaves the argmax to draw.
    starkv::SamplerOptions o;
    o.temperature = 1.0f;
    o.min_p = 1.5f;
    starkv::Sampler s(o);
    std::vector<float> logits = {0.1f, 2.0f, 1.9f, -3.0f};
    EXPECT_EQ(s.sample(logits.data(), 4), 1);
}

TEST(Sampling, PenaltiesFollowTheDocumentedFormulas) {
    // repeat: positive logits divided, negative multiplied; frequency: count * f
    // subtracted; presence: p subtracted once. Only tokens in `recent` change.
    std::vector<Candidate> c = random_candidates(64, 21, 10.0f);
    c[5].logit = 0.0f;  // zero stays zero under the repeat penalty
    std::vector<int32_t> recent = {3, 5, 3, 9, 3, 40, 9, 63, 0};
    std::map<int32_t, int> count;
    for (int32_t t : recent) ++count[t];
    for (float repeat : {1.0f, 1.1f, 1.5f, 0.8f}) {
        for (float freq : {0.0f, 0.3f}) {
            for (float pres : {0.0f, 0.7f}) {
                std::vector<Candidate> got = c;
                sampling::apply_penalties(got, recent, repeat, freq, pres);
                ASSERT_EQ(got.size(), c.size());
                for (size_t i = 0; i < c.size(); ++i) {
                    double ref = c[i].logit;
                    auto it = count.find(c[i].id);
                    if (it != count.end()) {
                        ref = ref > 0 ? ref / repeat : ref * repeat;
                        ref -= it->second * static_cast<double>(freq) + pres;
                    }
                    EXPECT_EQ(got[i].id, c[i].id);
                    EXPECT_NEAR(got[i].logit, ref, 1e-5 * std::max(1.0, std::fabs(ref)))
                        << "id " << c[i].id << " repeat " << repeat << " freq " << freq << " pres " << pres;
                }
            }
        }
    }
    // Empty history: nothing changes.
    std::vector<Candidate> got = c;
    sampling::apply_penalties(got, {}, 1.3f, 0.5f, 0.5f);
    for (size_t i = 0; i < c.size(); ++i) EXPECT_EQ(got[i].logit, c[i].logit);
}

TEST(Sampling, ProbabilitiesAreTemperatureSoftmax) {
    double worst = 0;
    for (int n : {1, 3, 512}) {
        for (float t : {0.1f, 0.5f, 0.8f, 1.0f, 2.0f}) {
            std::vector<Candidate> c = random_candidates(n, static_cast<uint32_t>(n + 100 * t), 20.0f);
            std::vector<double> got = sampling::probabilities(c, t);
            std::vector<double> ref = ref_softmax(c, t);
            ASSERT_EQ(got.size(), ref.size());
            const double err = starkv_test::elementwise_rel_err(got.data(), ref.data(), ref.size(), 1e-300);
            EXPECT_LT(err, 1e-12) << "n " << n << " T " << t;
            worst = std::max(worst, err);
            EXPECT_NEAR(std::accumulate(got.begin(), got.end(), 0.0), 1.0, 1e-12);
        }
    }
    std::printf("[sampling] probabilities: max elementwise rel err = %.3g\n", worst);
}

// ---- the Sampler ------------------------------------------------------------------

TEST(Sampling, GreedyIsArgmax) {
    starkv::SamplerOptions o;
    o.temperature = 0.0f;
    starkv::Sampler s(o);
    std::mt19937 rng(5);
    std::normal_distribution<float> nd(0.0f, 3.0f);
    for (int trial = 0; trial < 200; ++trial) {
        const int n = 1 + trial * 7 % 600;
        std::vector<float> logits(static_cast<size_t>(n));
        for (float& x : logits) x = nd(rng);
        const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();
        EXPECT_EQ(s.sample(logits.data(), n), best) << "trial " << trial;
    }
}

TEST(Sampling, RepeatPenaltyWindowInTheSampler) {
    starkv::SamplerOptions o;
    o.temperature = 0.0f;
    o.repeat_penalty = 2.0f;
    o.penalty_last_n = 3;
    starkv::Sampler s(o);
    std::vector<float> logits = {4.0f, 3.0f, 1.0f, -1.0f, -2.0f};
    EXPECT_EQ(s.sample(logits.data(), 5), 0);
    s.accept(0);  // 4 -> 2 < 3
    EXPECT_EQ(s.sample(logits.data(), 5), 1);
    s.accept(2);
    s.accept(3);
    EXPECT_EQ(s.sample(logits.data(), 5), 1);  // 0 still among the last 3
    s.accept(4);                               // 0 falls out of the window
    EXPECT_EQ(s.sample(logits.data(), 5), 0);
}

std::vector<int32_t> draw(uint64_t seed, const std::vector<float>& logits, int n, starkv::SamplerOptions o) {
    o.seed = seed;
    starkv::Sampler s(o);
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i) {
        out.push_back(s.sample(logits.data(), static_cast<int>(logits.size())));
        s.accept(out.back());
    }
    return out;
}

TEST(Sampling, SeededReproducibility) {
    std::vector<float> logits(64);
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i)) * 0.5f;  // near uniform
    starkv::SamplerOptions o;
    o.temperature = 1.0f;
    o.top_k = 0;
    o.top_p = 1.0f;
    o.min_p = 0.0f;
    const std::vector<int32_t> a = draw(42, logits, 300, o);
    EXPECT_EQ(a, draw(42, logits, 300, o));
    EXPECT_NE(a, draw(43, logits, 300, o));
    EXPECT_NE(a, draw(0, logits, 300, o));
    // reset() restarts the same stream.
    o.seed = 42;
    starkv::Sampler s(o);
    std::vector<int32_t> first, second;
    for (int i = 0; i < 50; ++i) first.push_back(s.sample(logits.data(), 64));
    s.reset();
    for (int i = 0; i < 50; ++i) second.push_back(s.sample(logits.data(), 64));
    EXPECT_EQ(first, second);
    // 300 draws from a near-uniform 64-way distribution reach most tokens.
    std::set<int32_t> distinct(a.begin(), a.end());
    EXPECT_GT(distinct.size(), 30u);
}

// Draws n samples; returns (max |freq - expected|, chi-square statistic).
std::pair<double, double> empirical(const std::vector<float>& logits, const std::vector<double>& expected,
                                    starkv::SamplerOptions o, int n) {
    starkv::Sampler s(o);
    std::vector<int> hits(logits.size(), 0);
    for (int i = 0; i < n; ++i) ++hits[static_cast<size_t>(s.sample(logits.data(), static_cast<int>(logits.size())))];
    double maxdiff = 0, chi2 = 0;
    for (size_t i = 0; i < logits.size(); ++i) {
        const double f = static_cast<double>(hits[i]) / n;
        maxdiff = std::max(maxdiff, std::fabs(f - expected[i]));
        if (expected[i] > 0) chi2 += (hits[i] - n * expected[i]) * (hits[i] - n * expected[i]) / (n * expected[i]);
        else EXPECT_EQ(hits[i], 0) << "filtered-out token " << i << " was drawn";
    }
    return {maxdiff, chi2};
}

TEST(Sampling, DrawsFollowTheDistribution) {
    const int n = 20000;
    // Plain softmax at T = 1: logits = log p.
    const std::vector<double> p = {0.4, 0.25, 0.15, 0.1, 0.06, 0.04};
    std::vector<float> logits;
    for (double v : p) logits.push_back(static_cast<float>(std::log(v)));
    starkv::SamplerOptions o;
    o.temperature = 1.0f;
    o.top_k = 0;
    o.top_p = 1.0f;
    o.min_p = 0.0f;
    o.seed = 1234;
    auto [d1, c1] = empirical(logits, p, o, n);
    // chi-square, 5 degrees of freedom: P(chi2 > 20.5) = 0.001.
    EXPECT_LT(d1, 0.02);
    EXPECT_LT(c1, 20.5);

    // The whole chain: top_k 4, top_p 0.8, min_p 0.4 on the raw logits, then
    // temperature 0.7 over the survivors (llama.cpp's order). Expected
    // distribution from the reference filters.
    std::vector<Candidate> c;
    for (size_t i = 0; i < logits.size(); ++i) c.push_back({static_cast<int32_t>(i), logits[i]});
    std::vector<Candidate> kept = sorted_desc(c);
    kept.resize(4);  // top-k
    std::vector<double> q = ref_softmax(kept, 1.0);
    double cum = 0;
    size_t m = kept.size();
    for (size_t i = 0; i < kept.size(); ++i)
        if ((cum += q[i]) >= 0.8) {
            m = i + 1;
            break;
        }
    kept.resize(m);  // top-p
    q = ref_softmax(kept, 1.0);
    std::vector<Candidate> kept2;
    for (size_t i = 0; i < kept.size(); ++i)
        if (q[i] >= 0.4 * q[0]) kept2.push_back(kept[i]);  // min-p (q[0] is the max)
    std::vector<double> qt = ref_softmax(kept2, 0.7);
    std::vector<double> expected(logits.size(), 0.0);
    for (size_t i = 0; i < kept2.size(); ++i) expected[static_cast<size_t>(kept2[i].id)] = qt[i];
    ASSERT_GE(kept2.size(), 2u);
    o.temperature = 0.7f;
    o.top_k = 4;
    o.top_p = 0.8f;
    o.min_p = 0.4f;
    o.seed = 99;
    auto [d2, c2] = empirical(logits, expected, o, n);
    EXPECT_LT(d2, 0.02);
    EXPECT_LT(c2, 20.5);  // df = kept2.size() - 1 <= 3, so this is looser still
    std::printf("[sampling] 20000 draws: plain max|freq-p| = %.4f chi2 = %.2f (df 5); chained (%zu kept) max|freq-p| = "
                "%.4f chi2 = %.2f\n",
                d1, c1, kept2.size(), d2, c2);
}

}  // namespace
