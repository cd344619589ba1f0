// Quantized STAR-KV latents: the error bound of each bit width and scale
// format (fp16, log8; random and real latents), the log8 scale codes, the
// Hadamard rotation, folded vs unfolded factors, the plan's validation, the
// sensitivity probes' reported KL against the test's own, and a bundle packed
// with --kv-bits 4 whose cache holds exactly the bytes its plan implies.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bundle/kv_quant_plan.h"
#include "bundle/reader.h"
#include "bundle/writer.h"
#include "calibration/hadamard.h"
#include "calibration/lowrank.h"
#include "calibration/quant_plan.h"
#include "core/error.h"
#include "kv/latent_quant.h"
#include "model/context.h"
#include "model/loader.h"
#include "model/model.h"
#include "test_paths.h"

namespace {

using starkv::LatentQuant;
using starkv::Matrix;
using starkv::Model;
namespace lr = starkv::lowrank;

std::shared_ptr<const Model> borrow(const Model& m) { return std::shared_ptr<const Model>(&m, [](const Model*) {}); }

std::unique_ptr<Model> load_stories() {
    return std::make_unique<Model>(starkv::load_model(starkv_test::stories_model(), nullptr));
}

std::vector<int32_t> text_tokens(const Model& m, int n) {
    const std::string text = starkv_test::read_file(starkv_test::shared_path("data/tinystories_val.txt"));
    std::vector<int32_t> t = m.tokenizer().tokenize(text.substr(0, 6000), true, false);
    t.resize(static_cast<size_t>(n));
    return t;
}

// The worst error each group may have, from the group's own range: half a
// step of (max - min) / (2^b - 1) (8 bits: max|x| / 127, symmetric), widened
// by the fp16 rounding of the scale and the minimum.
void expect_within_bound(const LatentQuant& q, const float* z, const float* back, const std::string& what) {
    for (int g = 0; g < q.n_groups(); ++g) {
        const int bits = q.group_bits(g);
        const float* x = z + g * q.block;
        const float* y = back + g * q.block;
        double lo = x[0], hi = x[0], amax = 0;
        for (int i = 0; i < q.block; ++i) lo = std::min<double>(lo, x[i]), hi = std::max<double>(hi, x[i]), amax = std::max<double>(amax, std::fabs(x[i]));
        const bool symmetric = bits == 8 || !q.zero_point;
        const double step = symmetric ? amax / ((1 << (bits - 1)) - 1) : (hi - lo) / ((1 << bits) - 1);
        const double bound = 0.5 * step * (1.0 + 2.0 / 1024) + (symmetric ? 0.0 : std::fabs(lo) / 1024.0) + 1e-6 * amax;
        for (int i = 0; i < q.block; ++i)
            ASSERT_LE(std::fabs(static_cast<double>(x[i]) - y[i]), bound)
                << what << " bits " << bits << " block " << q.block << " group " << g << " channel " << i;
    }
}

size_t bytes_from_plan(const LatentQuant& q) {
    // Independent count: per group a header (fp16 scales: 8 bits or
    // symmetric: fp16 scale, else fp16 scale + fp16 min; log8: one code byte
    // per group, or one per row) and b bits per channel.
    size_t n = q.log8() && q.row_scale ? 1 : 0;
    for (int c = 0; c < q.width; c += q.block) {
        const int bits = c < q.split ? q.hi_bits : q.lo_bits;
        const size_t header = q.log8() ? (q.row_scale ? 0 : 1) : (bits == 8 || !q.zero_point ? 2 : 4);
        n += header + static_cast<size_t>(q.block * bits) / 8;
    }
    return n;
}

// A log8 plan with the given static ranges and offsets.
LatentQuant log8_plan(int width, int block, int split, int hi, int lo, bool row, std::vector<float> base, std::vector<float> offset) {
    LatentQuant q{width, block, split, hi, lo, false};
    q.scale = starkv::QuantScale::Log8;
    q.row_scale = row;
    q.base = std::move(base);
    q.offset = std::move(offset);
    return q;
}

// The log8 error bound, from the values themselves: with the smallest code
// whose multiplier covers the largest centred magnitude (at most 2^(1/8)
// above it) every value is within half a step, so the squared error of each
// unit sharing a code (a group, or the row) is at most that of half a step
// everywhere; the coder only picks a smaller code when it lowers that sum.
void expect_log8_within_bound(const LatentQuant& q, const float* z, const float* back, const std::string& what) {
    const int G = q.n_groups(), B = q.block;
    std::vector<double> ratio(static_cast<size_t>(G));
    for (int g = 0; g < G; ++g) {
        double amax = 0;
        for (int i = 0; i < B; ++i) amax = std::max(amax, std::fabs(static_cast<double>(z[g * B + i]) - q.offset[static_cast<size_t>(g * B + i)]));
        ratio[static_cast<size_t>(g)] = amax / q.base[static_cast<size_t>(g)];
    }
    const double row_ratio = *std::max_element(ratio.begin(), ratio.end());
    double bound = 0, err = 0;
    auto check = [&](const std::string& unit) {
        ASSERT_LE(err, bound * (1 + 1e-4) + 1e-30) << what << " " << unit;
        bound = err = 0;
    };
    for (int g = 0; g < G; ++g) {
        const double half = 0.5 * ((1 << q.group_bits(g)) - 1);
        const double m = std::max(q.row_scale ? row_ratio : ratio[static_cast<size_t>(g)], std::exp2(-16.0));
        const double step = q.base[static_cast<size_t>(g)] * m * std::exp2(1.0 / 8) / half;
        for (int i = 0; i < B; ++i) {
            const double d = static_cast<double>(z[g * B + i]) - back[g * B + i];
            err += d * d;
            bound += 0.25 * step * step;
        }
        if (!q.row_scale) check("group " + std::to_string(g) + " bits " + std::to_string(q.group_bits(g)));
    }
    if (q.row_scale) check("row");
}

TEST(LatentQuant, RandomLatentsWithinTheBoundOfEachBitWidth) {
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (int block : {8, 32, 128})
        for (int bits : {8, 4, 3, 2})
            for (int trial = 0; trial < 24; ++trial) {
                const int width = block * (1 + trial % 3);
                const LatentQuant q{width, block, trial % 2 ? block : 0, 8, bits, trial % 4 < 2};
                std::vector<float> z(static_cast<size_t>(width)), back(z.size());
                const float scale = std::pow(10.0f, static_cast<float>(trial % 5) - 2.0f), offset = trial % 4 == 0 ? 3.0f * scale : 0.0f;
                for (float& v : z) v = offset + scale * nd(rng);
                std::vector<uint8_t> row(q.row_bytes());
                ASSERT_EQ(q.row_bytes(), bytes_from_plan(q));
                starkv::quantize_latent(q, z.data(), row.data());
                starkv::dequantize_latent(q, row.data(), back.data());
                expect_within_bound(q, z.data(), back.data(), "random");
            }
    // A constant group (zero range) comes back exactly up to the fp16 minimum.
    const LatentQuant q{8, 8, 0, 4, 4};
    std::vector<float> z(8, 0.25f), back(8);
    std::vector<uint8_t> row(q.row_bytes());
    starkv::quantize_latent(q, z.data(), row.data());
    starkv::dequantize_latent(q, row.data(), back.data());
    for (float v : back) EXPECT_EQ(v, 0.25f);
}

TEST(LatentQuant, Log8CodesRoundTripAndCoverTheirRange) {
    EXPECT_EQ(starkv::log8_multiplier(128), 1.0f);
    for (int e = 0; e < 256; ++e) {
        EXPECT_EQ(starkv::log8_code_at_least(starkv::log8_multiplier(e)), e) << e;
        if (e > 0) EXPECT_NEAR(starkv::log8_multiplier(e) / starkv::log8_multiplier(e - 1), std::exp2(1.0 / 8), 1e-6) << e;
    }
    std::mt19937 rng(3);
    std::uniform_real_distribution<double> octave(-15.9, 15.8);
    for (int i = 0; i < 2000; ++i) {
        const float m = static_cast<float>(std::exp2(octave(rng)));
        const int e = starkv::log8_code_at_least(m);
        ASSERT_GE(starkv::log8_multiplier(e), m);
        ASSERT_LT(starkv::log8_multiplier(e - 1), m);
    }
    EXPECT_EQ(starkv::log8_code_at_least(0.0f), 0);
    EXPECT_EQ(starkv::log8_code_at_least(1e30f), 255);
}

TEST(LatentQuant, Log8RandomLatentsWithinTheBound) {
    std::mt19937 rng(11);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_real_distribution<float> octave(-6.0f, 6.0f);
    for (int block : {8, 32, 128})
        for (int bits : {8, 6, 5, 4, 3, 2})
            for (bool row : {false, true})
                for (int trial = 0; trial < 12; ++trial) {
                    const int width = block * (1 + trial % 3), G = width / block;
                    // Static ranges off by up to 2^6 either way from the token's
                    // (the per-token code absorbs it), channel offsets of either sign.
                    std::vector<float> base(static_cast<size_t>(G)), offset(static_cast<size_t>(width));
                    for (float& b : base) b = std::exp2(octave(rng));
                    for (float& o : offset) o = trial % 2 ? nd(rng) : 0.0f;
                    const LatentQuant q = log8_plan(width, block, trial % 4 < 2 ? block : 0, 8, bits, row, base, offset);
                    ASSERT_NO_THROW(q.validate(width, "test"));
                    std::vector<float> z(static_cast<size_t>(width)), back(z.size());
                    for (int c = 0; c < width; ++c) {
                        const float scale = base[static_cast<size_t>(c / block)] * std::exp2(octave(rng) / 2);
                        z[static_cast<size_t>(c)] = offset[static_cast<size_t>(c)] + scale * nd(rng);
                    }
                    std::vector<uint8_t> row_bytes(q.row_bytes());
                    ASSERT_EQ(q.row_bytes(), bytes_from_plan(q));
                    starkv::quantize_latent(q, z.data(), row_bytes.data());
                    starkv::dequantize_latent(q, row_bytes.data(), back.data());
                    expect_log8_within_bound(q, z.data(), back.data(), "random block " + std::to_string(block) + " bits " + std::to_string(bits));
                }
    // Values far beyond the largest code's range are clipped to it (finite, right sign).
    {
        const LatentQuant big = log8_plan(8, 8, 0, 4, 4, true, {1e-3f}, std::vector<float>(8, 0.0f));
        std::vector<float> z{1e30f, -1e30f, 1.0f, 0.0f, 0.0f, 0.0f, 0.0f, -1.0f}, back(8);
        std::vector<uint8_t> row(big.row_bytes());
        starkv::quantize_latent(big, z.data(), row.data());
        starkv::dequantize_latent(big, row.data(), back.data());
        const float top = 1e-3f * starkv::log8_multiplier(255);
        EXPECT_FLOAT_EQ(back[0], top);
        EXPECT_FLOAT_EQ(back[1], -top);
        for (float v : back) EXPECT_TRUE(std::isfinite(v));
    }
    // Values at the offsets (a zero range) come back within the smallest step.
    const LatentQuant q = log8_plan(8, 8, 0, 4, 4, true, {1.0f}, std::vector<float>(8, 0.25f));
    std::vector<float> z(8, 0.25f), back(8);
    std::vector<uint8_t> row(q.row_bytes());
    starkv::quantize_latent(q, z.data(), row.data());
    starkv::dequantize_latent(q, row.data(), back.data());
    for (float v : back) EXPECT_NEAR(v, 0.25f, 1e-5f);
}

TEST(LatentQuant, RealLatentsWithinTheBound) {
    auto m = load_stories();
    const starkv::ModelConfig& c = m->config();
    lr::install_full_rank(*m, {2});
    const starkv::LatentFactors& F = m->weights().layers[2].lat;
    std::vector<float> xs;
    {
        starkv::Context ctx(borrow(*m), starkv::ContextOptions{128, 1});
        ctx.set_kv_input_observer([&](int l, const float* xn, int n) {
            if (l == 2) xs.insert(xs.end(), xn, xn + static_cast<size_t>(n) * c.n_embd);
        });
        const std::vector<int32_t> t = text_tokens(*m, 64);
        ctx.eval(t.data(), t.size(), false);
    }
    const Matrix& a = F.v_a;  // 32 channels
    for (int bits : {8, 4, 3, 2})
    for (bool zp : {true, false}) {
        const LatentQuant q{a.rows, 8, 8, 8, bits, zp};
        std::vector<float> z(static_cast<size_t>(a.rows)), back(z.size());
        std::vector<uint8_t> row(q.row_bytes());
        for (size_t t = 0; t * c.n_embd < xs.size(); ++t) {
            for (int r = 0; r < a.rows; ++r) {
                double s = 0;
                for (int i = 0; i < c.n_embd; ++i) s += static_cast<double>(a.row(r)[i]) * xs[t * c.n_embd + static_cast<size_t>(i)];
                z[static_cast<size_t>(r)] = static_cast<float>(s);
            }
            starkv::quantize_latent(q, z.data(), row.data());
            starkv::dequantize_latent(q, row.data(), back.data());
            expect_within_bound(q, z.data(), back.data(), "real");
        }
    }
    // log8: static ranges and offsets from the first half of the tokens (as
    // the pack calibrates them), checked on all of them.
    const size_t T = xs.size() / c.n_embd;
    std::vector<std::vector<float>> zs(T, std::vector<float>(static_cast<size_t>(a.rows)));
    for (size_t t = 0; t < T; ++t)
        for (int r = 0; r < a.rows; ++r) {
            double s = 0;
            for (int i = 0; i < c.n_embd; ++i) s += static_cast<double>(a.row(r)[i]) * xs[t * c.n_embd + static_cast<size_t>(i)];
            zs[t][static_cast<size_t>(r)] = static_cast<float>(s);
        }
    const int block = 8, G = a.rows / block;
    std::vector<float> offset(static_cast<size_t>(a.rows), 0.0f), base(static_cast<size_t>(G), 0.0f);
    for (size_t t = 0; t < T / 2; ++t)
        for (int r = 0; r < a.rows; ++r) offset[static_cast<size_t>(r)] += zs[t][static_cast<size_t>(r)] / static_cast<float>(T / 2);
    for (size_t t = 0; t < T / 2; ++t)
        for (int r = 0; r < a.rows; ++r)
            base[static_cast<size_t>(r / block)] = std::max(base[static_cast<size_t>(r / block)], std::fabs(zs[t][static_cast<size_t>(r)] - offset[static_cast<size_t>(r)]));
    for (int bits : {8, 5, 4, 3, 2})
        for (bool row_scale : {false, true}) {
            const LatentQuant q = log8_plan(a.rows, block, block, 8, bits, row_scale, base, offset);
            std::vector<float> back(static_cast<size_t>(a.rows));
            std::vector<uint8_t> row(q.row_bytes());
            for (size_t t = 0; t < T; ++t) {
                starkv::quantize_latent(q, zs[t].data(), row.data());
                starkv::dequantize_latent(q, row.data(), back.data());
                expect_log8_within_bound(q, zs[t].data(), back.data(), "real log8 bits " + std::to_string(bits));
            }
        }
}

TEST(LatentQuant, HadamardRotationIsOrthogonalAndFoldingKeepsTheProduct) {
    for (int block : {8, 32, 128}) {
        const int n = 2 * block;
        // Columns of the rotation: images of the unit vectors.
        std::vector<std::vector<float>> H(static_cast<size_t>(n), std::vector<float>(static_cast<size_t>(n), 0.0f));
        for (int j = 0; j < n; ++j) {
            H[static_cast<size_t>(j)][static_cast<size_t>(j)] = 1.0f;
            starkv::hadamard::rotate(H[static_cast<size_t>(j)].data(), n, block);
        }
        for (int i = 0; i < n; ++i)
            for (int j = 0; j < n; ++j) {
                double d = 0;
                for (int k = 0; k < n; ++k) d += static_cast<double>(H[static_cast<size_t>(i)][static_cast<size_t>(k)]) * H[static_cast<size_t>(j)][static_cast<size_t>(k)];
                EXPECT_NEAR(d, i == j ? 1.0 : 0.0, 1e-6) << "block " << block;
                EXPECT_NEAR(H[static_cast<size_t>(i)][static_cast<size_t>(j)], H[static_cast<size_t>(j)][static_cast<size_t>(i)], 1e-7);  // symmetric
                if ((i / block) != (j / block)) EXPECT_EQ(H[static_cast<size_t>(i)][static_cast<size_t>(j)], 0.0f);
            }
    }
    // U A is unchanged by padding and rotation.
    std::mt19937 rng(3);
    std::normal_distribution<float> nd;
    Matrix a(13, 20), u(24, 13);
    for (float& v : a.data) v = nd(rng);
    for (float& v : u.data) v = nd(rng);
    Matrix fa = a, fu = u;
    starkv::hadamard::fold(fa, fu, 16, 8, true);
    ASSERT_EQ(fa.rows, 16);
    ASSERT_EQ(fu.cols, 16);
    for (int r = 0; r < u.rows; ++r)
        for (int c = 0; c < a.cols; ++c) {
            double want = 0, got = 0;
            for (int k = 0; k < a.rows; ++k) want += static_cast<double>(u.row(r)[k]) * a.row(k)[c];
            for (int k = 0; k < fa.rows; ++k) got += static_cast<double>(fu.row(r)[k]) * fa.row(k)[c];
            EXPECT_NEAR(got, want, 1e-4 * (1.0 + std::fabs(want)));
        }
}

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& t) {
    starkv::Context ctx(borrow(m), starkv::ContextOptions{128, 2});
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

// Folding the rotation (and zero padding) into fp32 latents changes nothing but rounding.
TEST(LatentQuant, FoldedAndUnfoldedFactorsGiveTheSameOutput) {
    auto m = load_stories();
    lr::install_full_rank(*m, {1, 2, 3});
    const std::vector<int32_t> t = text_tokens(*m, 40);
    const std::vector<float> want = logits_of(*m, t);
    for (int l : {1, 2, 3}) {
        starkv::LatentFactors& F = m->mutable_weights().layers[static_cast<size_t>(l)].lat;
        for (size_t h = 0; h < F.k_a.size(); ++h) starkv::hadamard::fold(F.k_a[h], F.k_u[h], 8, 8, true);
        starkv::hadamard::fold(F.v_a, F.v_u, 32, l == 2 ? 32 : 16, true);
    }
    const double err = max_rel_err(logits_of(*m, t), want);
    EXPECT_LT(err, 2e-5);
    std::printf("folded vs unfolded factors: max rel err %.3g\n", err);
}

TEST(LatentQuant, PlanValidationRefusesGarbage) {
    starkv::ModelConfig c;
    c.n_layer = 2;
    c.n_head = 2;
    c.n_head_kv = 1;
    c.head_dim = 64;
    const nlohmann::json ok = {{{"k", {{{"width", 32}, {"block", 16}, {"split", 16}, {"hi_bits", 8}, {"lo_bits", 3}}}},
                                {"v", {{"width", 0}}}},
                               nullptr};
    const auto plan = starkv::bundle::kv_quant_layers_from_json(ok, c);
    ASSERT_EQ(plan.size(), 2u);
    EXPECT_EQ(plan[0].k[0].row_bytes(), bytes_from_plan(plan[0].k[0]));
    EXPECT_FALSE(plan[0].v.active());
    EXPECT_TRUE(plan[1].empty());
    auto bad = [&](const std::string& key, const nlohmann::json& value) {
        nlohmann::json j = ok;
        j[0]["k"][0][key] = value;
        try {
            starkv::bundle::kv_quant_layers_from_json(j, c);
            ADD_FAILURE() << key << " = " << value.dump() << " accepted";
        } catch (const starkv::Error& e) {
            EXPECT_EQ(e.status(), STARKV_ERR_CORRUPT);
            EXPECT_NE(std::string(e.what()).find("layer 0"), std::string::npos) << e.what();
        }
    };
    bad("lo_bits", 5);
    bad("hi_bits", 3);
    bad("block", 12);
    bad("block", 256);
    bad("width", 40);   // not a multiple of the block
    bad("width", 128);  // beyond head_dim
    bad("split", 8);
    bad("split", -16);
    bad("lo_bits", "4");
    bad("zero_point", 1);
    EXPECT_THROW(starkv::bundle::kv_quant_layers_from_json(nlohmann::json::array({nullptr}), c), starkv::Error);
    EXPECT_THROW(starkv::bundle::kv_quant_layers_from_json(nlohmann::json::object(), c), starkv::Error);
}

TEST(LatentQuant, Log8PlanRoundTripsAndValidationRefusesGarbage) {
    starkv::ModelConfig c;
    c.n_layer = 1;
    c.n_head = 2;
    c.n_head_kv = 1;
    c.head_dim = 64;
    std::vector<float> offset(32);
    for (size_t i = 0; i < offset.size(); ++i) offset[i] = 0.1f * static_cast<float>(i) - 1.3f;
    std::vector<starkv::LatentQuantLayer> plan(1);
    plan[0].k = {log8_plan(32, 16, 16, 6, 3, true, {0.75f, 1.0f / 3}, offset)};
    plan[0].v = log8_plan(16, 8, 0, 4, 4, false, {2.5f, 1e-7f}, std::vector<float>(16, 0.0f));
    const nlohmann::json ok = starkv::bundle::kv_quant_layers_to_json(plan);
    EXPECT_TRUE(starkv::bundle::kv_quant_layers_need_v2(ok));
    // Round trip through the bundle's text form keeps every float bit for bit.
    const auto back = starkv::bundle::kv_quant_layers_from_json(nlohmann::json::parse(ok.dump()), c);
    ASSERT_EQ(back.size(), 1u);
    const LatentQuant& k = back[0].k[0];
    EXPECT_TRUE(k.log8());
    EXPECT_TRUE(k.row_scale);
    EXPECT_EQ(k.base, plan[0].k[0].base);
    EXPECT_EQ(k.offset, plan[0].k[0].offset);
    EXPECT_EQ(k.row_bytes(), 1u + 16 * 6 / 8 + 16 * 3 / 8);
    EXPECT_EQ(k.row_bytes(), bytes_from_plan(k));
    EXPECT_FALSE(back[0].v.row_scale);
    EXPECT_EQ(back[0].v.row_bytes(), 2u * (1 + 4));
    auto bad = [&](const std::string& key, const nlohmann::json& value) {
        nlohmann::json j = ok;
        if (value.is_null() && key != "base") j[0]["k"][0].erase(key);
        else j[0]["k"][0][key] = value;
        try {
            starkv::bundle::kv_quant_layers_from_json(j, c);
            ADD_FAILURE() << key << " = " << value.dump() << " accepted";
        } catch (const starkv::Error& e) {
            EXPECT_EQ(e.status(), STARKV_ERR_CORRUPT);
            EXPECT_NE(std::string(e.what()).find("layer 0"), std::string::npos) << e.what();
        }
    };
    bad("scale", "log9");
    bad("scale", 1);
    bad("row_scale", nullptr);  // missing
    bad("row_scale", 1);
    bad("base", {1.0});                        // one range per group
    bad("base", {1.0, -2.0});                  // not positive
    bad("base", {1.0, 0.0});
    bad("base", {1.0, nullptr});               // NaN is written as null
    bad("base", "1");
    bad("offset", std::vector<float>(31, 0.0f));  // one per channel
    bad("offset", nullptr);
    bad("lo_bits", 7);
    bad("lo_bits", 1);
    bad("hi_bits", 3);
    bad("hi_bits", 9);
    bad("scale", "static");
    nlohmann::json fp16 = ok;
    for (auto& q : {&fp16[0]["k"][0], &fp16[0]["v"]})
        for (const char* k2 : {"scale", "row_scale", "base", "offset"}) q->erase(k2);
    EXPECT_FALSE(starkv::bundle::kv_quant_layers_need_v2(fp16));
}

TEST(LatentQuant, BlockChoiceStaysWithinTheWidth) {
    EXPECT_EQ(starkv::quant::block_for(2, 8, 0), 8);
    EXPECT_EQ(starkv::quant::block_for(2, 4, 0), 0);  // no block fits: the latent stays fp32
    EXPECT_EQ(starkv::quant::block_for(16, 64, 64), 16);
    EXPECT_EQ(starkv::quant::block_for(96, 192, 0), 128);  // pads 96 to 128 <= 192
    EXPECT_EQ(starkv::quant::block_for(100, 128, 64), 64);
    EXPECT_EQ(starkv::quant::block_for(190, 192, 128), 64);
}

// Packs stories260K at rate 0.5 with 4-bit latents, layer 0 plain with 8-bit K/V.
// Mean KL(softmax(a) || softmax(b)) per position, in float64 (the test's own).
double mean_kl_f64(const std::vector<float>& a, const std::vector<float>& b, size_t V) {
    double kl = 0;
    const size_t n = a.size() / V;
    for (size_t i = 0; i < n; ++i) {
        const float* x = &a[i * V];
        const float* y = &b[i * V];
        const double mx = *std::max_element(x, x + V), my = *std::max_element(y, y + V);
        double zx = 0, zy = 0;
        for (size_t j = 0; j < V; ++j) zx += std::exp(x[j] - mx), zy += std::exp(y[j] - my);
        for (size_t j = 0; j < V; ++j) {
            const double lp = x[j] - mx - std::log(zx), lq = y[j] - my - std::log(zy);
            kl += std::exp(lp) * (lp - lq);
        }
    }
    return kl / static_cast<double>(n);
}

// The sensitivity probes (quant::Options::probe_tokens, two rounds): the plan
// kept is the one of least output KL, and the KL the planner reports for it is the KL
// this test measures itself between the planned model and an fp32-latent copy
// (so every factor the probes folded and restored came back as it was); the
// plan fits the budget; with no probe the plan is the squared-error one.
TEST(LatentQuant, SensitivityProbesReportTheKeptPlansOutputKl) {
    auto plain = load_stories();
    lr::install_full_rank(*plain, {1, 2, 3});
    const std::vector<int32_t> t = text_tokens(*plain, 96);
    const std::vector<float> ref = logits_of(*plain, t);
    const size_t V = static_cast<size_t>(plain->config().n_vocab);

    starkv::quant::Options o;
    o.avg_bits = 3;
    o.sample_tokens = 96;
    o.probe_tokens = 96;
    o.probe_rounds = 2;
    auto m = load_stories();
    lr::install_full_rank(*m, {1, 2, 3});
    const nlohmann::json plan = starkv::quant::plan_and_fold(*m, {t}, o, 128, 1);
    const nlohmann::json& sens = plan["sensitivity"];
    ASSERT_TRUE(sens.is_object());
    EXPECT_EQ(sens["probe_tokens"].get<int>(), 96);
    const auto& per = sens["probe_kl_per_latent"];
    ASSERT_EQ(per.size(), 3u * (static_cast<size_t>(m->config().n_head_kv) + 1));  // 3 layers x (keys + value)
    for (const auto& k : per) EXPECT_GE(k.get<double>(), 0.0);
    const double kl_sq = sens["probe_kl_squared_error_plan"].get<double>();
    const std::vector<double> kl_w = sens["probe_kl_weighted_plan"].get<std::vector<double>>();
    ASSERT_EQ(kl_w.size(), 2u);  // two rounds
    const int kept_round = sens["kept_round"].get<int>();
    EXPECT_EQ(sens["kept"].get<std::string>(), kept_round < 0 ? "squared_error" : "weighted");
    // The plan kept has the least probe KL of all the plans made.
    const double want = kept_round < 0 ? kl_sq : kl_w[static_cast<size_t>(kept_round)];
    EXPECT_LE(want, kl_sq);
    for (double k : kl_w) EXPECT_LE(want, k);
    const double got = mean_kl_f64(ref, logits_of(*m, t), V);
    EXPECT_GT(got, 0.0);
    EXPECT_NEAR(got, want, 1e-3 * want + 1e-7) << "planner " << want << ", measured " << got;
    EXPECT_LE(plan["bits_per_channel"].get<double>(), 3.0 + 1e-9);

    o.probe_tokens = 0;
    auto m0 = load_stories();
    lr::install_full_rank(*m0, {1, 2, 3});
    const nlohmann::json plan0 = starkv::quant::plan_and_fold(*m0, {t}, o, 128, 1);
    EXPECT_TRUE(plan0["sensitivity"].is_null());
    // The squared-error plan's KL, as the probing planner measured it.
    EXPECT_NEAR(mean_kl_f64(ref, logits_of(*m0, t), V), kl_sq, 1e-3 * kl_sq + 1e-7);
    EXPECT_FALSE(sens["probe_held_out"].get<bool>());  // one sequence: the samples are probed
}

// With calibration text beyond the sampled tokens, the probes run on the
// text after them: the KL reported for the kept plan is the one measured on
// that second text.
TEST(LatentQuant, SensitivityProbesRunOnTextAfterTheSamples) {
    auto plain = load_stories();
    lr::install_full_rank(*plain, {2, 3});
    const std::vector<int32_t> all = text_tokens(*plain, 160);
    const std::vector<int32_t> sample(all.begin(), all.begin() + 80), held(all.begin() + 80, all.end());
    const std::vector<float> ref = logits_of(*plain, held);
    starkv::quant::Options o;
    o.avg_bits = 3;
    o.sample_tokens = 80;
    o.probe_tokens = 80;
    auto m = load_stories();
    lr::install_full_rank(*m, {2, 3});
    const nlohmann::json plan = starkv::quant::plan_and_fold(*m, {sample, held}, o, 128, 1);
    const nlohmann::json& sens = plan["sensitivity"];
    ASSERT_TRUE(sens.is_object());
    EXPECT_TRUE(sens["probe_held_out"].get<bool>());
    EXPECT_EQ(sens["probe_tokens"].get<int>(), 80);
    const int kept_round = sens["kept_round"].get<int>();
    const double want = kept_round < 0 ? sens["probe_kl_squared_error_plan"].get<double>()
                                       : sens["probe_kl_weighted_plan"][static_cast<size_t>(kept_round)].get<double>();
    const double got = mean_kl_f64(ref, logits_of(*m, held), static_cast<size_t>(m->config().n_vocab));
    EXPECT_GT(got, 0.0);
    EXPECT_NEAR(got, want, 1e-3 * want + 1e-7) << "planner " << want << ", measured " << got;
}

TEST(LatentQuant, BundleWithKvBits4GeneratesAndHoldsTheBytesOfItsPlan) {
    const std::string dir = starkv_test::temp_dir();
    const std::string out = dir + "/stories_q4.skv", calib = dir + "/calib.txt";
    {
        std::ofstream f(calib);
        f << starkv_test::read_file(starkv_test::shared_path("data/tinyshakespeare_input.txt")).substr(0, 40000);
    }
    starkv::PackOptions po;
    lr::Options o;
    o.rate = 0.5f;
    o.strategy = lr::Strategy::Uniform;
    o.default_skip = false;
    o.skip_layers = {0};
    o.calib_tokens = 1024;
    o.eval_tokens = 256;
    o.quant.avg_bits = 4;
    o.quant.sample_tokens = 256;
    o.quant.plain_bits = 8;  // layer 0 (kept plain) at 8 bits
    po.kv = o;
    po.calib_path = calib;
    starkv::pack_bundle(starkv_test::stories_model(), out, po);

    const nlohmann::json d = nlohmann::json::parse(starkv::describe_bundle(out));
    EXPECT_NE(std::find(d["required_features"].begin(), d["required_features"].end(), "kv-quant"), d["required_features"].end());
    auto m = std::make_shared<const Model>(starkv::load_model(out, nullptr));
    const starkv::ModelConfig& c = m->config();
    const auto& layers = d["compression"]["kv_quant"]["layers"];
    uint64_t want = 0;
    double code_bits = 0, channels = 0;
    int n_log8 = 0;
    for (int l = 0; l < c.n_layer; ++l) {
        ASSERT_FALSE(layers[static_cast<size_t>(l)].is_null());
        if (const auto& L = layers[static_cast<size_t>(l)]; L.contains("plain")) {
            const auto& p = L["plain"];
            const LatentQuant q{p["width"].get<int>(), p["block"].get<int>(), p["split"].get<int>(), p["hi_bits"].get<int>(), p["lo_bits"].get<int>()};
            EXPECT_EQ(q.width, c.head_dim);
            EXPECT_EQ(q.lo_bits, 8);
            want += 2ull * c.n_head_kv * bytes_from_plan(q);  // keys and values of every KV head
            continue;
        }
        auto add = [&](const nlohmann::json& p) {
            LatentQuant q{p["width"].get<int>(), p["block"].get<int>(), p["split"].get<int>(), p["hi_bits"].get<int>(),
                          p["lo_bits"].get<int>(), p["zero_point"].get<bool>()};
            if (p.contains("scale")) {
                q.scale = starkv::QuantScale::Log8;
                q.row_scale = p["row_scale"].get<bool>();
                ++n_log8;
            }
            want += bytes_from_plan(q);
            for (int ch = 0; ch < q.width; ++ch) code_bits += ch < q.split ? q.hi_bits : q.lo_bits;
            channels += q.width;
        };
        for (const auto& k : layers[static_cast<size_t>(l)]["k"]) add(k);
        add(layers[static_cast<size_t>(l)]["v"]);
    }
    EXPECT_LE(code_bits / channels, 4.0 + 1e-9);  // codes alone stay within the 4-bit budget
    // The one-byte log8 scales win on stories' 8-channel groups (fp16 scales
    // cost 2-4 bytes each), so this bundle exercises them, and requires the feature.
    EXPECT_GT(n_log8, 0);
    EXPECT_EQ(std::find(d["required_features"].begin(), d["required_features"].end(), "kv-quant-v2") != d["required_features"].end(),
              n_log8 > 0);
    starkv::Context ctx(m, starkv::ContextOptions{128, 2});
    EXPECT_EQ(ctx.kv_bytes_per_token(), want);
    // Under a quarter of the fp32 cache (the padded stories latents cost more than 4 bits).
    EXPECT_LT(ctx.kv_bytes_per_token(), ctx.kv_bytes_per_token_uncompressed() / 4);

    // Prefill (keys rebuilt once per layer) and token-by-token decode (keys
    // rebuilt tile by tile) read the same quantized rows: same logits.
    const std::vector<int32_t> t = text_tokens(*m, 48);
    const std::vector<float> batch = logits_of(*m, t);
    const size_t V = static_cast<size_t>(c.n_vocab);
    double worst = 0;
    for (size_t i = 0; i < t.size(); ++i) {
        ctx.eval(&t[i], 1, false);
        const float* lg = ctx.logits(-1);
        for (size_t j = 0; j < V; ++j) ASSERT_TRUE(std::isfinite(lg[j]));
        std::vector<float> got(lg, lg + V), ref(batch.begin() + static_cast<std::ptrdiff_t>(i * V), batch.begin() + static_cast<std::ptrdiff_t>((i + 1) * V));
        worst = std::max(worst, max_rel_err(got, ref));
    }
    EXPECT_LT(worst, 1e-4);
    EXPECT_EQ(ctx.kv_bytes_reserved() % want, 0u);
}

}  // namespace
