#include "calibration/quant_plan.h"

#include <Eigen/Dense>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <string>

#include "bundle/kv_quant_plan.h"
#include "calibration/hadamard.h"
#include "calibration/probe.h"
#include "core/error.h"
#include "core/log.h"
#include "model/context.h"

namespace starkv::quant {

using json = nlohmann::json;
using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

int block_for(int r, int max_width, int requested) {
    int cap = 8;
    while (cap < r && cap < 128) cap <<= 1;
    int b = requested > 0 ? std::min(requested, cap) : cap;
    while (b >= 8 && ((r + b - 1) / b) * b > max_width) b >>= 1;
    return b >= 8 ? b : 0;
}

namespace {

constexpr int kBits[] = {8, 4, 3, 2};  // fp16-scale widths (the uniform ablation checks against these)

// The group formats measured: fp16 scales with and without zero point (the
// first format), and log8 scales (static range x per-token code) per group
// or per row, each at its bit widths.
struct Format {
    QuantScale scale;
    bool zero_point;  // fp16 only
    bool row_scale;   // log8 only
    int bits;
};

std::vector<Format> formats() {
    std::vector<Format> f{{QuantScale::Fp16, false, false, 8}};  // 8 bits: always symmetric
    for (bool zp : {true, false})
        for (int b : {4, 3, 2}) f.push_back({QuantScale::Fp16, zp, false, b});
    for (bool row : {false, true})
        for (int b : {8, 6, 5, 4, 3, 2}) f.push_back({QuantScale::Log8, false, row, b});
    return f;
}

bool same_family(const Format& a, const Format& b) {
    return a.scale == b.scale && a.row_scale == b.row_scale && (a.scale == QuantScale::Log8 || a.zero_point == b.zero_point || a.bits == 8 || b.bits == 8);
}

int bits_index(int b) {
    for (int i = 0; i < 4; ++i)
        if (kBits[i] == b) return i;
    return -1;
}

// One latent of the model: its factors, plan slot and the largest width it may take.
struct Latent {
    Matrix* a;
    Matrix* u;
    LatentQuant* q;
    int max_width;
    int layer;
    std::vector<Candidate> cands;
    double weight = 1;  // output cost per unit of relative error (1 = squared error alone)
};

// The static part of the log8 scales, from the (rotated) calibration latents:
// per channel the median (the centre), per group the median over tokens of
// the group's largest centred magnitude (the range at code 128).
void calibrate_log8(const RowMatrixF& Z, int block, std::vector<float>& base, std::vector<float>& offset) {
    const Eigen::Index T = Z.rows(), W = Z.cols();
    offset.assign(static_cast<size_t>(W), 0.0f);
    std::vector<float> col(static_cast<size_t>(T));
    for (Eigen::Index c = 0; c < W; ++c) {
        for (Eigen::Index t = 0; t < T; ++t) col[static_cast<size_t>(t)] = Z(t, c);
        std::nth_element(col.begin(), col.begin() + T / 2, col.end());
        offset[static_cast<size_t>(c)] = T > 0 ? col[static_cast<size_t>(T / 2)] : 0.0f;
    }
    const int G = static_cast<int>(W) / block;
    base.assign(static_cast<size_t>(G), 1.0f);
    for (int g = 0; g < G; ++g) {
        for (Eigen::Index t = 0; t < T; ++t) {
            float amax = 0;
            for (int i = 0; i < block; ++i)
                amax = std::max(amax, std::fabs(Z(t, g * block + i) - offset[static_cast<size_t>(g * block + i)]));
            col[static_cast<size_t>(t)] = amax;
        }
        if (T > 0) {
            std::nth_element(col.begin(), col.begin() + T / 2, col.end());
            base[static_cast<size_t>(g)] = col[static_cast<size_t>(T / 2)];
        }
        if (!(base[static_cast<size_t>(g)] > 1e-20f)) base[static_cast<size_t>(g)] = 1e-20f;
    }
}

// The errors of one block size: err[g][f] = sum_t ||U_g (z_g - z^_g)||^2 /
// sum_t ||U z||^2 for group g stored with format f (errors of different
// groups taken as uncorrelated; a row-scale format's rows are coded whole at
// that width, so each group sees the shared code it would get).
struct BlockErrors {
    int width = 0, block = 0;
    std::vector<float> base, offset;  // log8 static scales of this rotation
    std::vector<std::vector<double>> err;
};

BlockErrors group_errors(const RowMatrixF& X, const Matrix& a0, const Matrix& u0, int width, int block, bool rot,
                         const std::vector<Format>& fmts) {
    Matrix a = a0, u = u0;
    hadamard::fold(a, u, width, block, rot);
    const Eigen::Map<const RowMatrixF> A(a.data.data(), a.rows, a.cols), U(u.data.data(), u.rows, u.cols);
    const RowMatrixF Z = X * A.transpose();  // tokens x width
    const double energy = std::max(static_cast<double>((Z * U.transpose()).squaredNorm()), 1e-30);
    const Eigen::MatrixXf M = U.transpose() * U;  // width x width
    const int G = width / block;
    BlockErrors out;
    out.width = width;
    out.block = block;
    calibrate_log8(Z, block, out.base, out.offset);
    out.err.assign(static_cast<size_t>(G), std::vector<double>(fmts.size(), 0.0));
    RowMatrixF D(Z.rows(), width);
    std::vector<float> back(static_cast<size_t>(width));
    for (size_t f = 0; f < fmts.size(); ++f) {
        LatentQuant q{width, block, 0, fmts[f].bits, fmts[f].bits, fmts[f].zero_point};
        if (fmts[f].scale == QuantScale::Log8) {
            q.scale = QuantScale::Log8;
            q.row_scale = fmts[f].row_scale;
            q.base = out.base;
            q.offset = out.offset;
        }
        std::vector<uint8_t> row(q.row_bytes());
        for (Eigen::Index t = 0; t < Z.rows(); ++t) {
            const float* z = Z.row(t).data();
            quantize_latent(q, z, row.data());
            dequantize_latent(q, row.data(), back.data());
            for (int c = 0; c < width; ++c) D(t, c) = z[c] - back[static_cast<size_t>(c)];
        }
        for (int g = 0; g < G; ++g) {
            const auto Dg = D.middleCols(g * block, block);
            const auto Mg = M.block(g * block, g * block, block, block);
            out.err[static_cast<size_t>(g)][f] = static_cast<double>(((Dg * Mg).array() * Dg.array()).sum()) / energy;
        }
    }
    return out;
}

void add_candidates(Latent& L, const RowMatrixF& X, const Options& opt) {
    const int r = L.a->rows;
    std::vector<int> blocks;
    if (opt.block > 0) {
        if (const int b = block_for(r, L.max_width, opt.block)) blocks.push_back(b);
    } else {
        for (int b = block_for(r, L.max_width, 0); b >= 8; b >>= 1) blocks.push_back(b);
    }
    const std::vector<Format> fmts = formats();
    const int uniform = static_cast<int>(std::lround(opt.avg_bits));
    for (int b : blocks) {
        const int width = ((r + b - 1) / b) * b;
        const BlockErrors E = group_errors(X, *L.a, *L.u, width, b, opt.hadamard, fmts);
        const int G = width / b;
        // Leading split_groups groups in format hi, the rest in lo (same family).
        auto push = [&](int split_groups, size_t hi, size_t lo) {
            Candidate c;
            c.q = LatentQuant{width, b, split_groups * b, fmts[hi].bits, fmts[lo].bits,
                              fmts[lo].bits == 8 ? fmts[hi].zero_point : fmts[lo].zero_point};
            if (fmts[lo].scale == QuantScale::Log8) {
                c.q.zero_point = false;
                c.q.scale = QuantScale::Log8;
                c.q.row_scale = fmts[lo].row_scale;
                c.q.base = E.base;
                c.q.offset = E.offset;
            }
            for (int g = 0; g < G; ++g) c.error += E.err[static_cast<size_t>(g)][g < split_groups ? hi : lo];
            c.bits = 8.0 * static_cast<double>(c.q.row_bytes());  // scales and padding included
            L.cands.push_back(std::move(c));
        };
        for (size_t lo = 0; lo < fmts.size(); ++lo) {
            if (fmts[lo].row_scale && G == 1) continue;  // the same as one code per group
            const bool old = fmts[lo].scale == QuantScale::Fp16;
            if (!opt.mixed) {
                if (fmts[lo].bits == uniform && (!old || bits_index(uniform) >= 0)) push(0, lo, lo);
                continue;
            }
            push(0, lo, lo);
            if (fmts[lo].bits == 8) continue;
            for (size_t hi = 0; hi < fmts.size(); ++hi) {
                if (!same_family(fmts[hi], fmts[lo]) || fmts[hi].bits <= fmts[lo].bits || fmts[hi].bits < 4) continue;
                if (old && fmts[hi].zero_point != fmts[lo].zero_point && fmts[hi].bits != 8) continue;
                for (int s = 1; s < G; ++s) push(s, hi, lo);
            }
        }
    }
}

bool same_plan(const LatentQuant& a, const LatentQuant& b) {
    return a.width == b.width && a.block == b.block && a.split == b.split && a.hi_bits == b.hi_bits && a.lo_bits == b.lo_bits &&
           a.zero_point == b.zero_point && a.scale == b.scale && a.row_scale == b.row_scale;
}

std::shared_ptr<const Model> borrow(const Model& m) {
    return std::shared_ptr<const Model>(&m, [](const Model*) {});
}

}  // namespace

json plan_and_fold(Model& model, const std::vector<std::vector<int32_t>>& calib, const Options& opt, int seq_len,
                   int n_threads) {
    const ModelConfig& c = model.config();
    if (!(opt.avg_bits >= 2.0 && opt.avg_bits <= 8.0))
        fail(STARKV_ERR_INVALID_ARGUMENT, "KV bits must be in [2, 8]");
    if (opt.block != 0 && (opt.block < 8 || opt.block > 128 || (opt.block & (opt.block - 1)) != 0))
        fail(STARKV_ERR_INVALID_ARGUMENT, "Hadamard block must be 8, 16, 32, 64, 128 or auto");
    if (opt.plain_bits != 0 && opt.plain_bits != 8 && opt.plain_bits != 4)
        fail(STARKV_ERR_INVALID_ARGUMENT, "plain-layer KV bits must be 8 or 4");
    if (!opt.mixed && bits_index(static_cast<int>(std::lround(opt.avg_bits))) < 0)
        fail(STARKV_ERR_INVALID_ARGUMENT, "uniform KV bits must be 8, 4, 3 or 2");
    ModelWeights& w = model.mutable_weights();

    // 1. Inputs of the K/V projections of the compressed layers on the calibration text.
    const int E = c.n_embd;
    std::vector<std::vector<float>> xs(static_cast<size_t>(c.n_layer));
    size_t n_sampled = 0;  // calibration sequences the samples come from
    {
        Context ctx(borrow(model), ContextOptions{seq_len, n_threads});
        ctx.set_kv_input_observer([&](int l, const float* xn, int n) {
            if (w.layers[static_cast<size_t>(l)].lat.active())
                xs[static_cast<size_t>(l)].insert(xs[static_cast<size_t>(l)].end(), xn, xn + static_cast<size_t>(n) * E);
        });
        size_t got = 0;
        for (const auto& s : calib) {
            if (got >= static_cast<size_t>(opt.sample_tokens)) break;
            ctx.reset();
            ctx.eval(s.data(), s.size(), false);
            got += s.size();
            ++n_sampled;
        }
    }

    // 2. Candidates of every latent.
    std::vector<Latent> lats;
    for (int l = 0; l < c.n_layer; ++l) {
        LatentFactors& F = w.layers[static_cast<size_t>(l)].lat;
        if (!F.active()) continue;
        F.k_q.assign(F.k_a.size(), LatentQuant{});
        F.v_q = LatentQuant{};
        for (size_t h = 0; h < F.k_a.size(); ++h) lats.push_back({&F.k_a[h], &F.k_u[h], &F.k_q[h], c.head_dim, l, {}});
        lats.push_back({&F.v_a, &F.v_u, &F.v_q, c.n_head_kv * c.head_dim, l, {}});
    }
    double budget = 0;
    for (Latent& L : lats) {
        const std::vector<float>& x = xs[static_cast<size_t>(L.layer)];
        const Eigen::Map<const RowMatrixF> X(x.data(), static_cast<Eigen::Index>(x.size() / E), E);
        add_candidates(L, X, opt);
        if (!L.cands.empty()) budget += opt.avg_bits * L.a->rows;
    }

    // 3. Least total weighted error within the budget: each latent takes its
    // candidate minimising weight x error + lambda x bits; lambda is the
    // smallest that fits.
    auto choose = [&](double lambda) {
        double bits = 0;
        std::vector<const Candidate*> pick;
        for (Latent& L : lats) {
            const Candidate* best = nullptr;
            for (const Candidate& cd : L.cands)
                if (!best || L.weight * cd.error + lambda * cd.bits < L.weight * best->error + lambda * best->bits) best = &cd;
            if (best) bits += best->bits;
            pick.push_back(best);
        }
        return std::make_pair(bits, pick);
    };
    auto plan_within_budget = [&] {
        double lo = -40, hi = 5;  // log lambda
        for (int it = 0; it < 60; ++it) {
            const double mid = 0.5 * (lo + hi);
            (choose(std::exp(mid)).first <= budget ? hi : lo) = mid;
        }
        return choose(std::exp(hi)).second;
    };
    std::vector<const Candidate*> pick = plan_within_budget();

    // 3b. Sensitivities. Equal relative errors do not cost the output equally
    // (layers and keys vs values differ by orders of magnitude), so each
    // latent's weight is the KL of the output, against fp32 latents, when only
    // it is quantized as the squared-error plan says, per unit of its error;
    // then the plan is made again with those weights. Of the two plans the one
    // of lesser KL on the probe text (all latents quantized) is kept.
    json sensitivity;
    const bool any = std::any_of(pick.begin(), pick.end(), [](const Candidate* c) { return c != nullptr; });
    if (opt.probe_tokens > 0 && any) {
        // The probe text follows the sampled sequences where the calibration
        // text is long enough: a plan fitted to the samples is then judged on
        // text it was not fitted to (probing the samples themselves kept plans
        // that lost on held-out text, docs/quality.md).
        size_t after = 0;
        for (size_t i = n_sampled; i < calib.size(); ++i) after += calib[i].size();
        const bool held_out = after >= static_cast<size_t>(opt.probe_tokens);
        size_t next = held_out ? n_sampled : 0, got = 0;
        const auto probe_text = probe::take(calib, &next, opt.probe_tokens);
        for (const auto& s : probe_text) got += s.size();
        // Output of the model with the given latents quantized (null: fp32),
        // run from the first layer it changes (probe::Reference).
        auto kl_with = [&](const std::vector<const Candidate*>& use, const probe::Reference& base) {
            std::vector<std::pair<Matrix, Matrix>> saved;
            int first = c.n_layer;
            for (size_t i = 0; i < lats.size(); ++i) {
                if (!use[i]) continue;
                first = std::min(first, lats[i].layer);
                saved.emplace_back(*lats[i].a, *lats[i].u);
                hadamard::fold(*lats[i].a, *lats[i].u, use[i]->q.width, use[i]->q.block, opt.hadamard);
                *lats[i].q = use[i]->q;
            }
            const double kl = base.kl(model, first);
            size_t k = 0;
            for (size_t i = 0; i < lats.size(); ++i) {
                if (!use[i]) continue;
                *lats[i].a = std::move(saved[k].first);
                *lats[i].u = std::move(saved[k++].second);
                *lats[i].q = LatentQuant{};
            }
            return std::max(kl, 0.0);
        };
        int first_latent = c.n_layer;
        for (const Latent& L : lats) first_latent = std::min(first_latent, L.layer);
        const probe::Reference base(model, probe_text, seq_len, n_threads, first_latent);
        // Round r probes every latent at the plan of round r - 1 (round 0: the squared-error plan).
        std::vector<const Candidate*> at = pick;
        const double kl_plain = kl_with(pick, base);
        double best_kl = kl_plain;
        int best_round = -1;
        std::vector<double> kl_one(lats.size(), 0.0), round_kl;
        for (int round = 0; round < std::max(opt.probe_rounds, 1); ++round) {
            for (size_t i = 0; i < lats.size(); ++i) {
                if (!at[i]) continue;
                std::vector<const Candidate*> one(lats.size(), nullptr);
                one[i] = at[i];
                kl_one[i] = kl_with(one, base);
            }
            std::vector<double> weights;
            for (size_t i = 0; i < lats.size(); ++i)
                if (at[i]) weights.push_back(kl_one[i] / std::max(at[i]->error, 1e-30));
            std::vector<double> sorted = weights;
            std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(sorted.size() / 2), sorted.end());
            // A floor at 1% of the median: a latent whose probe KL rounds to zero
            // must not be left with every bit taken away.
            const double floor = std::max(sorted[sorted.size() / 2] * 0.01, 1e-30);
            size_t k = 0;
            for (size_t i = 0; i < lats.size(); ++i)
                if (at[i]) lats[i].weight = std::max(weights[k++], floor);
            at = plan_within_budget();
            round_kl.push_back(kl_with(at, base));
            if (round_kl.back() <= best_kl) best_kl = round_kl.back(), best_round = round, pick = at;
        }
        sensitivity = {{"probe_tokens", static_cast<int64_t>(got)},
                       {"probe_held_out", held_out},
                       {"probe_kl_squared_error_plan", kl_plain},
                       {"probe_kl_weighted_plan", round_kl},
                       {"kept", best_round < 0 ? "squared_error" : "weighted"},
                       {"kept_round", best_round},
                       {"probe_kl_per_latent", kl_one}};
    }
    for (size_t i = 0; i < lats.size(); ++i)
        if (pick[i]) *lats[i].q = pick[i]->q;

    // 4. Fold the rotations into the factors.
    double err_total = 0, code_bits = 0, channels = 0, all_bits = 0;
    std::map<std::string, int> n_format;  // latents per scale format
    std::vector<LatentQuantLayer> plan(static_cast<size_t>(c.n_layer));
    for (Latent& L : lats) {
        if (!L.q->active()) continue;
        for (const Candidate& cd : L.cands)
            if (same_plan(cd.q, *L.q)) {
                err_total += cd.error, all_bits += cd.bits;
                break;
            }
        ++n_format[L.q->log8() ? (L.q->row_scale ? "log8_row" : "log8_group") : "fp16"];
        code_bits += L.q->code_bits() * L.q->width;
        channels += L.a->rows;
        hadamard::fold(*L.a, *L.u, L.q->width, L.q->block, opt.hadamard);
    }
    // Plain layers: per token and KV head, groups of up to 32 channels of the
    // RoPE'd keys and of the values, uniform bits (no factors to fold into).
    int plain_block = 32;
    while (plain_block > 8 && c.head_dim % plain_block != 0) plain_block >>= 1;
    const bool plain_ok = opt.plain_bits > 0 && c.head_dim % plain_block == 0 && c.head_dim >= 8;
    for (int l = 0; l < c.n_layer; ++l) {
        LayerWeights& L = w.layers[static_cast<size_t>(l)];
        if (L.lat.active()) plan[static_cast<size_t>(l)] = {L.lat.k_q, L.lat.v_q, {}};
        else if (plain_ok) plan[static_cast<size_t>(l)].plain = L.plain_q = {c.head_dim, plain_block, 0, opt.plain_bits, opt.plain_bits};
    }
    json out{{"avg_bits", opt.avg_bits},
             {"block", opt.block > 0 ? json(opt.block) : json("auto")},
             {"hadamard", opt.hadamard},
             {"mixed", opt.mixed},
             {"sample_tokens", opt.sample_tokens},
             {"plain_bits", plain_ok ? opt.plain_bits : 32},
             {"code_bits_per_channel", channels > 0 ? code_bits / channels : 0.0},
             {"bits_per_channel", channels > 0 ? all_bits / channels : 0.0},
             {"relative_error_sum", err_total},
             {"sensitivity", sensitivity},
             {"scale_formats", n_format},
             {"layers", bundle::kv_quant_layers_to_json(plan)}};
    log(STARKV_LOG_INFO, "KV quantization plan: " + out.dump());
    return out;
}

}  // namespace starkv::quant
