#include "calibration/quant_plan.h"

#include <Eigen/Dense>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "bundle/kv_quant_plan.h"
#include "calibration/hadamard.h"
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

constexpr int kBits[] = {8, 4, 3, 2};
constexpr int kNumBits = 4;

int bits_index(int b) {
    for (int i = 0; i < kNumBits; ++i)
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
};

// Relative error of every group at every bit width for one block size:
// err[g][i] = sum_t ||U_g (z_g - z^_g)||^2 / sum_t ||U z||^2 (errors of
// different groups taken as uncorrelated).
std::vector<std::array<double, kNumBits>> group_errors(const RowMatrixF& X, const Matrix& a0, const Matrix& u0, int width,
                                                       int block, bool rot) {
    Matrix a = a0, u = u0;
    hadamard::fold(a, u, width, block, rot);
    const Eigen::Map<const RowMatrixF> A(a.data.data(), a.rows, a.cols), U(u.data.data(), u.rows, u.cols);
    const RowMatrixF Z = X * A.transpose();  // tokens x width
    const double energy = std::max(static_cast<double>((Z * U.transpose()).squaredNorm()), 1e-30);
    const Eigen::MatrixXf M = U.transpose() * U;  // width x width
    const int G = width / block;
    std::vector<std::array<double, kNumBits>> err(static_cast<size_t>(G));
    RowMatrixF D(Z.rows(), block);
    std::vector<uint8_t> row(quant_group_bytes(8, block) + 4);
    std::vector<float> back(static_cast<size_t>(block));
    for (int g = 0; g < G; ++g)
        for (int i = 0; i < kNumBits; ++i) {
            const LatentQuant q{block, block, 0, kBits[i], kBits[i]};
            for (Eigen::Index t = 0; t < Z.rows(); ++t) {
                const float* z = Z.row(t).data() + static_cast<size_t>(g) * block;
                quantize_latent(q, z, row.data());
                dequantize_latent(q, row.data(), back.data());
                for (int c = 0; c < block; ++c) D(t, c) = z[c] - back[static_cast<size_t>(c)];
            }
            const auto Mg = M.block(g * block, g * block, block, block);
            err[static_cast<size_t>(g)][static_cast<size_t>(i)] =
                static_cast<double>(((D * Mg).array() * D.array()).sum()) / energy;
        }
    return err;
}

void add_candidates(Latent& L, const RowMatrixF& X, const Options& opt) {
    const int r = L.a->rows;
    std::vector<int> blocks;
    if (opt.block > 0) {
        if (const int b = block_for(r, L.max_width, opt.block)) blocks.push_back(b);
    } else {
        for (int b = block_for(r, L.max_width, 0); b >= 8; b >>= 1) blocks.push_back(b);
    }
    const int uniform = static_cast<int>(std::lround(opt.avg_bits));
    for (int b : blocks) {
        const int width = ((r + b - 1) / b) * b;
        const auto err = group_errors(X, *L.a, *L.u, width, b, opt.hadamard);
        const int G = width / b;
        auto push = [&](int split_groups, int hi, int lo) {
            Candidate c;
            c.q = LatentQuant{width, b, split_groups * b, hi, lo};
            const int hi_i = bits_index(hi), lo_i = bits_index(lo);
            for (int g = 0; g < G; ++g) c.error += err[static_cast<size_t>(g)][static_cast<size_t>(g < split_groups ? hi_i : lo_i)];
            c.bits = static_cast<double>(split_groups) * b * hi + static_cast<double>(G - split_groups) * b * lo;
            L.cands.push_back(c);
        };
        if (!opt.mixed) {
            if (bits_index(uniform) >= 0) push(0, uniform, uniform);
            continue;
        }
        for (int bits : kBits) push(0, bits, bits);
        for (int hi : {8, 4})
            for (int lo : {4, 3, 2})
                if (lo < hi)
                    for (int s = 1; s < G; ++s) push(s, hi, lo);
    }
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

    // 3. Least total error within the budget: each latent takes its candidate
    // minimising error + lambda * bits; lambda is the smallest that fits.
    auto choose = [&](double lambda, bool apply) {
        double bits = 0;
        for (Latent& L : lats) {
            if (L.cands.empty()) continue;
            const Candidate* best = &L.cands[0];
            for (const Candidate& cd : L.cands)
                if (cd.error + lambda * cd.bits < best->error + lambda * best->bits) best = &cd;
            bits += best->bits;
            if (apply) *L.q = best->q;
        }
        return bits;
    };
    double lo = -40, hi = 5;  // log lambda
    for (int it = 0; it < 60; ++it) {
        const double mid = 0.5 * (lo + hi);
        (choose(std::exp(mid), false) <= budget ? hi : lo) = mid;
    }
    choose(std::exp(hi), true);

    // 4. Fold the rotations into the factors.
    double err_total = 0, code_bits = 0, channels = 0;
    std::vector<LatentQuantLayer> plan(static_cast<size_t>(c.n_layer));
    for (Latent& L : lats) {
        if (!L.q->active()) continue;
        for (const Candidate& cd : L.cands)
            if (cd.q.width == L.q->width && cd.q.block == L.q->block && cd.q.split == L.q->split &&
                cd.q.hi_bits == L.q->hi_bits && cd.q.lo_bits == L.q->lo_bits)
                err_total += cd.error;
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
             {"relative_error_sum", err_total},
             {"layers", bundle::kv_quant_layers_to_json(plan)}};
    log(STARKV_LOG_INFO, "KV quantization plan: " + out.dump());
    return out;
}

}  // namespace starkv::quant
