// Token sampling: penalties, top-k, top-p, min-p, temperature, seeded draw.
// Deterministic for a seed: the random stream is our own (mt19937_64 bits to a
// double), not std::uniform_real_distribution, whose output differs by library.
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <vector>

namespace starkv {

struct SamplerOptions {
    float temperature = 0.8f;
    int top_k = 40;
    float top_p = 0.95f;
    float min_p = 0.05f;
    float repeat_penalty = 1.0f;
    float presence_penalty = 0.0f;
    float frequency_penalty = 0.0f;
    int penalty_last_n = 64;
    uint64_t seed = 0;
};

struct Candidate {
    int32_t id;
    float logit;
};

// The filters as free functions over a candidate list, so each can be tested
// alone. Each keeps at least one candidate.
namespace sampling {
// llama.cpp / CTRL conventions: repeat divides positive logits and multiplies
// negative ones; frequency subtracts count * f; presence subtracts p once.
void apply_penalties(std::vector<Candidate>& c, const std::vector<int32_t>& recent, float repeat,
                     float frequency, float presence);
void top_k(std::vector<Candidate>& c, int k);         // leaves c sorted by logit, descending
void top_p(std::vector<Candidate>& c, float p);       // smallest prefix with mass >= p
void min_p(std::vector<Candidate>& c, float p);       // keep prob >= p * max prob
std::vector<double> probabilities(const std::vector<Candidate>& c, float temperature);
}  // namespace sampling

class Sampler {
public:
    explicit Sampler(const SamplerOptions& options);

    int32_t sample(const float* logits, int n_vocab);
    void accept(int32_t token);
    void reset();
    const SamplerOptions& options() const { return opt_; }

private:
    double uniform();  // [0, 1)

    SamplerOptions opt_;
    std::mt19937_64 rng_;
    std::deque<int32_t> recent_;
    std::vector<Candidate> candidates_;
};

}  // namespace starkv
