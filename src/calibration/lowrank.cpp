#include "calibration/lowrank.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "model/context.h"
#include "model/score.h"

namespace starkv::lowrank {

using json = nlohmann::json;
using Eigen::MatrixXd;

Strategy parse_strategy(const std::string& n) {
    if (n == "uniform") return Strategy::Uniform;
    if (n == "energy") return Strategy::Energy;
    if (n == "adaptive") return Strategy::Adaptive;
    fail(STARKV_ERR_INVALID_ARGUMENT, "unknown rank strategy '" + n + "' (adaptive, uniform, energy)");
}

const char* strategy_name(Strategy s) {
    switch (s) {
        case Strategy::Uniform: return "uniform";
        case Strategy::Energy: return "energy";
        case Strategy::Adaptive: return "adaptive";
    }
    return "adaptive";
}

Budget count_budget(const ModelConfig& c, const RankMap& r) {
    Budget b;
    const uint64_t hd = static_cast<uint64_t>(c.head_dim), E = static_cast<uint64_t>(c.n_embd),
                   kvd = static_cast<uint64_t>(c.n_head_kv) * hd;
    for (int l = 0; l < c.n_layer; ++l) {
        if (!r.compressed(l)) continue;
        for (int rk : r.k[static_cast<size_t>(l)]) {
            b.latent += static_cast<uint64_t>(rk);
            b.params_kept += static_cast<uint64_t>(rk) * (hd + E);
        }
        const uint64_t rv = static_cast<uint64_t>(r.v[static_cast<size_t>(l)]);
        b.latent += rv;
        b.params_kept += rv * (kvd + E);
        b.full += 2 * kvd;
        b.params_full += 2 * kvd * E;
    }
    return b;
}

double soft_error(const std::vector<double>& s, double a, double k, double* grad) {
    double err = 0, g = 0;
    const double s0 = s.empty() || s[0] <= 0 ? 1.0 : s[0];
    for (double si : s) {
        const double x = si / s0;
        if (x > a) {
            const double t = std::tanh(k * (x - a));
            err += si * si * (1 - t) * (1 - t);
            // d/da of (s (1 - t))^2 with dt/da = -k (1 - t^2)
            g += 2 * si * si * (1 - t) * k * (1 - t * t);
        } else {
            err += si * si;
        }
    }
    if (grad) *grad = g;
    return err;
}

namespace {

uint64_t total(const RankMap& r) {
    uint64_t n = 0;
    for (size_t l = 0; l < r.v.size(); ++l) {
        if (r.k[l].empty()) continue;
        for (int x : r.k[l]) n += static_cast<uint64_t>(x);
        n += static_cast<uint64_t>(r.v[l]);
    }
    return n;
}

RankMap empty_map(const ModelConfig& c) {
    RankMap r;
    r.k.resize(static_cast<size_t>(c.n_layer));
    r.v.assign(static_cast<size_t>(c.n_layer), 0);
    return r;
}

// A group is one key head or one value layer: its spectrum, weight and rank slot.
struct Group {
    const std::vector<double>* s;
    double w;
    int* rank;
};

std::vector<Group> groups(RankMap& r, const Spectra& sp, const std::vector<double>& wk, const std::vector<double>& wv) {
    std::vector<Group> g;
    for (size_t l = 0; l < r.v.size(); ++l) {
        if (sp.k[l].empty()) continue;
        r.k[l].assign(sp.k[l].size(), 1);
        for (size_t h = 0; h < sp.k[l].size(); ++h) g.push_back({&sp.k[l][h], wk.empty() ? 1.0 : wk[l], &r.k[l][h]});
        r.v[l] = 1;
        g.push_back({&sp.v[l], wv.empty() ? 1.0 : wv[l], &r.v[l]});
    }
    return g;
}

// Adds channels, the one whose loss w * s^2 is largest first, while room is
// left; removes the cheapest while over. Every rank stays >= 1.
void fit_budget(std::vector<Group>& gs, uint64_t target) {
    auto used = [&] {
        uint64_t n = 0;
        for (const Group& g : gs) n += static_cast<uint64_t>(*g.rank);
        return n;
    };
    uint64_t n = used();
    while (n > target) {
        Group* best = nullptr;
        double cost = 0;
        for (Group& g : gs) {
            if (*g.rank <= 1) continue;
            const double s = (*g.s)[static_cast<size_t>(*g.rank - 1)], c = g.w * s * s;
            if (!best || c < cost) best = &g, cost = c;
        }
        if (!best) break;
        --*best->rank;
        --n;
    }
    while (n < target) {
        Group* best = nullptr;
        double gain = -1;
        for (Group& g : gs) {
            if (static_cast<size_t>(*g.rank) >= g.s->size()) continue;
            const double s = (*g.s)[static_cast<size_t>(*g.rank)], c = g.w * s * s;
            if (c > gain) best = &g, gain = c;
        }
        if (!best) break;
        ++*best->rank;
        ++n;
    }
}

}  // namespace

RankMap uniform_ranks(const ModelConfig& c, const std::vector<bool>& compressed, float rate) {
    RankMap r = empty_map(c);
    const double keep = 1.0 - static_cast<double>(rate);
    const int rk = std::clamp(static_cast<int>(std::floor(c.head_dim * keep + 1e-9)), 1, c.head_dim);
    const int kvd = c.n_head_kv * c.head_dim;
    const int rv = std::clamp(static_cast<int>(std::floor(kvd * keep + 1e-9)), 1, std::min(kvd, c.n_embd));
    for (int l = 0; l < c.n_layer; ++l) {
        if (!compressed[static_cast<size_t>(l)]) continue;
        r.k[static_cast<size_t>(l)].assign(static_cast<size_t>(c.n_head_kv), std::min(rk, c.n_embd));
        r.v[static_cast<size_t>(l)] = rv;
    }
    return r;
}

RankMap energy_ranks(const ModelConfig& c, const Spectra& sp, uint64_t target) {
    RankMap r = empty_map(c);
    std::vector<Group> gs = groups(r, sp, {}, {});
    auto apply = [&](double tau) {
        for (Group& g : gs) {
            const std::vector<double>& s = *g.s;
            double tot = 0, acc = 0;
            for (double x : s) tot += x * x;
            int k = 0;
            while (static_cast<size_t>(k) < s.size() && acc < tau * tot) acc += s[static_cast<size_t>(k)] * s[static_cast<size_t>(k)], ++k;
            *g.rank = std::max(k, 1);
        }
        return total(r);
    };
    double lo = 0, hi = 1;  // the largest energy fraction that fits
    for (int it = 0; it < 60; ++it) {
        const double mid = 0.5 * (lo + hi);
        (apply(mid) <= target ? lo : hi) = mid;
    }
    apply(lo);
    // Room left by the discrete steps goes to the largest remaining energy.
    fit_budget(gs, target);
    return r;
}

RankMap adaptive_ranks(const ModelConfig& c, const Spectra& sp, const std::vector<double>& w_k,
                       const std::vector<double>& w_v, uint64_t target, double k) {
    RankMap r = empty_map(c);
    std::vector<Group> gs = groups(r, sp, w_k, w_v);
    // Errors in units of the total weighted energy, so lambda's scale is model-independent.
    double scale = 0;
    for (const Group& g : gs)
        for (double x : *g.s) scale += g.w * x * x;
    if (scale <= 0) scale = 1;
    std::vector<double> a(gs.size());
    auto descend = [&](double lambda) {
        std::fill(a.begin(), a.end(), 0.0);
        for (size_t gi = 0; gi < gs.size(); ++gi) {
            // Each group's term is separable: plain gradient descent with a
            // clipped step (the error's slope peaks at 2 k w s^2 near a = s).
            double& ag = a[gi];
            const double wg = gs[gi].w / scale;
            for (int it = 0; it < 600; ++it) {
                double ge = 0;
                soft_error(*gs[gi].s, ag, k, &ge);
                const double grad = wg * ge - lambda * std::exp(-ag);
                const double step = std::clamp(-0.05 * grad / (lambda + 1e-30), -0.005, 0.005);
                ag = std::clamp(ag + step, 0.0, 1.0);
            }
            const std::vector<double>& s = *gs[gi].s;
            const double s0 = s.empty() || s[0] <= 0 ? 1.0 : s[0];
            int kept = 0;
            for (double x : s) kept += x / s0 > ag ? 1 : 0;  // freeze: channels with s <= a are pruned
            *gs[gi].rank = std::max(kept, 1);
        }
        return total(r);
    };
    double lo = -30, hi = 10;  // log lambda: lo keeps too much, hi fits
    if (descend(std::exp(hi)) > target) hi = 30;
    for (int it = 0; it < 40; ++it) {
        const double mid = 0.5 * (lo + hi);
        (descend(std::exp(mid)) <= target ? hi : lo) = mid;
    }
    descend(std::exp(hi));
    fit_budget(gs, target);
    return r;
}

namespace {

// Whitened SVD of one weight block W (out x E): with G = L L^T, W L = U S V^T
// and A = S V^T L^-1, so that U_r A_r is the rank-r W of least activation error.
struct Factor {
    MatrixXd U, A;                // out x m, m x E (m = min(out, E)), channels by singular value
    std::vector<double> s;
};

Factor factorize(const MatrixXd& W, const MatrixXd& L, const MatrixXd& Linv) {
    Eigen::JacobiSVD<MatrixXd> svd(W * L, Eigen::ComputeThinU | Eigen::ComputeThinV);
    Factor f;
    const Eigen::VectorXd& sv = svd.singularValues();
    f.s.assign(sv.data(), sv.data() + sv.size());
    f.U = svd.matrixU();
    f.A = sv.asDiagonal() * svd.matrixV().transpose() * Linv;
    return f;
}

MatrixXd weight_block(const Matrix& w, int row0, int rows) {
    MatrixXd m(rows, w.cols);
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < w.cols; ++c) m(r, c) = w.row(row0 + r)[c];
    return m;
}

Matrix to_matrix(const MatrixXd& m) {
    Matrix out(static_cast<int>(m.rows()), static_cast<int>(m.cols()));
    for (int r = 0; r < out.rows; ++r)
        for (int c = 0; c < out.cols; ++c) out.row(r)[c] = static_cast<float>(m(r, c));
    return out;
}

struct LayerFactors {
    std::vector<Factor> k;
    Factor v;
};

void install(LatentFactors& lat, const LayerFactors& f, const std::vector<int>& rk, int rv) {
    lat = LatentFactors{};
    for (size_t h = 0; h < f.k.size(); ++h) {
        lat.k_a.push_back(to_matrix(f.k[h].A.topRows(rk[h])));
        lat.k_u.push_back(to_matrix(f.k[h].U.leftCols(rk[h])));
    }
    lat.v_a = to_matrix(f.v.A.topRows(rv));
    lat.v_u = to_matrix(f.v.U.leftCols(rv));
}

LayerFactors factor_layer(const ModelConfig& c, const LayerWeights& L, const MatrixXd& G, double ridge) {
    const int E = c.n_embd;
    const double mean_diag = std::max(G.trace() / E, 1e-30);
    Eigen::SelfAdjointEigenSolver<MatrixXd> eig(G + ridge * mean_diag * MatrixXd::Identity(E, E));
    const Eigen::VectorXd ev = eig.eigenvalues().cwiseMax(ridge * mean_diag);
    const MatrixXd Lw = eig.eigenvectors() * ev.cwiseSqrt().asDiagonal();
    const MatrixXd Linv = ev.cwiseSqrt().cwiseInverse().asDiagonal() * eig.eigenvectors().transpose();
    LayerFactors f;
    for (int h = 0; h < c.n_head_kv; ++h) f.k.push_back(factorize(weight_block(L.wk, h * c.head_dim, c.head_dim), Lw, Linv));
    f.v = factorize(weight_block(L.wv, 0, L.wv.rows), Lw, Linv);
    return f;
}

std::vector<std::vector<int32_t>> documents(const Model& m, const std::string& text, int seq_len) {
    std::vector<std::vector<int32_t>> out;
    std::istringstream in(text);
    std::string line, cur;
    auto flush = [&] {
        if (cur.find_first_not_of(" \t\n") != std::string::npos) {
            std::vector<int32_t> t = m.tokenizer().tokenize(cur, true, false);
            for (size_t i = 0; i + 1 < t.size(); i += static_cast<size_t>(seq_len)) {
                std::vector<int32_t> piece(t.begin() + static_cast<std::ptrdiff_t>(i),
                                           t.begin() + static_cast<std::ptrdiff_t>(std::min(t.size(), i + seq_len)));
                if (piece.size() >= 2) out.push_back(std::move(piece));
            }
        }
        cur.clear();
    };
    while (std::getline(in, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) {
            flush();
            continue;
        }
        if (!cur.empty()) cur += '\n';
        cur += line;
    }
    flush();
    return out;
}

// The first sequences holding up to n tokens, from index *next on.
std::vector<std::vector<int32_t>> take(const std::vector<std::vector<int32_t>>& docs, size_t* next, int n) {
    std::vector<std::vector<int32_t>> out;
    size_t got = 0;
    while (*next < docs.size() && got < static_cast<size_t>(n)) {
        out.push_back(docs[*next]);
        got += docs[(*next)++].size();
    }
    return out;
}

std::shared_ptr<const Model> borrow(const Model& m) {
    return std::shared_ptr<const Model>(&m, [](const Model*) {});
}

double perplexity(const Model& m, const std::vector<std::vector<int32_t>>& seqs, int n_ctx, int threads) {
    Context ctx(borrow(m), ContextOptions{n_ctx, threads});
    double nll = 0;
    size_t n = 0;
    for (const auto& s : seqs) {
        const ScoreResult r = score_tokens(ctx, s.data(), s.size());
        nll += r.nll_sum;
        n += r.n_scored;
    }
    return n ? std::exp(nll / static_cast<double>(n)) : 0.0;
}

// Log-probabilities of every position of every sequence.
std::vector<std::vector<float>> log_probs(const Model& m, const std::vector<std::vector<int32_t>>& seqs, int n_ctx, int threads) {
    Context ctx(borrow(m), ContextOptions{n_ctx, threads});
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

// Mean KL(base || model) per token.
double mean_kl(const std::vector<std::vector<float>>& base, const std::vector<std::vector<float>>& cur, size_t V) {
    double kl = 0;
    size_t n = 0;
    for (size_t s = 0; s < base.size(); ++s)
        for (size_t i = 0; i < base[s].size(); i += V, ++n)
            for (size_t j = 0; j < V; ++j) {
                const double p = std::exp(static_cast<double>(base[s][i + j]));
                kl += p * (static_cast<double>(base[s][i + j]) - static_cast<double>(cur[s][i + j]));
            }
    return n ? kl / static_cast<double>(n) : 0.0;
}

double tail_energy(const std::vector<double>& s, int r) {
    double e = 0;
    for (size_t i = static_cast<size_t>(r); i < s.size(); ++i) e += s[i] * s[i];
    return e;
}

}  // namespace

nlohmann::json calibrate(Model& model, const std::string& text, const Options& opt) {
    const ModelConfig& c = model.config();
    // A compressed source (a STAR-KV bundle keeps W_k and W_v) is calibrated afresh.
    for (LayerWeights& L : model.mutable_weights().layers) L.lat = LatentFactors{}, L.plain_q = LatentQuant{};
    if (!(opt.rate >= 0.0f && opt.rate < 1.0f))
        fail(STARKV_ERR_INVALID_ARGUMENT, "KV compression rate must be in [0, 1)");
    if (opt.calib_tokens < 1) fail(STARKV_ERR_INVALID_ARGUMENT, "calibration needs at least one token");
    std::vector<bool> compressed(static_cast<size_t>(c.n_layer), true);
    std::vector<int> skip = opt.skip_layers;
    if (opt.default_skip) skip = {0, 1, c.n_layer - 1};
    for (int l : skip) {
        if (l < 0 || l >= c.n_layer)
            fail(STARKV_ERR_INVALID_ARGUMENT, "skip layer " + std::to_string(l) + " is outside [0, " + std::to_string(c.n_layer) + ")");
        compressed[static_cast<size_t>(l)] = false;
    }
    const int seq_len = std::min(opt.seq_len, c.n_ctx_train > 0 ? c.n_ctx_train : opt.seq_len);
    const std::vector<std::vector<int32_t>> docs = documents(model, text, seq_len);
    size_t next = 0;
    const auto calib = take(docs, &next, opt.calib_tokens);
    const auto held_out = take(docs, &next, opt.eval_tokens);
    if (calib.empty()) fail(STARKV_ERR_INVALID_ARGUMENT, "the calibration text has no usable tokens");
    size_t n_calib = 0, n_eval = 0;
    for (const auto& s : calib) n_calib += s.size();
    for (const auto& s : held_out) n_eval += s.size();

    // 1. Gram matrices of the K/V inputs, on the uncompressed model.
    const int E = c.n_embd;
    std::vector<MatrixXd> gram(static_cast<size_t>(c.n_layer), MatrixXd::Zero(E, E));
    {
        Context ctx(borrow(model), ContextOptions{seq_len, opt.n_threads});
        ctx.set_kv_input_observer([&](int l, const float* xn, int n) {
            const Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> X(xn, n, E);
            gram[static_cast<size_t>(l)].selfadjointView<Eigen::Lower>().rankUpdate(X.cast<double>().transpose());
        });
        for (const auto& s : calib) {
            ctx.reset();
            ctx.eval(s.data(), s.size(), false);
        }
    }
    for (MatrixXd& g : gram) g = g.selfadjointView<Eigen::Lower>().toDenseMatrix() / static_cast<double>(n_calib);

    // 2. Whitened factorizations of the compressed layers.
    std::vector<LayerFactors> factors(static_cast<size_t>(c.n_layer));
    Spectra sp;
    sp.k.resize(static_cast<size_t>(c.n_layer));
    sp.v.resize(static_cast<size_t>(c.n_layer));
    for (int l = 0; l < c.n_layer; ++l) {
        if (!compressed[static_cast<size_t>(l)]) continue;
        factors[static_cast<size_t>(l)] = factor_layer(c, model.weights().layers[static_cast<size_t>(l)], gram[static_cast<size_t>(l)], opt.ridge);
        for (const Factor& f : factors[static_cast<size_t>(l)].k) sp.k[static_cast<size_t>(l)].push_back(f.s);
        sp.v[static_cast<size_t>(l)] = factors[static_cast<size_t>(l)].v.s;
    }

    const bool split = opt.key_rate >= 0.0f || opt.value_rate >= 0.0f;
    if (split && !(opt.key_rate >= 0.0f && opt.key_rate < 1.0f && opt.value_rate >= 0.0f && opt.value_rate < 1.0f))
        fail(STARKV_ERR_INVALID_ARGUMENT, "separate key and value rates must both be in [0, 1)");
    RankMap uni = uniform_ranks(c, compressed, split ? opt.key_rate : opt.rate);
    if (split) uni.v = uniform_ranks(c, compressed, opt.value_rate).v;
    const uint64_t target = total(uni);
    // Separate targets: keys and values are allocated apart, each with the
    // other's spectra emptied (their groups then sit at rank 1 and are swapped back).
    uint64_t n_c = 0, target_k = 0;
    for (int l = 0; l < c.n_layer; ++l)
        if (compressed[static_cast<size_t>(l)]) {
            ++n_c;
            for (int r : uni.k[static_cast<size_t>(l)]) target_k += static_cast<uint64_t>(r);
        }
    auto allocate = [&](const std::function<RankMap(const Spectra&, uint64_t)>& fn) {
        if (!split) return fn(sp, target);
        Spectra only_k = sp, only_v = sp;
        for (auto& v : only_k.v) v.clear();
        for (auto& heads : only_v.k)
            for (auto& h : heads) h.clear();
        RankMap r = fn(only_k, target_k + n_c);
        r.v = fn(only_v, target - target_k + n_c * static_cast<uint64_t>(c.n_head_kv)).v;
        return r;
    };
    const double ppl_base = held_out.empty() ? 0.0 : perplexity(model, held_out, seq_len, opt.n_threads);

    // 3. Ranks.
    std::vector<double> w_k(static_cast<size_t>(c.n_layer), 0.0), w_v(static_cast<size_t>(c.n_layer), 0.0);
    std::vector<double> kl_k(w_k), kl_v(w_v), best_w_k(w_k), best_w_v(w_v);
    double probe_kl_total = 0;
    RankMap ranks;
    if (opt.strategy == Strategy::Uniform) {
        ranks = uni;
    } else if (opt.strategy == Strategy::Energy) {
        ranks = allocate([&](const Spectra& s, uint64_t t) { return energy_ranks(c, s, t); });
    } else {
        // Sensitivities: KL of the final logits when only this layer's keys
        // (or values) are cut, per unit of the activation error that cut
        // causes. First probed at the uniform ranks, then re-measured at the
        // allocation's own ranks (the KL is far from linear in the error), a
        // few rounds; the allocation with the least KL on the probe text wins.
        size_t pnext = 0;
        const auto probe = take(calib, &pnext, opt.probe_tokens);
        const size_t V = static_cast<size_t>(c.n_vocab);
        const auto base = log_probs(model, probe, seq_len, opt.n_threads);
        auto probe_kl = [&](const RankMap& at) {
            std::vector<double> nk(w_k), nv(w_v);
            for (int l = 0; l < c.n_layer; ++l) {
                const size_t li = static_cast<size_t>(l);
                if (!compressed[li]) continue;
                LatentFactors& lat = model.mutable_weights().layers[li].lat;
                const std::vector<int> full_k(static_cast<size_t>(c.n_head_kv), c.head_dim);
                const int full_v = static_cast<int>(sp.v[li].size());
                double ek = 0;
                for (size_t h = 0; h < sp.k[li].size(); ++h) ek += tail_energy(sp.k[li][h], at.k[li][h]);
                const double ev = tail_energy(sp.v[li], at.v[li]);
                if (ek > 0) {
                    install(lat, factors[li], at.k[li], full_v);
                    kl_k[li] = std::max(mean_kl(base, log_probs(model, probe, seq_len, opt.n_threads), V), 0.0);
                    nk[li] = kl_k[li] / ek;
                }
                if (ev > 0) {
                    install(lat, factors[li], full_k, at.v[li]);
                    kl_v[li] = std::max(mean_kl(base, log_probs(model, probe, seq_len, opt.n_threads), V), 0.0);
                    nv[li] = kl_v[li] / ev;
                }
                lat = LatentFactors{};
            }
            w_k = nk;
            w_v = nv;
        };
        auto total_kl = [&](const RankMap& r) {
            for (int l = 0; l < c.n_layer; ++l)
                if (compressed[static_cast<size_t>(l)])
                    install(model.mutable_weights().layers[static_cast<size_t>(l)].lat, factors[static_cast<size_t>(l)],
                            r.k[static_cast<size_t>(l)], r.v[static_cast<size_t>(l)]);
            const double kl = mean_kl(base, log_probs(model, probe, seq_len, opt.n_threads), V);
            for (LayerWeights& L : model.mutable_weights().layers) L.lat = LatentFactors{};
            return kl;
        };
        RankMap at = uni;
        double best_kl = 0;
        for (int round = 0; round < std::max(1, opt.adaptive_rounds); ++round) {
            probe_kl(at);
            at = allocate([&](const Spectra& s, uint64_t t) { return adaptive_ranks(c, s, w_k, w_v, t, opt.sharpness); });
            const double kl = total_kl(at);
            if (round == 0 || kl < best_kl) ranks = at, best_kl = kl, best_w_k = w_k, best_w_v = w_v;
        }
        w_k = best_w_k;
        w_v = best_w_v;
        probe_kl_total = best_kl;
    }

    // 4. Freeze: the kept channels with their whole singular values.
    for (int l = 0; l < c.n_layer; ++l)
        if (compressed[static_cast<size_t>(l)])
            install(model.mutable_weights().layers[static_cast<size_t>(l)].lat, factors[static_cast<size_t>(l)],
                    ranks.k[static_cast<size_t>(l)], ranks.v[static_cast<size_t>(l)]);
    // 5. Quantized latents (plan, rotation folded into the factors).
    json kv_quant;
    if (opt.quant.avg_bits > 0) kv_quant = quant::plan_and_fold(model, calib, opt.quant, seq_len, opt.n_threads);
    const double ppl = held_out.empty() ? 0.0 : perplexity(model, held_out, seq_len, opt.n_threads);

    const Budget b = count_budget(c, ranks);
    json rank_k = json::array(), rank_v = json::array(), skipped = json::array();
    for (int l = 0; l < c.n_layer; ++l) {
        rank_k.push_back(ranks.k[static_cast<size_t>(l)]);
        rank_v.push_back(compressed[static_cast<size_t>(l)] ? json(ranks.v[static_cast<size_t>(l)]) : json(nullptr));
        if (!compressed[static_cast<size_t>(l)]) skipped.push_back(l);
    }
    json out{{"kv", "star-kv"},
             {"rate", opt.rate},
             {"key_rate", split ? json(opt.key_rate) : json(nullptr)},
             {"value_rate", split ? json(opt.value_rate) : json(nullptr)},
             {"strategy", strategy_name(opt.strategy)},
             {"skip_layers", skipped},
             {"ranks", {{"k", rank_k}, {"v", rank_v}}},
             {"budget",
              {{"latent_per_token", b.latent},
               {"uncompressed_per_token", b.full},
               {"kv_removed", b.kv_removed()},
               {"kv_params_removed", b.params_removed()}}},
             {"calibration",
              {{"tokens", n_calib},
               {"seq_len", seq_len},
               {"ridge", opt.ridge},
               {"sharpness", opt.sharpness},
               {"probe_tokens", opt.strategy == Strategy::Adaptive ? opt.probe_tokens : 0}}},
             {"held_out", {{"tokens", n_eval}, {"perplexity_uncompressed", ppl_base}, {"perplexity", ppl}}}};
    if (!kv_quant.is_null()) out["kv_quant"] = kv_quant;
    if (opt.strategy == Strategy::Adaptive)
        out["sensitivity"] = {{"w_k", w_k}, {"w_v", w_v}, {"rounds", opt.adaptive_rounds}, {"probe_kl", probe_kl_total}};
    log(STARKV_LOG_INFO, "STAR-KV calibration: " + out.dump());
    return out;
}

void install_full_rank(Model& model, const std::vector<int>& layers) {
    const ModelConfig& c = model.config();
    const MatrixXd I = MatrixXd::Identity(c.n_embd, c.n_embd);
    for (int l : layers) {
        LayerWeights& L = model.mutable_weights().layers[static_cast<size_t>(l)];
        const LayerFactors f = factor_layer(c, L, I, 0.0);
        std::vector<int> rk;
        for (const Factor& k : f.k) rk.push_back(static_cast<int>(k.s.size()));
        install(L.lat, f, rk, static_cast<int>(f.v.s.size()));
    }
}

}  // namespace starkv::lowrank
