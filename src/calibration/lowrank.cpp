#include "calibration/lowrank.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "model/context.h"
#include "model/score.h"
#include "calibration/probe.h"

namespace starkv::lowrank {

using probe::take;
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

// Square root of a symmetric PSD matrix's regularized form: N with N N^T = M + ridge.
MatrixXd sqrt_factor(const MatrixXd& M, double ridge, MatrixXd* inv) {
    const Eigen::Index n = M.rows();
    const double floor = ridge * std::max(M.trace() / static_cast<double>(n), 1e-30);
    Eigen::SelfAdjointEigenSolver<MatrixXd> eig(M + floor * MatrixXd::Identity(n, n));
    const Eigen::VectorXd ev = eig.eigenvalues().cwiseMax(floor);
    if (inv) *inv = ev.cwiseSqrt().cwiseInverse().asDiagonal() * eig.eigenvectors().transpose();
    return eig.eigenvectors() * ev.cwiseSqrt().asDiagonal();
}

}  // namespace

WeightedFactor weighted_factorize(const MatrixXd& W, const MatrixXd& G, const MatrixXd& M, double ridge) {
    MatrixXd Linv, Ninv;
    const MatrixXd L = sqrt_factor(G, ridge, &Linv), N = sqrt_factor(M, ridge, &Ninv);
    Eigen::JacobiSVD<MatrixXd> svd(N.transpose() * W * L, Eigen::ComputeThinU | Eigen::ComputeThinV);
    WeightedFactor f;
    const Eigen::VectorXd& sv = svd.singularValues();
    f.s.assign(sv.data(), sv.data() + sv.size());
    f.U = Ninv.transpose() * svd.matrixU();
    f.A = sv.asDiagonal() * svd.matrixV().transpose() * Linv;
    return f;
}

std::vector<double> rope_pair_weights(const RopeConfig& rope, int head_dim, const std::vector<double>& e) {
    std::vector<double> d(e.begin(), e.end());
    const int nd = std::min(rope.n_dims > 0 ? rope.n_dims : head_dim, head_dim);
    for (int p = 0; p < nd / 2; ++p) {
        const int a = rope.layout == RopeLayout::Adjacent ? 2 * p : p;
        const int b = rope.layout == RopeLayout::Adjacent ? 2 * p + 1 : p + nd / 2;
        d[static_cast<size_t>(a)] = d[static_cast<size_t>(b)] = 0.5 * (e[static_cast<size_t>(a)] + e[static_cast<size_t>(b)]);
    }
    return d;
}

namespace {

using Factor = WeightedFactor;

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

// The output weights of one layer (see Options::output_aware / query_aware).
struct OutputWeights {
    std::vector<MatrixXd> k;  // per KV head, head_dim x head_dim (diagonal)
    MatrixXd v;               // n_kv head_dim square, block diagonal over KV heads
};

OutputWeights output_weights(const ModelConfig& c, const LayerWeights& L, const MatrixXd& G, bool query_aware,
                             bool output_aware) {
    const int hd = c.head_dim, group = c.n_head / c.n_head_kv, kvd = c.n_head_kv * hd;
    OutputWeights ow;
    for (int h = 0; h < c.n_head_kv; ++h) {
        if (!query_aware) {
            ow.k.push_back(MatrixXd::Identity(hd, hd));
            continue;
        }
        // E q_j^2 = (W_q G W_q^T)_jj, summed over the group's query heads.
        std::vector<double> energy(static_cast<size_t>(hd), 0.0);
        for (int g = 0; g < group; ++g) {
            const MatrixXd wq = weight_block(L.wq, (h * group + g) * hd, hd);
            const MatrixXd qg = wq * G;
            for (int j = 0; j < hd; ++j) energy[static_cast<size_t>(j)] += qg.row(j).dot(wq.row(j));
        }
        const std::vector<double> d = rope_pair_weights(c.rope, hd, energy);
        ow.k.push_back(Eigen::Map<const Eigen::VectorXd>(d.data(), hd).asDiagonal());
    }
    ow.v = MatrixXd::Identity(kvd, kvd);
    if (output_aware) {
        // Query head g reads its KV head's values through W_o's columns [g hd, (g+1) hd).
        for (int h = 0; h < c.n_head_kv; ++h) {
            MatrixXd m = MatrixXd::Zero(hd, hd);
            for (int g = 0; g < group; ++g) {
                MatrixXd wo(L.wo.rows, hd);
                for (int r = 0; r < L.wo.rows; ++r)
                    for (int j = 0; j < hd; ++j) wo(r, j) = L.wo.row(r)[(h * group + g) * hd + j];
                m += wo.transpose() * wo;
            }
            ow.v.block(h * hd, h * hd, hd, hd) = m;
        }
    }
    return ow;
}

// G: the Gram of the key inputs; G_v: the one the values are whitened with.
LayerFactors factor_layer(const ModelConfig& c, const LayerWeights& L, const MatrixXd& G, const MatrixXd& G_v,
                          double ridge, const OutputWeights& ow) {
    LayerFactors f;
    for (int h = 0; h < c.n_head_kv; ++h)
        f.k.push_back(weighted_factorize(weight_block(L.wk, h * c.head_dim, c.head_dim), G, ow.k[static_cast<size_t>(h)], ridge));
    f.v = weighted_factorize(weight_block(L.wv, 0, L.wv.rows), G_v, ow.v, ridge);
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

using RowMatrixXf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

}  // namespace

void add_attended_gram(const Model& m, const LayerWeights& L, const float* x, int n, MatrixXd& gbar) {
    const ModelConfig& c = m.config();
    const int E = c.n_embd, hd = c.head_dim;
    const Eigen::Map<const RowMatrixXf> X(x, n, E);
    const int qd = c.n_head * hd, kvd = c.n_head_kv * hd, group = c.n_head / c.n_head_kv;
    const Eigen::Map<const RowMatrixXf> wq(L.wq.data.data(), qd, E), wk(L.wk.data.data(), kvd, E);
    RowMatrixXf Q = X * wq.transpose(), K = X * wk.transpose();
    for (int t = 0; t < n; ++t) {
        m.rope().apply(Q.row(t).data(), c.n_head, hd, t);
        m.rope().apply(K.row(t).data(), c.n_head_kv, hd, t);
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    RowMatrixXf bar(static_cast<Eigen::Index>(n) * c.n_head, E);
    for (int g = 0; g < c.n_head; ++g) {
        RowMatrixXf P = (Q.middleCols(g * hd, hd) * K.middleCols((g / group) * hd, hd).transpose()) * scale;
        for (int t = 0; t < n; ++t) {
            auto row = P.row(t);
            const float mx = row.head(t + 1).maxCoeff();
            float z = 0;
            for (int j = 0; j <= t; ++j) z += row(j) = std::exp(row(j) - mx);
            row.head(t + 1) /= z;
            row.tail(n - t - 1).setZero();
        }
        bar.middleRows(static_cast<Eigen::Index>(g) * n, n) = P * X;
    }
    gbar += (bar.transpose() * bar).cast<double>();
}

namespace {

size_t count_tokens(const std::vector<std::vector<int32_t>>& seqs) {
    size_t n = 0;
    for (const auto& s : seqs) n += s.size();
    return n;
}

double tail_energy(const std::vector<double>& s, int r) {
    double e = 0;
    for (size_t i = static_cast<size_t>(r); i < s.size(); ++i) e += s[i] * s[i];
    return e;
}

}  // namespace

nlohmann::json calibrate(Model& model, const std::string& text, const Options& opt) {
    const ModelConfig& c = model.config();
    // The factors come from W_k and W_v, which a STAR-KV bundle no longer holds.
    for (size_t l = 0; l < model.weights().layers.size(); ++l)
        if (model.weights().layers[l].wk.empty() || model.weights().layers[l].wv.empty())
            fail(STARKV_ERR_UNSUPPORTED, "layer " + std::to_string(l) +
                                             " holds only STAR-KV latents: calibrate from the original model");
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
    // The weighting, and adaptive's allocation among its candidates, are
    // chosen on text the factors were not fitted to (the tokens after the
    // calibration ones), when the file has them.
    const bool judge = opt.select_weighting || opt.strategy == Strategy::Adaptive;
    const auto select_text = judge ? take(docs, &next, opt.probe_tokens) : decltype(docs){};
    const auto held_out = take(docs, &next, opt.eval_tokens);
    if (calib.empty()) fail(STARKV_ERR_INVALID_ARGUMENT, "the calibration text has no usable tokens");
    size_t n_calib = 0, n_eval = 0;
    for (const auto& s : calib) n_calib += s.size();
    for (const auto& s : held_out) n_eval += s.size();

    // 1. Gram matrices of the K/V inputs, on the uncompressed model.
    const int E = c.n_embd;
    std::vector<MatrixXd> gram(static_cast<size_t>(c.n_layer), MatrixXd::Zero(E, E));
    // With attended_values, the value factorization's Gram (add_attended_gram).
    const bool attended = opt.attended_values || opt.select_weighting;
    std::vector<MatrixXd> gram_v(attended ? static_cast<size_t>(c.n_layer) : 0, MatrixXd::Zero(E, E));
    {
        Context ctx(borrow(model), ContextOptions{seq_len, opt.n_threads});
        // The sequence's inputs per layer, gathered over the micro-batches.
        std::vector<std::vector<float>> seq_x(static_cast<size_t>(c.n_layer));
        ctx.set_kv_input_observer([&](int l, const float* xn, int n) {
            const Eigen::Map<const RowMatrixXf> X(xn, n, E);
            gram[static_cast<size_t>(l)].selfadjointView<Eigen::Lower>().rankUpdate(X.cast<double>().transpose());
            if (attended && compressed[static_cast<size_t>(l)])
                seq_x[static_cast<size_t>(l)].insert(seq_x[static_cast<size_t>(l)].end(), xn, xn + static_cast<size_t>(n) * E);
        });
        for (const auto& s : calib) {
            ctx.reset();
            ctx.eval(s.data(), s.size(), false);
            if (!attended) continue;
            for (int l = 0; l < c.n_layer; ++l) {
                std::vector<float>& x = seq_x[static_cast<size_t>(l)];
                if (x.empty()) continue;
                add_attended_gram(model, model.weights().layers[static_cast<size_t>(l)], x.data(), static_cast<int>(x.size() / E),
                                  gram_v[static_cast<size_t>(l)]);
                x.clear();
            }
        }
    }
    for (MatrixXd& g : gram_v) g /= static_cast<double>(n_calib) * c.n_head;
    for (MatrixXd& g : gram) g = g.selfadjointView<Eigen::Lower>().toDenseMatrix() / static_cast<double>(n_calib);

    const bool split = opt.key_rate >= 0.0f || opt.value_rate >= 0.0f;
    if (split && !(opt.key_rate >= 0.0f && opt.key_rate < 1.0f && opt.value_rate >= 0.0f && opt.value_rate < 1.0f))
        fail(STARKV_ERR_INVALID_ARGUMENT, "separate key and value rates must both be in [0, 1)");
    RankMap uni = uniform_ranks(c, compressed, split ? opt.key_rate : opt.rate);
    if (split) uni.v = uniform_ranks(c, compressed, opt.value_rate).v;

    // Probe texts: the first calibration tokens (adaptive), the selection
    // text (weighting), and the uncompressed model's log-probabilities there.
    size_t pnext = 0;
    const auto probe = take(calib, &pnext, opt.probe_tokens);
    const auto& select_probe = select_text.empty() ? probe : select_text;
    // The probes change compressed layers only: the references keep the
    // residual stream from the first of them on, and each probe runs from
    // the first layer it changes (probe::Reference).
    const int first_compressed = static_cast<int>(std::find(compressed.begin(), compressed.end(), true) - compressed.begin());
    std::optional<probe::Reference> base, select_base;
    if (opt.strategy == Strategy::Adaptive) base.emplace(model, probe, seq_len, opt.n_threads, first_compressed);
    if (judge) select_base.emplace(model, select_probe, seq_len, opt.n_threads, first_compressed);
    // Mean KL on a reference's text with every compressed layer at ranks r of `fs`.
    auto total_kl = [&](const std::vector<LayerFactors>& fs, const RankMap& r, const probe::Reference& ref) {
        for (int l = 0; l < c.n_layer; ++l)
            if (compressed[static_cast<size_t>(l)])
                install(model.mutable_weights().layers[static_cast<size_t>(l)].lat, fs[static_cast<size_t>(l)],
                        r.k[static_cast<size_t>(l)], r.v[static_cast<size_t>(l)]);
        const double kl = ref.kl(model, first_compressed);
        for (LayerWeights& L : model.mutable_weights().layers) L.lat = LatentFactors{};
        return kl;
    };

    // 2. Weighted factorizations of the compressed layers. Which weighting
    // works best differs between models (docs/quality.md): with
    // select_weighting each candidate's factors are tried at the uniform
    // ranks and the one of least probe KL is kept.
    struct Weighting {
        const char* name;
        bool output_aware, attended_values;
    };
    std::vector<Weighting> cands{{"configured", opt.output_aware, opt.attended_values}};
    if (opt.select_weighting) cands = {{"activation", false, false}, {"output", true, false}, {"output+attended", true, true}};
    auto factor_all = [&](const Weighting& w) {
        std::vector<LayerFactors> fs(static_cast<size_t>(c.n_layer));
        for (int l = 0; l < c.n_layer; ++l) {
            if (!compressed[static_cast<size_t>(l)]) continue;
            const LayerWeights& L = model.weights().layers[static_cast<size_t>(l)];
            const MatrixXd& G = gram[static_cast<size_t>(l)];
            fs[static_cast<size_t>(l)] = factor_layer(c, L, G, w.attended_values ? gram_v[static_cast<size_t>(l)] : G, opt.ridge,
                                                      output_weights(c, L, G, opt.query_aware, w.output_aware));
        }
        return fs;
    };
    std::vector<LayerFactors> factors;
    Weighting chosen = cands[0];
    json weighting_kl = json::object();
    double best_wkl = 0;
    for (const Weighting& w : cands) {
        std::vector<LayerFactors> fs = factor_all(w);
        if (cands.size() == 1) {
            factors = std::move(fs);
            break;
        }
        const double kl = total_kl(fs, uni, *select_base);
        weighting_kl[w.name] = kl;
        if (factors.empty() || kl < best_wkl) factors = std::move(fs), chosen = w, best_wkl = kl;
    }
    Spectra sp;
    sp.k.resize(static_cast<size_t>(c.n_layer));
    sp.v.resize(static_cast<size_t>(c.n_layer));
    for (int l = 0; l < c.n_layer; ++l) {
        if (!compressed[static_cast<size_t>(l)]) continue;
        for (const Factor& f : factors[static_cast<size_t>(l)].k) sp.k[static_cast<size_t>(l)].push_back(f.s);
        sp.v[static_cast<size_t>(l)] = factors[static_cast<size_t>(l)].v.s;
    }

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
    double probe_kl_total = 0, uniform_kl = 0;
    int best_round = 0;  // 0 = an allocation before the adaptive rounds won
    double best_split = 0;  // the key/value split of the uniform allocation kept (adaptive)
    json split_kl = json::object();
    double energy_kl = 0;
    std::vector<double> round_kl;  // probe KL of each adaptive round's allocation
    std::string rounds_stop = "rounds";  // why the adaptive rounds ended
    std::string kept = "uniform";  // which candidate allocation adaptive kept
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
                    kl_k[li] = std::max(base->kl(model, l), 0.0);
                    nk[li] = kl_k[li] / ek;
                }
                if (ev > 0) {
                    install(lat, factors[li], full_k, at.v[li]);
                    kl_v[li] = std::max(base->kl(model, l), 0.0);
                    nv[li] = kl_v[li] / ev;
                }
                lat = LatentFactors{};
            }
            w_k = nk;
            w_v = nv;
        };
        // The uniform allocation is a candidate too: adaptive is never worse
        // than uniform on the KL it is judged by. Candidates are judged on the
        // selection text (after the calibration tokens), not on the probe text
        // the sensitivities come from: on SmolLM2 at 0.5 the probe text ranked
        // uniform above energy, held-out perplexity the other way round.
        ranks = uni;
        double best_kl = total_kl(factors, uni, *select_base);
        uniform_kl = best_kl;
        // So are uniform ranks with the budget split unevenly between keys
        // and values (keys remove rate + d, values rate - d): the per-layer
        // allocation below prices a layer's keys against its values by probes
        // of one layer at a time, which misses how the two sides' losses
        // compound over all layers (on SmolLM2 at 0.5, d = 0.1 costs +40%
        // perplexity where d = 0 costs +45%; docs/quality.md).
        if (!split)
            for (double d : {-0.2, -0.1, 0.1, 0.2}) {
                const float rk = static_cast<float>(opt.rate + d), rv = static_cast<float>(opt.rate - d);
                if (rk < 0.0f || rv < 0.0f || rk >= 1.0f || rv >= 1.0f) continue;
                RankMap cand = uniform_ranks(c, compressed, rk);
                cand.v = uniform_ranks(c, compressed, rv).v;
                if (total(cand) > target) continue;
                const double kl = total_kl(factors, cand, *select_base);
                char name[16];
                std::snprintf(name, sizeof name, "%+.1f", d);
                split_kl[name] = kl;
                if (kl < best_kl) ranks = cand, best_kl = kl, best_split = d, kept = "uniform_split";
            }
        // And the energy allocation (better than uniform on SmolLM2 at 0.5, 0.6 and 0.75).
        {
            const RankMap en = allocate([&](const Spectra& s, uint64_t t) { return energy_ranks(c, s, t); });
            energy_kl = total_kl(factors, en, *select_base);
            if (energy_kl < best_kl) ranks = en, best_kl = energy_kl, kept = "energy";
        }
        // Rounds stop early: at an allocation probed before (the rounds are
        // deterministic in it, so they would cycle: seen at 16384 calibration
        // tokens on stories260K) or after adaptive_patience rounds that do not
        // beat the best round so far (on SmolLM2 they drift away from it).
        RankMap at = uni;
        std::vector<RankMap> seen{uni};
        double best_adaptive = 0;
        int since_best = 0;
        for (int round = 0; round < std::max(1, opt.adaptive_rounds); ++round) {
            probe_kl(at);
            if (round == 0) best_w_k = w_k, best_w_v = w_v;
            at = allocate([&](const Spectra& s, uint64_t t) { return adaptive_ranks(c, s, w_k, w_v, t, opt.sharpness); });
            if (std::any_of(seen.begin(), seen.end(), [&](const RankMap& r) { return r.k == at.k && r.v == at.v; })) {
                rounds_stop = "cycle";
                break;
            }
            seen.push_back(at);
            const double kl = total_kl(factors, at, *select_base);
            round_kl.push_back(kl);
            if (kl < best_kl) ranks = at, best_kl = kl, best_w_k = w_k, best_w_v = w_v, best_round = round + 1, kept = "adaptive";
            if (round == 0 || kl < best_adaptive) {
                best_adaptive = kl;
                since_best = 0;
            } else if (opt.adaptive_patience > 0 && ++since_best >= opt.adaptive_patience) {
                rounds_stop = "no_gain";
                break;
            }
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
               {"output_aware", chosen.output_aware},
               {"query_aware", opt.query_aware},
               {"attended_values", chosen.attended_values},
               {"weighting_probe_kl", weighting_kl},
               {"seq_len", seq_len},
               {"ridge", opt.ridge},
               {"sharpness", opt.sharpness},
               {"probe_tokens", opt.strategy == Strategy::Adaptive ? opt.probe_tokens : 0},
               {"weighting_tokens", opt.select_weighting ? count_tokens(select_probe) : 0}}},
             {"held_out", {{"tokens", n_eval}, {"perplexity_uncompressed", ppl_base}, {"perplexity", ppl}}}};
    if (!kv_quant.is_null()) out["kv_quant"] = kv_quant;
    if (opt.strategy == Strategy::Adaptive)
        out["sensitivity"] = {{"w_k", w_k}, {"w_v", w_v}, {"rounds", opt.adaptive_rounds},
                              {"probe_kl", probe_kl_total}, {"probe_kl_uniform", uniform_kl}, {"best_round", best_round},
                              {"probe_kl_rounds", round_kl}, {"rounds_stop", rounds_stop},
                              {"judged_tokens", count_tokens(select_probe)}, {"judged_held_out", !select_text.empty()},
                              {"probe_kl_uniform_split", split_kl}, {"probe_kl_energy", energy_kl}, {"kept", kept},
                              {"uniform_split", kept == "uniform" || kept == "uniform_split" ? json(best_split) : json(nullptr)}};
    log(STARKV_LOG_INFO, "STAR-KV calibration: " + out.dump());
    return out;
}

void install_full_rank(Model& model, const std::vector<int>& layers) {
    const ModelConfig& c = model.config();
    const MatrixXd I = MatrixXd::Identity(c.n_embd, c.n_embd);
    for (int l : layers) {
        LayerWeights& L = model.mutable_weights().layers[static_cast<size_t>(l)];
        const LayerFactors f = factor_layer(c, L, I, I, 0.0, output_weights(c, L, I, false, false));
        std::vector<int> rk;
        for (const Factor& k : f.k) rk.push_back(static_cast<int>(k.s.size()));
        install(L.lat, f, rk, static_cast<int>(f.v.s.size()));
    }
}

}  // namespace starkv::lowrank
