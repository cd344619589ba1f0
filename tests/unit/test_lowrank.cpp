// STAR-KV: the latent cache against the plain one and a float64 reference,
// the soft threshold's gradient, the budget accounting, and a packed bundle.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bundle/writer.h"
#include "calibration/lowrank.h"
#include "core/error.h"
#include "model/context.h"
#include "model/loader.h"
#include "model/model.h"
#include "test_paths.h"

namespace {

using starkv::LatentFactors;
using starkv::Matrix;
using starkv::Model;
namespace lr = starkv::lowrank;

std::vector<int32_t> prompt_tokens(const Model& m, int n) {
    const std::string text = starkv_test::read_file(starkv_test::shared_path("data/tinystories_val.txt"));
    std::vector<int32_t> t = m.tokenizer().tokenize(text.substr(0, 4000), true, false);
    t.resize(static_cast<size_t>(n));
    return t;
}

std::shared_ptr<const Model> borrow(const Model& m) { return std::shared_ptr<const Model>(&m, [](const Model*) {}); }

std::vector<float> all_logits(const Model& m, const std::vector<int32_t>& t) {
    starkv::Context ctx(borrow(m), starkv::ContextOptions{256, 2});
    ctx.eval(t.data(), t.size(), true);
    const size_t V = static_cast<size_t>(m.config().n_vocab);
    std::vector<float> out(t.size() * V);
    for (size_t i = 0; i < t.size(); ++i) std::copy(ctx.logits(static_cast<int>(i)), ctx.logits(static_cast<int>(i)) + V, &out[i * V]);
    return out;
}

double max_rel_err(const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        num = std::max(num, std::fabs(static_cast<double>(a[i]) - b[i]));
        den = std::max(den, std::fabs(static_cast<double>(b[i])));
    }
    return num / den;
}

std::unique_ptr<Model> load_stories() {
    return std::make_unique<Model>(starkv::load_model(starkv_test::stories_model(), nullptr));
}

// 100 tokens: two micro-batches, and single-token decode steps after them.
TEST(LowRank, FullRankLatentPathReproducesPlainLogits) {
    auto plain = load_stories();
    const std::vector<int32_t> t = prompt_tokens(*plain, 100);
    const std::vector<float> want = all_logits(*plain, t);

    auto lat = load_stories();
    std::vector<int> all;
    for (int l = 0; l < lat->config().n_layer; ++l) all.push_back(l);
    lr::install_full_rank(*lat, all);
    ASSERT_TRUE(lat->weights().layers[0].lat.active());
    const double err = max_rel_err(all_logits(*lat, t), want);
    EXPECT_LT(err, 2e-5) << "max rel err " << err;
    std::printf("full-rank latent path: max rel err %.3g\n", err);

    // Token-by-token decode through the latent cache.
    starkv::Context ctx(borrow(*lat), starkv::ContextOptions{256, 2});
    const size_t V = static_cast<size_t>(lat->config().n_vocab);
    double worst = 0;
    for (size_t i = 0; i < 40; ++i) {
        ctx.eval(&t[i], 1, false);
        std::vector<float> got(ctx.logits(-1), ctx.logits(-1) + V), ref(want.begin() + i * V, want.begin() + (i + 1) * V);
        worst = std::max(worst, max_rel_err(got, ref));
    }
    EXPECT_LT(worst, 2e-5);
}

// Calibration at rate 0 keeps every channel: whitened factors at full rank.
TEST(LowRank, WhitenedFullRankCalibrationReproducesPlainLogits) {
    auto plain = load_stories();
    const std::vector<int32_t> t = prompt_tokens(*plain, 80);
    const std::vector<float> want = all_logits(*plain, t);
    auto m = load_stories();
    lr::Options o;
    o.rate = 0.0f;
    o.strategy = lr::Strategy::Uniform;
    o.default_skip = false;
    o.calib_tokens = 1024;
    o.eval_tokens = 256;
    const std::string text = starkv_test::read_file(starkv_test::shared_path("data/tinyshakespeare_input.txt")).substr(0, 20000);
    const nlohmann::json md = lr::calibrate(*m, text, o);
    EXPECT_EQ(md["budget"]["kv_removed"].get<double>(), 0.0);
    const double err = max_rel_err(all_logits(*m, t), want);
    EXPECT_LT(err, 1e-4) << "max rel err " << err;
    std::printf("whitened full-rank factors: max rel err %.3g\n", err);
}

TEST(LowRank, SoftThresholdGradientMatchesFiniteDifferences) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<double> u(0.01, 3.0);
    for (int trial = 0; trial < 20; ++trial) {
        std::vector<double> s(12);
        for (double& x : s) x = u(rng);
        std::sort(s.rbegin(), s.rend());
        const double k = trial % 2 ? 50.0 : 8.0;
        for (double a : {0.05, 0.2, 0.37, 0.61, 0.9}) {
            // Skip points within a step of a kink (s_i / s_0 == a).
            bool near = false;
            for (double x : s) near |= std::fabs(x / s[0] - a) < 1e-4;
            if (near) continue;
            double g = 0;
            lr::soft_error(s, a, k, &g);
            const double h = 1e-6;
            const double fd = (lr::soft_error(s, a + h, k, nullptr) - lr::soft_error(s, a - h, k, nullptr)) / (2 * h);
            EXPECT_NEAR(g, fd, 1e-5 * std::max(1.0, std::fabs(fd))) << "trial " << trial << " a " << a;
        }
    }
    // Far above every s the error is the whole energy; at a = 0 with a sharp gate, near none.
    const std::vector<double> s{2.0, 1.0, 0.5};
    EXPECT_NEAR(lr::soft_error(s, 1.5, 50, nullptr), 4 + 1 + 0.25, 1e-12);
    EXPECT_LT(lr::soft_error(s, 0.0, 50, nullptr), 1e-6);
}

// Ranks and parameters from count_budget against the factors' own sizes and
// the cache's bytes per token; every strategy meets the uniform budget.
TEST(LowRank, BudgetAccountingMatchesDirectCount) {
    const std::string text = starkv_test::read_file(starkv_test::shared_path("data/tinyshakespeare_input.txt")).substr(0, 60000);
    for (lr::Strategy st : {lr::Strategy::Uniform, lr::Strategy::Energy, lr::Strategy::Adaptive}) {
        auto m = load_stories();
        const starkv::ModelConfig& c = m->config();
        lr::Options o;
        o.rate = 0.6f;
        o.strategy = st;
        o.calib_tokens = 2048;
        o.eval_tokens = 512;
        o.probe_tokens = 256;
        const nlohmann::json md = lr::calibrate(*m, text, o);
        lr::RankMap r;
        uint64_t params = 0, latent = 0, full = 0, plain_floats = 0;
        r.k.resize(static_cast<size_t>(c.n_layer));
        r.v.resize(static_cast<size_t>(c.n_layer));
        for (int l = 0; l < c.n_layer; ++l) {
            const LatentFactors& F = m->weights().layers[static_cast<size_t>(l)].lat;
            if (!F.active()) {
                plain_floats += 2ull * c.n_head_kv * c.head_dim;
                continue;
            }
            for (size_t h = 0; h < F.k_a.size(); ++h) {
                r.k[static_cast<size_t>(l)].push_back(F.k_a[h].rows);
                params += F.k_a[h].data.size() + F.k_u[h].data.size();
                latent += static_cast<uint64_t>(F.k_a[h].rows);
            }
            r.v[static_cast<size_t>(l)] = F.v_a.rows;
            params += F.v_a.data.size() + F.v_u.data.size();
            latent += static_cast<uint64_t>(F.v_a.rows);
            full += 2ull * c.n_head_kv * c.head_dim;
        }
        const lr::Budget b = lr::count_budget(c, r);
        EXPECT_EQ(b.params_kept, params);
        EXPECT_EQ(b.params_full, full * static_cast<uint64_t>(c.n_embd));
        EXPECT_EQ(b.latent, latent);
        EXPECT_EQ(md["budget"]["latent_per_token"].get<uint64_t>(), latent);
        // Default skip layers: 0, 1 and the last.
        EXPECT_EQ(md["skip_layers"], nlohmann::json({0, 1, c.n_layer - 1}));
        EXPECT_LE(static_cast<double>(latent), 0.4 * static_cast<double>(full) + 1e-9) << lr::strategy_name(st);
        // The weighting kept is the candidate of least KL on the selection
        // text, and adaptive (which has the uniform allocation among its
        // candidates) is never worse than uniform on its probe.
        const nlohmann::json& cal = md["calibration"];
        const nlohmann::json& wkl = cal["weighting_probe_kl"];
        ASSERT_EQ(wkl.size(), 3u);
        std::string least;
        for (const auto& [name, kl] : wkl.items())
            if (least.empty() || kl.get<double>() < wkl[least].get<double>()) least = name;
        EXPECT_EQ(cal["output_aware"].get<bool>(), least != "activation") << least;
        EXPECT_EQ(cal["attended_values"].get<bool>(), least == "output+attended") << least;
        EXPECT_GT(cal["weighting_tokens"].get<int>(), 0);
        if (st == lr::Strategy::Adaptive) {
            const nlohmann::json& sens = md["sensitivity"];
            const double kept = sens["probe_kl"].get<double>();
            EXPECT_LE(kept, sens["probe_kl_uniform"].get<double>());
            // Uniform ranks with the budget split unevenly are candidates too,
            // within the budget; a split kept means exactly its uniform ranks.
            EXPECT_GE(sens["probe_kl_uniform_split"].size(), 1u);
            for (const auto& [d, kl] : sens["probe_kl_uniform_split"].items()) EXPECT_LE(kept, kl.get<double>()) << d;
            EXPECT_LE(kept, sens["probe_kl_energy"].get<double>());
            const std::string which = sens["kept"].get<std::string>();
            EXPECT_EQ(sens["best_round"].get<int>() > 0, which == "adaptive") << which;
            // The rounds run until their number, a repeated allocation, or
            // adaptive_patience rounds not better than the best round.
            const std::vector<double> rounds = sens["probe_kl_rounds"].get<std::vector<double>>();
            const std::string stop = sens["rounds_stop"].get<std::string>();
            ASSERT_LE(rounds.size(), static_cast<size_t>(o.adaptive_rounds));
            EXPECT_LE(sens["best_round"].get<int>(), static_cast<int>(rounds.size()));
            if (stop == "rounds") EXPECT_EQ(rounds.size(), static_cast<size_t>(o.adaptive_rounds));
            if (stop == "no_gain") {
                const size_t p = static_cast<size_t>(o.adaptive_patience);
                ASSERT_GT(rounds.size(), p);
                const double best_before = *std::min_element(rounds.begin(), rounds.end() - static_cast<std::ptrdiff_t>(p));
                for (size_t i = rounds.size() - p; i < rounds.size(); ++i) EXPECT_GE(rounds[i], best_before) << i;
            }
            if (which == "adaptive") EXPECT_EQ(kept, *std::min_element(rounds.begin(), rounds.end()));
            if (which == "uniform" || which == "uniform_split") {
                const double d = sens["uniform_split"].get<double>();
                const double keep_k = 1.0 - static_cast<float>(o.rate + d), keep_v = 1.0 - static_cast<float>(o.rate - d);
                const int rk = static_cast<int>(std::floor(c.head_dim * keep_k + 1e-9));
                const int rv = static_cast<int>(std::floor(c.n_head_kv * c.head_dim * keep_v + 1e-9));
                for (int l = 0; l < c.n_layer; ++l) {
                    if (r.k[static_cast<size_t>(l)].empty()) continue;
                    for (int x : r.k[static_cast<size_t>(l)]) EXPECT_EQ(x, std::max(rk, 1)) << "layer " << l << " split " << d;
                    EXPECT_EQ(r.v[static_cast<size_t>(l)], std::max(rv, 1)) << "layer " << l << " split " << d;
                }
            }
        }
        starkv::KvCache kv(c, m->weights(), 16);
        EXPECT_EQ(kv.bytes_per_token(), (latent + plain_floats) * sizeof(float));
        EXPECT_EQ(kv.bytes_per_token_uncompressed(), 2ull * c.n_layer * c.n_head_kv * c.head_dim * sizeof(float));
    }
}

// A float64 Llama whose STAR-KV layers reconstruct k_h = U_h (A_h x) and
// v = U_v (A_v x) densely, in double, from the same float factors.
std::vector<std::vector<double>> reference_logits(const Model& m, const std::vector<int32_t>& tokens) {
    const starkv::ModelConfig& c = m.config();
    const starkv::ModelWeights& w = m.weights();
    const int E = c.n_embd, hd = c.head_dim, nh = c.n_head, nkv = c.n_head_kv, kvd = nkv * hd, group = nh / nkv;
    auto matvec = [](const Matrix& a, const std::vector<double>& x) {
        std::vector<double> y(static_cast<size_t>(a.rows), 0.0);
        for (int r = 0; r < a.rows; ++r)
            for (int i = 0; i < a.cols; ++i) y[static_cast<size_t>(r)] += a.row(r)[i] * x[static_cast<size_t>(i)];
        return y;
    };
    auto norm = [&](const std::vector<double>& x, const std::vector<float>& g) {
        double ss = 0;
        for (double v : x) ss += v * v;
        const double s = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + c.rms_eps);
        std::vector<double> o(x.size());
        for (size_t i = 0; i < x.size(); ++i) o[i] = x[i] * s * g[i];
        return o;
    };
    std::vector<std::vector<double>> K(static_cast<size_t>(c.n_layer)), Vc(static_cast<size_t>(c.n_layer)), out;
    for (size_t pos = 0; pos < tokens.size(); ++pos) {
        std::vector<double> x(w.tok_embd.row(tokens[pos]), w.tok_embd.row(tokens[pos]) + E);
        for (int l = 0; l < c.n_layer; ++l) {
            const starkv::LayerWeights& L = w.layers[static_cast<size_t>(l)];
            std::vector<double> xn = norm(x, L.attn_norm);
            std::vector<double> q = matvec(L.wq, xn), k, v;
            if (L.lat.active()) {
                for (int h = 0; h < nkv; ++h) {
                    const std::vector<double> kh = matvec(L.lat.k_u[static_cast<size_t>(h)], matvec(L.lat.k_a[static_cast<size_t>(h)], xn));
                    k.insert(k.end(), kh.begin(), kh.end());
                }
                v = matvec(L.lat.v_u, matvec(L.lat.v_a, xn));
            } else {
                k = matvec(L.wk, xn);
                v = matvec(L.wv, xn);
            }
            for (int i = 0; i < hd / 2; ++i) {
                const double a = static_cast<double>(pos) * std::pow(static_cast<double>(c.rope.theta), -2.0 * i / hd);
                auto rot = [&](std::vector<double>& t, int heads) {
                    for (int h = 0; h < heads; ++h) {
                        double &x0 = t[static_cast<size_t>(h * hd + 2 * i)], &x1 = t[static_cast<size_t>(h * hd + 2 * i + 1)];
                        const double a0 = x0, a1 = x1;
                        x0 = a0 * std::cos(a) - a1 * std::sin(a);
                        x1 = a0 * std::sin(a) + a1 * std::cos(a);
                    }
                };
                rot(q, nh);
                rot(k, nkv);
            }
            auto& KK = K[static_cast<size_t>(l)];
            auto& VV = Vc[static_cast<size_t>(l)];
            KK.insert(KK.end(), k.begin(), k.end());
            VV.insert(VV.end(), v.begin(), v.end());
            std::vector<double> att(static_cast<size_t>(nh * hd), 0.0), s(pos + 1);
            for (int h = 0; h < nh; ++h) {
                const int kh = h / group;
                double mx = -1e300, sum = 0;
                for (size_t t = 0; t <= pos; ++t) {
                    double d = 0;
                    for (int i = 0; i < hd; ++i) d += q[static_cast<size_t>(h * hd + i)] * KK[t * kvd + static_cast<size_t>(kh * hd + i)];
                    s[t] = d / std::sqrt(static_cast<double>(hd));
                    mx = std::max(mx, s[t]);
                }
                for (double& e : s) sum += e = std::exp(e - mx);
                for (size_t t = 0; t <= pos; ++t)
                    for (int i = 0; i < hd; ++i)
                        att[static_cast<size_t>(h * hd + i)] += s[t] / sum * VV[t * kvd + static_cast<size_t>(kh * hd + i)];
            }
            std::vector<double> o = matvec(L.wo, att);
            for (int i = 0; i < E; ++i) x[static_cast<size_t>(i)] += o[static_cast<size_t>(i)];
            xn = norm(x, L.ffn_norm);
            std::vector<double> g = matvec(L.w_gate, xn), u = matvec(L.w_up, xn);
            for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
            o = matvec(L.w_down, g);
            for (int i = 0; i < E; ++i) x[static_cast<size_t>(i)] += o[static_cast<size_t>(i)];
        }
        out.push_back(matvec(w.lm_head(), norm(x, w.output_norm)));
    }
    return out;
}

TEST(LowRank, RaggedRanksMatchDenseFloat64Reference) {
    auto m = load_stories();
    const starkv::ModelConfig& c = m->config();
    lr::install_full_rank(*m, {1, 3});
    // Heads of one layer with different ranks (the truncation keeps the leading channels).
    const std::vector<std::vector<int>> ranks{{}, {1, 3, 5, 8}, {}, {8, 2, 6, 4}};
    const std::vector<int> rv{0, 5, 0, 19};
    for (int l : {1, 3}) {
        LatentFactors& F = m->mutable_weights().layers[static_cast<size_t>(l)].lat;
        ASSERT_EQ(F.k_a.size(), ranks[static_cast<size_t>(l)].size());
        for (size_t h = 0; h < F.k_a.size(); ++h) {
            const int r = ranks[static_cast<size_t>(l)][h];
            F.k_a[h].data.resize(static_cast<size_t>(r) * F.k_a[h].cols);
            F.k_a[h].rows = r;
            Matrix u(c.head_dim, r);
            for (int d = 0; d < c.head_dim; ++d) std::copy(F.k_u[h].row(d), F.k_u[h].row(d) + r, u.row(d));
            F.k_u[h] = u;
        }
        const int r = rv[static_cast<size_t>(l)];
        F.v_a.data.resize(static_cast<size_t>(r) * F.v_a.cols);
        F.v_a.rows = r;
        Matrix u(F.v_u.rows, r);
        for (int d = 0; d < F.v_u.rows; ++d) std::copy(F.v_u.row(d), F.v_u.row(d) + r, u.row(d));
        F.v_u = u;
    }
    const std::vector<int32_t> t = prompt_tokens(*m, 90);
    const std::vector<float> got = all_logits(*m, t);
    const auto ref = reference_logits(*m, t);
    const size_t V = static_cast<size_t>(c.n_vocab);
    double num = 0, den = 0;
    for (size_t i = 0; i < t.size(); ++i)
        for (size_t j = 0; j < V; ++j) {
            num = std::max(num, std::fabs(got[i * V + j] - ref[i][j]));
            den = std::max(den, std::fabs(ref[i][j]));
        }
    EXPECT_LT(num / den, 1e-4);
    std::printf("ragged ranks vs float64 reference: max rel err %.3g\n", num / den);
    // The truncation changes the model: the reference is not the plain one.
    auto plain = load_stories();
    EXPECT_GT(max_rel_err(got, all_logits(*plain, t)), 1e-3);
}

TEST(LowRank, BundleAtRate075LoadsGeneratesAndShrinksTheCache) {
    const std::string dir = starkv_test::temp_dir();
    const std::string out = dir + "/stories_kv075.skv", calib = dir + "/calib.txt";
    {
        std::ofstream f(calib);
        f << starkv_test::read_file(starkv_test::shared_path("data/tinyshakespeare_input.txt")).substr(0, 60000);
    }
    starkv::PackOptions po;
    lr::Options o;
    o.rate = 0.75f;
    o.calib_tokens = 2048;
    o.eval_tokens = 512;
    o.probe_tokens = 256;
    po.kv = o;
    po.calib_path = calib;
    starkv::pack_bundle(starkv_test::stories_model(), out, po);

    auto m = std::make_shared<const Model>(starkv::load_model(out, nullptr));
    const starkv::ModelConfig& c = m->config();
    int n_compressed = 0;
    for (const auto& L : m->weights().layers) {
        n_compressed += L.lat.active() ? 1 : 0;
        // Latent layers carry no K/V projections (the factors replace them); the others keep theirs.
        EXPECT_EQ(L.wk.empty(), L.lat.active());
        EXPECT_EQ(L.wv.empty(), L.lat.active());
    }
    EXPECT_EQ(n_compressed, c.n_layer - 3);
    // Parameters: the original's, less W_k and W_v of the latent layers, plus their factors.
    {
        const Model orig = starkv::load_model(starkv_test::stories_model(), nullptr);
        uint64_t want = orig.n_params();
        for (const auto& L : m->weights().layers) {
            if (!L.lat.active()) continue;
            want -= 2ull * c.n_head_kv * c.head_dim * c.n_embd;
            for (size_t h = 0; h < L.lat.k_a.size(); ++h) want += L.lat.k_a[h].data.size() + L.lat.k_u[h].data.size();
            want += L.lat.v_a.data.size() + L.lat.v_u.data.size();
        }
        EXPECT_EQ(m->n_params(), want);
    }
    // Neither a plain repack nor a new calibration can start from the latents alone.
    try {
        starkv::pack_bundle(out, dir + "/again.skv", starkv::PackOptions{});
        ADD_FAILURE() << "repacking a latent-only bundle succeeded";
    } catch (const starkv::Error& e) {
        EXPECT_EQ(e.status(), STARKV_ERR_UNSUPPORTED) << e.what();
    }
    starkv::Context ctx(m, starkv::ContextOptions{128, 2});
    const std::vector<int32_t> p = prompt_tokens(*m, 8);
    ctx.eval(p.data(), p.size(), false);
    for (int i = 0; i < 20; ++i) {
        const float* lg = ctx.logits(-1);
        ASSERT_NE(lg, nullptr);
        const int32_t next = static_cast<int32_t>(std::max_element(lg, lg + c.n_vocab) - lg);
        for (int j = 0; j < c.n_vocab; ++j) ASSERT_TRUE(std::isfinite(lg[j]));
        ctx.eval(&next, 1, false);
    }
    const uint64_t per_layer = 2ull * c.n_head_kv * c.head_dim * sizeof(float);
    const uint64_t skip_bytes = 3 * per_layer;
    EXPECT_LE(ctx.kv_bytes_per_token() - skip_bytes, static_cast<uint64_t>(0.25 * n_compressed * per_layer));
    EXPECT_EQ(ctx.kv_bytes_per_token_uncompressed(), c.n_layer * per_layer);
}

}  // namespace

namespace {

// Separate key and value targets: each side gets exactly the floats of its own uniform ranks.
TEST(LowRank, SeparateKeyAndValueTargets) {
    const std::string text = starkv_test::read_file(starkv_test::shared_path("data/tinyshakespeare_input.txt")).substr(0, 40000);
    for (lr::Strategy st : {lr::Strategy::Energy, lr::Strategy::Adaptive}) {
        auto m = load_stories();
        const starkv::ModelConfig& c = m->config();
        lr::Options o;
        o.strategy = st;
        o.key_rate = 0.7f;
        o.value_rate = 0.5f;
        o.calib_tokens = 1024;
        o.eval_tokens = 256;
        o.probe_tokens = 128;
        o.adaptive_rounds = 2;
        lr::calibrate(*m, text, o);
        std::vector<bool> compressed(static_cast<size_t>(c.n_layer));
        uint64_t keys = 0, values = 0;
        for (int l = 0; l < c.n_layer; ++l) {
            const LatentFactors& F = m->weights().layers[static_cast<size_t>(l)].lat;
            compressed[static_cast<size_t>(l)] = F.active();
            if (!F.active()) continue;
            for (const Matrix& a : F.k_a) keys += static_cast<uint64_t>(a.rows);
            values += static_cast<uint64_t>(F.v_a.rows);
        }
        const lr::RankMap uk = lr::uniform_ranks(c, compressed, 0.7f), uv = lr::uniform_ranks(c, compressed, 0.5f);
        uint64_t want_k = 0, want_v = 0;
        for (int l = 0; l < c.n_layer; ++l) {
            if (!compressed[static_cast<size_t>(l)]) continue;
            for (int r : uk.k[static_cast<size_t>(l)]) want_k += static_cast<uint64_t>(r);
            want_v += static_cast<uint64_t>(uv.v[static_cast<size_t>(l)]);
        }
        EXPECT_EQ(keys, want_k) << lr::strategy_name(st);
        EXPECT_EQ(values, want_v) << lr::strategy_name(st);
    }
}

}  // namespace

namespace {

Eigen::MatrixXd random_psd(std::mt19937& rng, int n, int samples) {
    std::normal_distribution<double> g(0.0, 1.0);
    Eigen::MatrixXd x(n, samples);
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < samples; ++j) x(i, j) = g(rng) * (1.0 + i);  // uneven scales
    return x * x.transpose() / samples;
}

// E ||M^(1/2) (W - B) x||^2 over inputs of Gram G, straight from its definition.
double weighted_error(const Eigen::MatrixXd& W, const Eigen::MatrixXd& B, const Eigen::MatrixXd& G,
                      const Eigen::MatrixXd& M) {
    const Eigen::MatrixXd D = W - B;
    return (D.transpose() * M * D * G).trace();
}

}  // namespace

// The two-sided weighted factorization: its truncation's weighted error is the
// discarded spectrum, it is exact at full rank, and no other rank-r candidate
// tried (plain SVD, one-sided whitening, perturbed factors) does better.
TEST(LowRank, WeightedFactorizationErrorIsTheDiscardedSpectrum) {
    std::mt19937 rng(11);
    std::normal_distribution<double> g(0.0, 1.0);
    for (auto [out, in] : {std::pair{6, 10}, std::pair{8, 5}}) {
        Eigen::MatrixXd W(out, in);
        for (int i = 0; i < out; ++i)
            for (int j = 0; j < in; ++j) W(i, j) = g(rng);
        const Eigen::MatrixXd G = random_psd(rng, in, 40), M = random_psd(rng, out, 30);
        const lr::WeightedFactor f = lr::weighted_factorize(W, G, M, 0.0);
        const int m = std::min(out, in);
        ASSERT_EQ(static_cast<int>(f.s.size()), m);
        EXPECT_LT((f.U * f.A - W).norm(), 1e-9 * W.norm());
        const lr::WeightedFactor plain = lr::weighted_factorize(W, Eigen::MatrixXd::Identity(in, in),
                                                                Eigen::MatrixXd::Identity(out, out), 0.0);
        const lr::WeightedFactor one_sided = lr::weighted_factorize(W, G, Eigen::MatrixXd::Identity(out, out), 0.0);
        for (int r = 1; r < m; ++r) {
            double tail = 0;
            for (int i = r; i < m; ++i) tail += f.s[static_cast<size_t>(i)] * f.s[static_cast<size_t>(i)];
            const Eigen::MatrixXd B = f.U.leftCols(r) * f.A.topRows(r);
            const double e = weighted_error(W, B, G, M);
            EXPECT_NEAR(e, tail, 1e-9 * (1 + tail)) << out << "x" << in << " rank " << r;
            EXPECT_LE(e, weighted_error(W, plain.U.leftCols(r) * plain.A.topRows(r), G, M) * (1 + 1e-12));
            EXPECT_LE(e, weighted_error(W, one_sided.U.leftCols(r) * one_sided.A.topRows(r), G, M) * (1 + 1e-12));
            for (int trial = 0; trial < 5; ++trial) {
                Eigen::MatrixXd dU = Eigen::MatrixXd::Random(out, r) * 1e-3, dA = Eigen::MatrixXd::Random(r, in) * 1e-3;
                const Eigen::MatrixXd B2 = (f.U.leftCols(r) + dU) * (f.A.topRows(r) + dA);
                EXPECT_GE(weighted_error(W, B2, G, M), e * (1 - 1e-12));
            }
        }
    }
}

// The key weights: the pre-RoPE query Gram C averaged over rotations,
// mean_p R(p)^T C R(p), computed by rotating with the runtime's RopeTable over
// many positions, is diagonal with rope_pair_weights(diag C) on the diagonal.
TEST(LowRank, RopePairWeightsAreTheRotationAveragedQueryGram) {
    std::mt19937 rng(5);
    const int hd = 8;
    for (starkv::RopeLayout layout : {starkv::RopeLayout::Adjacent, starkv::RopeLayout::HalfSplit}) {
        for (int n_dims : {8, 6}) {
            starkv::RopeConfig rc;
            rc.theta = 3.0f;  // distinct, fast frequencies: the average converges in few positions
            rc.n_dims = n_dims;
            rc.layout = layout;
            const starkv::cpu::RopeTable rope(rc);
            const Eigen::MatrixXd C = random_psd(rng, hd, 50);
            Eigen::MatrixXd avg = Eigen::MatrixXd::Zero(hd, hd);
            const int P = 20000;
            for (int p = 0; p < P; ++p) {
                Eigen::MatrixXd R(hd, hd);  // column j: the rotated unit vector e_j
                for (int j = 0; j < hd; ++j) {
                    std::vector<float> e(hd, 0.0f);
                    e[static_cast<size_t>(j)] = 1.0f;
                    rope.apply(e.data(), 1, hd, p);
                    for (int i = 0; i < hd; ++i) R(i, j) = e[static_cast<size_t>(i)];
                }
                avg += R.transpose() * C * R;
            }
            avg /= P;
            std::vector<double> e(hd);
            for (int j = 0; j < hd; ++j) e[static_cast<size_t>(j)] = C(j, j);
            const std::vector<double> d = lr::rope_pair_weights(rc, hd, e);
            const double scale = C.diagonal().maxCoeff();
            for (int i = 0; i < hd; ++i)
                for (int j = 0; j < hd; ++j) {
                    // Unrotated dimensions keep their cross terms with each other.
                    const bool fixed = i >= n_dims && j >= n_dims;
                    const double want = i == j ? d[static_cast<size_t>(i)] : fixed ? C(i, j) : 0.0;
                    EXPECT_NEAR(avg(i, j), want, 2e-2 * scale) << "n_dims " << n_dims << " (" << i << "," << j << ")";
                }
        }
    }
}

// The attended Gram against a float64 evaluation of its definition: causal
// softmax attention of every query head (RoPE at positions 0..n-1) over the
// layer's own keys, xbar_g(t) = sum_j p_gj(t) x_j, summed outer products.
TEST(LowRank, AttendedGramMatchesFloat64Reference) {
    auto m = load_stories();
    const starkv::ModelConfig& c = m->config();
    const starkv::LayerWeights& L = m->weights().layers[2];
    const int n = 23, E = c.n_embd, hd = c.head_dim, group = c.n_head / c.n_head_kv;
    std::mt19937 rng(3);
    std::normal_distribution<float> g(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(n) * E);
    for (float& v : x) v = g(rng);
    Eigen::MatrixXd got = Eigen::MatrixXd::Zero(E, E);
    lr::add_attended_gram(*m, L, x.data(), n, got);

    // Rotation of one head's vector at position p, in double, from the runtime's frequencies.
    const std::vector<double>& inv_freq = m->rope().inv_freq();
    auto rotate = [&](std::vector<double> v, int p) {
        const int half = c.rope.n_dims / 2;
        for (int i = 0; i < half; ++i) {
            const int a = c.rope.layout == starkv::RopeLayout::Adjacent ? 2 * i : i;
            const int b = c.rope.layout == starkv::RopeLayout::Adjacent ? 2 * i + 1 : i + half;
            const double cs = std::cos(p * inv_freq[static_cast<size_t>(i)]), sn = std::sin(p * inv_freq[static_cast<size_t>(i)]);
            const double x0 = v[static_cast<size_t>(a)], x1 = v[static_cast<size_t>(b)];
            v[static_cast<size_t>(a)] = x0 * cs - x1 * sn;
            v[static_cast<size_t>(b)] = x0 * sn + x1 * cs;
        }
        return v;
    };
    auto head = [&](const Matrix& w, int h, int t) {
        std::vector<double> v(static_cast<size_t>(hd), 0.0);
        for (int d = 0; d < hd; ++d)
            for (int e = 0; e < E; ++e) v[static_cast<size_t>(d)] += double(w.row(h * hd + d)[e]) * x[static_cast<size_t>(t) * E + e];
        return rotate(v, t);
    };
    Eigen::MatrixXd want = Eigen::MatrixXd::Zero(E, E);
    for (int q = 0; q < c.n_head; ++q)
        for (int t = 0; t < n; ++t) {
            const std::vector<double> qv = head(L.wq, q, t);
            std::vector<double> s(static_cast<size_t>(t) + 1);
            double mx = -1e300, z = 0;
            for (int j = 0; j <= t; ++j) {
                const std::vector<double> kv = head(L.wk, q / group, j);
                double d = 0;
                for (int i = 0; i < hd; ++i) d += qv[static_cast<size_t>(i)] * kv[static_cast<size_t>(i)];
                s[static_cast<size_t>(j)] = d / std::sqrt(double(hd));
                mx = std::max(mx, s[static_cast<size_t>(j)]);
            }
            for (double& v : s) z += v = std::exp(v - mx);
            Eigen::VectorXd bar = Eigen::VectorXd::Zero(E);
            for (int j = 0; j <= t; ++j)
                for (int e = 0; e < E; ++e) bar(e) += s[static_cast<size_t>(j)] / z * x[static_cast<size_t>(j) * E + e];
            want += bar * bar.transpose();
        }
    const double err = (got - want).cwiseAbs().maxCoeff() / want.cwiseAbs().maxCoeff();
    EXPECT_LT(err, 1e-4);
    std::printf("attended Gram vs float64 reference: max rel err %.3g\n", err);
}
