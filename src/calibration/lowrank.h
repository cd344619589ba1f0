// STAR-KV calibration: activation-aware low-rank factors of the K/V
// projections and the rank allocation (uniform, energy, adaptive soft
// threshold). Used by `starkv pack --kv-compress`; nothing here runs at
// inference time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <Eigen/Dense>
#include <nlohmann/json.hpp>

#include "calibration/quant_plan.h"
#include "model/model.h"

namespace starkv::lowrank {

enum class Strategy { Uniform, Energy, Adaptive };
Strategy parse_strategy(const std::string& name);  // Error(INVALID_ARGUMENT) if unknown
const char* strategy_name(Strategy s);

struct Options {
    float rate = 0.5f;                  // fraction of the KV cache removed in compressed layers
    // Separate key and value targets (as the authors' script budgets), both in
    // [0, 1) or both < 0 (default: one budget shared by keys and values).
    float key_rate = -1.0f, value_rate = -1.0f;
    Strategy strategy = Strategy::Adaptive;
    bool default_skip = true;           // skip the first two and the last layer (as the paper)
    std::vector<int> skip_layers;       // else: the layers that keep the plain cache
    int calib_tokens = 16384;           // tokens of calibration text
    int eval_tokens = 4096;             // held-out tokens (after the calibration ones) for perplexity
    int probe_tokens = 512;             // tokens for the sensitivity probes (adaptive)
    int seq_len = 256;                  // documents are cut to this many tokens
    double ridge = 1e-6;                // Gram ridge, relative to its mean diagonal
    double sharpness = 50.0;            // k of the soft threshold s * tanh(k (s - a))
    int adaptive_rounds = 6;            // sensitivity re-measurements at the allocation's ranks
    int adaptive_patience = 2;          // stop after this many rounds not better than the best (0 = never)
    // Output-side weights of the factorization error (see weighted_factorize):
    // values through W_o of their query heads, keys through their group's
    // query energy per rotary pair. Off = plain activation-aware SVD.
    bool output_aware = true;
    bool query_aware = false;  // measured: hurts on SmolLM2 (docs/quality.md)
    // Whiten the values with the Gram of the attention-averaged inputs (what
    // the values are read through) instead of the raw inputs' one.
    bool attended_values = true;
    // Try the weightings (activation only; output; output + attended values)
    // at the uniform ranks and keep the one of least KL on probe_tokens tokens
    // after the calibration ones (then output_aware / attended_values are ignored).
    bool select_weighting = true;
    int n_threads = 0;
    quant::Options quant;               // quantized latents (avg_bits 0 = fp32)
};

// Ranks per layer: k[l][h] per KV head, v[l] per layer; empty k[l] = skipped layer.
struct RankMap {
    std::vector<std::vector<int>> k;
    std::vector<int> v;
    bool compressed(int l) const { return !k[static_cast<size_t>(l)].empty(); }
};

struct Budget {
    uint64_t latent = 0, full = 0;            // cache floats per token, compressed layers only
    uint64_t params_kept = 0, params_full = 0;  // K/V projection parameters, compressed layers only
    double kv_removed() const { return full ? 1.0 - double(latent) / double(full) : 0.0; }
    double params_removed() const { return params_full ? 1.0 - double(params_kept) / double(params_full) : 0.0; }
};
Budget count_budget(const ModelConfig& c, const RankMap& r);

// Soft-threshold activation error of one group (a key head or a value layer)
// with whitened singular values s (descending): each s_i is gated as
// s_i tanh(k (s_i / s_0 - a)) when s_i / s_0 > a, else 0; the error is
// sum_i (s_i - gated_i)^2. grad (optional) receives d error / d a.
double soft_error(const std::vector<double>& s, double a, double k, double* grad);

// Singular values of every group, whitened (descending); groups of skipped layers empty.
struct Spectra {
    std::vector<std::vector<std::vector<double>>> k;  // [layer][head]
    std::vector<std::vector<double>> v;               // [layer]
};

RankMap uniform_ranks(const ModelConfig& c, const std::vector<bool>& compressed, float rate);
// Each allocation reaches at most `target` latent floats per token (then fills
// the remaining room greedily), so strategies compare at one budget.
RankMap energy_ranks(const ModelConfig& c, const Spectra& sp, uint64_t target);
// The paper's soft threshold: learnable a per key head and per value layer,
// gradient descent on sum_g w_g err_g(a_g) + lambda sum_g exp(-a_g); lambda
// is searched until the budget is met. w_k / w_v: per-layer sensitivities.
RankMap adaptive_ranks(const ModelConfig& c, const Spectra& sp, const std::vector<double>& w_k,
                       const std::vector<double>& w_v, uint64_t target, double sharpness);

// Two-sided weighted truncated SVD of W (out x in): with input Gram G (in x in)
// and output weight M (out x out, symmetric positive semi-definite), the
// channels minimize E ||M^(1/2) (W - U_r A_r) x||^2 over inputs of Gram G.
// With G + ridge = L L^T and M + ridge = N N^T: N^T W L = U' S V^T,
// U = N^-T U', A = S V^T L^-1, so the weighted error of rank r is the sum of
// the discarded s_i^2 (ridges relative to each matrix's mean diagonal).
struct WeightedFactor {
    Eigen::MatrixXd U, A;   // out x m, m x in (m = min(out, in)), channels by singular value
    std::vector<double> s;  // weighted singular values, descending
};
WeightedFactor weighted_factorize(const Eigen::MatrixXd& W, const Eigen::MatrixXd& G, const Eigen::MatrixXd& M,
                                  double ridge);

// Output weight of one key head: averaged over relative positions, RoPE turns
// the group's pre-RoPE query Gram into isotropic 2x2 blocks per rotary pair,
// so a key error in pair p costs (E q_a^2 + E q_b^2) / 2 per unit of squared
// error in either of its dimensions. query_energy[j] = sum over the group's
// query heads of E q_j^2 (pre-RoPE). Dimensions past rope.n_dims are not
// rotated and keep their own energy. Returns the diagonal, head_dim long.
std::vector<double> rope_pair_weights(const RopeConfig& rope, int head_dim, const std::vector<double>& query_energy);

// Adds the Gram of the attention-averaged inputs of one sequence's layer
// (the value whitening of Options::attended_values): a value error reaches
// query head g at position t only through sum_j p_gj(t) v_j, i.e. through
// xbar_g(t) = sum_j p_gj(t) x_j; gbar += sum_g sum_t xbar_g(t) xbar_g(t)^T.
// x: the sequence's K/V inputs, n rows of n_embd (positions 0..n-1); the
// probabilities are those of L's own W_q, W_k (RoPE, causal softmax).
void add_attended_gram(const Model& m, const LayerWeights& L, const float* x, int n, Eigen::MatrixXd& gbar);

// Whole pipeline on a model (its weights gain the latent factors): Gram
// matrices, whitened factorizations, sensitivities, ranks, held-out
// perplexity. Returns the compression metadata of the bundle.
nlohmann::json calibrate(Model& model, const std::string& calib_text, const Options& opt);

// Installs factors at full rank computed without whitening data (identity
// Gram): for tests of the runtime path.
void install_full_rank(Model& model, const std::vector<int>& layers);

}  // namespace starkv::lowrank
