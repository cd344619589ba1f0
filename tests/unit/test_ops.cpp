// The CPU ops (src/backend/cpu_ops.h) against naive float64 versions written
// here from the textbook formulas, on seeded random inputs of several sizes
// (odd ones included, so the 8-wide dot's tail is exercised).
//
// Error measures and tolerances (fp32 unit roundoff u = 6e-8):
//  dot      |got - ref| / sum_i |a_i b_i|  < 1e-5  (bound ~ (n/8 + 3) u)
//  matmul   same measure per output element < 1e-5; 1 and 3 threads bitwise equal
//  rms_norm, swiglu  elementwise relative error (floor noted) < 1e-6 (a few u)
//  softmax  elementwise relative error < (8 + |x_i - max|) u (exp's condition number)
//  rope     per head max|got - ref| / max|x| < 1e-6; inv_freq relative < 1e-12
//  attention per head max|got - ref| / max|v| < 1e-5
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "backend/cpu_ops.h"
#include "core/thread_pool.h"
#include "ref_math.h"

using starkv_test::elementwise_rel_err;
using starkv_test::random_floats;

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kU = 0x1.0p-24;  // fp32 unit roundoff

// ---- dot / matmul -----------------------------------------------------------

TEST(Ops, DotMatchesFloat64) {
    double worst = 0;
    uint32_t seed = 1;
    for (size_t n : {1u, 2u, 7u, 8u, 9u, 15u, 16u, 17u, 63u, 64u, 65u, 100u, 172u, 255u, 1000u, 4099u}) {
        std::vector<float> a = random_floats(n, seed++), b = random_floats(n, seed++);
        double ref = 0, mag = 0;
        for (size_t i = 0; i < n; ++i) {
            ref += static_cast<double>(a[i]) * b[i];
            mag += std::fabs(static_cast<double>(a[i]) * b[i]);
        }
        const double err = std::fabs(starkv::cpu::dot(a.data(), b.data(), n) - ref) / mag;
        EXPECT_LT(err, 1e-5) << "n=" << n;
        worst = std::max(worst, err);
    }
    std::printf("[ops] dot: max |err| / sum|a b| = %.3g\n", worst);
}

TEST(Ops, MatmulMatchesFloat64WithOneAndThreeThreads) {
    starkv::ThreadPool pool1(1), pool3(3);
    struct Shape {
        int rows, cols;
    };
    double worst = 0;
    uint32_t seed = 100;
    for (Shape s : {Shape{1, 1}, Shape{7, 13}, Shape{1000, 13}, Shape{64, 64}, Shape{172, 64}, Shape{64, 172},
                    Shape{33, 257}, Shape{512, 64}, Shape{5, 1031}}) {
        starkv::Matrix w(s.rows, s.cols);
        w.data = random_floats(static_cast<size_t>(s.rows) * s.cols, seed++);
        for (int n_tokens : {1, 2, 5, 17, 64}) {
            std::vector<float> x = random_floats(static_cast<size_t>(n_tokens) * s.cols, seed++);
            const size_t n_out = static_cast<size_t>(n_tokens) * s.rows;
            std::vector<float> out1(n_out, NAN), out3(n_out, NAN);
            starkv::cpu::matmul(w, x.data(), n_tokens, out1.data(), pool1);
            starkv::cpu::matmul(w, x.data(), n_tokens, out3.data(), pool3);
            for (int t = 0; t < n_tokens; ++t)
                for (int r = 0; r < s.rows; ++r) {
                    double ref = 0, mag = 0;
                    for (int c = 0; c < s.cols; ++c) {
                        const double p = static_cast<double>(w.row(r)[c]) * x[static_cast<size_t>(t) * s.cols + c];
                        ref += p;
                        mag += std::fabs(p);
                    }
                    const size_t o = static_cast<size_t>(t) * s.rows + r;
                    const double err = std::fabs(out1[o] - ref) / mag;
                    worst = std::max(worst, err);
                    ASSERT_LT(err, 1e-5) << s.rows << "x" << s.cols << " tokens " << n_tokens << " t " << t << " r " << r;
                    // Each output is one row's dot: the thread split must not change it.
                    ASSERT_EQ(out1[o], out3[o]) << s.rows << "x" << s.cols << " tokens " << n_tokens;
                }
        }
    }
    std::printf("[ops] matmul: max |err| / sum|w x| = %.3g\n", worst);
}

// ---- rms_norm / swiglu / softmax ------------------------------------------

TEST(Ops, RmsNormMatchesFloat64) {
    double worst = 0;
    uint32_t seed = 200;
    for (int n : {1, 7, 8, 64, 100, 4097}) {
        for (float eps : {1e-5f, 1e-6f}) {
            std::vector<float> x = random_floats(static_cast<size_t>(n), seed++, -3.0f, 3.0f);
            std::vector<float> w = random_floats(static_cast<size_t>(n), seed++, 0.5f, 1.5f);
            double ss = 0;
            for (float v : x) ss += static_cast<double>(v) * v;
            const double scale = 1.0 / std::sqrt(ss / n + eps);
            std::vector<double> ref(static_cast<size_t>(n));
            for (int i = 0; i < n; ++i) ref[i] = x[i] * scale * w[i];

            std::vector<float> out(static_cast<size_t>(n));
            starkv::cpu::rms_norm(x.data(), w.data(), out.data(), n, eps);
            const double err = elementwise_rel_err(out.data(), ref.data(), ref.size(), 1e-20);
            EXPECT_LT(err, 1e-6) << "n=" << n;
            worst = std::max(worst, err);
            // In place (out aliases x) gives the same.
            std::vector<float> inplace = x;
            starkv::cpu::rms_norm(inplace.data(), w.data(), inplace.data(), n, eps);
            EXPECT_EQ(inplace, out) << "n=" << n;
        }
    }
    std::printf("[ops] rms_norm: max elementwise rel err = %.3g\n", worst);
}

TEST(Ops, SwigluMatchesFloat64) {
    double worst = 0;
    uint32_t seed = 300;
    for (int n : {1, 7, 172, 1001}) {
        std::vector<float> g = random_floats(static_cast<size_t>(n), seed++, -12.0f, 12.0f);
        std::vector<float> u = random_floats(static_cast<size_t>(n), seed++, -2.0f, 2.0f);
        if (n > 8) {  // extremes: silu's exp overflows / underflows in float
            g[0] = -100.0f;
            g[1] = 100.0f;
            g[2] = -88.0f;
            g[3] = 0.0f;
        }
        std::vector<double> ref(static_cast<size_t>(n));
        for (int i = 0; i < n; ++i) ref[i] = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
        std::vector<float> out(static_cast<size_t>(n));
        starkv::cpu::swiglu(g.data(), u.data(), out.data(), n);
        // Floor 1e-30: silu(-100) ~ -4e-42 is a float denormal; it may flush to -0.
        const double err = elementwise_rel_err(out.data(), ref.data(), ref.size(), 1e-30);
        EXPECT_LT(err, 1e-6) << "n=" << n;
        worst = std::max(worst, err);
        std::vector<float> inplace = g;
        starkv::cpu::swiglu(inplace.data(), u.data(), inplace.data(), n);
        EXPECT_EQ(inplace, out);
    }
    std::printf("[ops] swiglu: max elementwise rel err = %.3g\n", worst);
}

TEST(Ops, SoftmaxMatchesFloat64) {
    double worst = 0;
    uint32_t seed = 400;
    for (int n : {1, 2, 7, 64, 512, 1025}) {
        for (float offset : {0.0f, 1000.0f, -1000.0f}) {  // stability: large shifts change nothing
            std::vector<float> x = random_floats(static_cast<size_t>(n), seed++, -30.0f, 30.0f);
            for (float& v : x) v += offset;
            double mx = x[0];
            for (float v : x) mx = std::max(mx, static_cast<double>(v));
            std::vector<double> ref(static_cast<size_t>(n));
            double sum = 0;
            for (int i = 0; i < n; ++i) sum += ref[i] = std::exp(x[i] - mx);
            for (double& v : ref) v /= sum;
            std::vector<float> got = x;
            starkv::cpu::softmax(got.data(), n);
            // exp(y) has condition number |y|: the fp32 difference x_i - max alone
            // carries |x_i - max| * u/2 absolute error into the exponent. So the
            // bound on each element's relative error is (c + |x_i - max|) * u;
            // measured here as err_i / ((8 + |x_i - max|) * u) < 1.
            double err = 0;
            for (int i = 0; i < n; ++i) {
                const double rel = std::fabs(got[i] - ref[i]) / ref[i];
                const double bound = (8.0 + std::fabs(x[i] - mx)) * kU;
                err = std::max(err, rel / bound);
            }
            EXPECT_LT(err, 1.0) << "n=" << n << " offset " << offset;
            worst = std::max(worst, err);
        }
    }
    std::printf("[ops] softmax: max elementwise rel err / ((8 + |x_i - max|) u) = %.3g\n", worst);
}

// ---- RoPE --------------------------------------------------------------------

// transformers' _compute_default_rope_parameters: theta^(-2i/d), i < d/2.
std::vector<double> ref_default_inv_freq(double theta, int d) {
    std::vector<double> f(static_cast<size_t>(d / 2));
    for (int i = 0; i < d / 2; ++i) f[static_cast<size_t>(i)] = 1.0 / std::pow(theta, 2.0 * i / d);
    return f;
}

// transformers' _compute_llama3_parameters, transcribed in float64.
std::vector<double> ref_llama3_inv_freq(double theta, int d, double factor, double low_freq_factor,
                                        double high_freq_factor, double old_context_len) {
    std::vector<double> inv_freq = ref_default_inv_freq(theta, d);
    const double low_freq_wavelen = old_context_len / low_freq_factor;
    const double high_freq_wavelen = old_context_len / high_freq_factor;
    std::vector<double> out(inv_freq.size());
    for (size_t i = 0; i < inv_freq.size(); ++i) {
        const double wavelen = 2 * kPi / inv_freq[i];
        // inv_freq_llama = where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        double llama = wavelen > low_freq_wavelen ? inv_freq[i] / factor : inv_freq[i];
        const double smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
        const double smoothed = (1 - smooth_factor) * llama / factor + smooth_factor * llama;
        const bool is_medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
        out[i] = is_medium ? smoothed : llama;
    }
    return out;
}

// Rotates heads in float64. Adjacent: pairs (2i, 2i+1); HalfSplit: (i, i + d/2).
std::vector<double> ref_rope(const std::vector<float>& x, int n_heads, int head_dim, double pos,
                             const std::vector<double>& inv_freq, starkv::RopeLayout layout) {
    std::vector<double> out(x.begin(), x.end());
    const int half = head_dim / 2;
    for (int h = 0; h < n_heads; ++h) {
        double* v = out.data() + static_cast<size_t>(h) * head_dim;
        for (int i = 0; i < half; ++i) {
            const double a = pos * inv_freq[static_cast<size_t>(i)];
            const int i0 = layout == starkv::RopeLayout::Adjacent ? 2 * i : i;
            const int i1 = layout == starkv::RopeLayout::Adjacent ? 2 * i + 1 : i + half;
            const double x0 = v[i0], x1 = v[i1];
            v[i0] = x0 * std::cos(a) - x1 * std::sin(a);
            v[i1] = x0 * std::sin(a) + x1 * std::cos(a);
        }
    }
    return out;
}

// Applies the runtime's table to random heads at many positions; returns the
// worst per-head error relative to the head's largest input.
double check_rope(const starkv::RopeConfig& cfg, const std::vector<double>& ref_inv_freq, double pos_divisor,
                  uint32_t seed) {
    starkv::cpu::RopeTable table(cfg);
    EXPECT_EQ(table.inv_freq().size(), ref_inv_freq.size());
    for (size_t i = 0; i < ref_inv_freq.size() && i < table.inv_freq().size(); ++i)
        EXPECT_NEAR(table.inv_freq()[i] * pos_divisor / ref_inv_freq[i], 1.0, 1e-12) << "pair " << i;
    double worst = 0;
    const int head_dim = cfg.n_dims;
    for (int n_heads : {1, 3, 8}) {
        for (int pos : {0, 1, 2, 7, 100, 511, 1000, 2047, 4095, 8191, 32767}) {
            std::vector<float> x = random_floats(static_cast<size_t>(n_heads) * head_dim, seed++);
            // The textbook reference for linear scaling rotates by position / factor
            // with the unscaled frequencies (pos_divisor = factor).
            std::vector<double> ref = ref_rope(x, n_heads, head_dim, pos / pos_divisor, ref_inv_freq, cfg.layout);
            std::vector<float> got = x;
            table.apply(got.data(), n_heads, head_dim, pos);
            for (int h = 0; h < n_heads; ++h) {
                const size_t o = static_cast<size_t>(h) * head_dim;
                double mx = 0, diff = 0;
                for (int d = 0; d < head_dim; ++d) {
                    mx = std::max(mx, std::fabs(static_cast<double>(x[o + d])));
                    diff = std::max(diff, std::fabs(got[o + d] - ref[o + d]));
                }
                const double err = diff / mx;
                EXPECT_LT(err, 1e-6) << "head_dim " << head_dim << " pos " << pos << " head " << h;
                worst = std::max(worst, err);
            }
        }
    }
    return worst;
}

TEST(Ops, RopeBothLayoutsMatchTextbook) {
    double worst = 0;
    uint32_t seed = 500;
    for (starkv::RopeLayout layout : {starkv::RopeLayout::Adjacent, starkv::RopeLayout::HalfSplit}) {
        for (int head_dim : {2, 8, 64, 96, 128}) {
            for (float theta : {10000.0f, 500000.0f}) {
                starkv::RopeConfig cfg;
                cfg.theta = theta;
                cfg.n_dims = head_dim;
                cfg.layout = layout;
                worst = std::max(worst, check_rope(cfg, ref_default_inv_freq(theta, head_dim), 1.0, seed));
                seed += 1000;
            }
        }
    }
    std::printf("[ops] rope (adjacent + half-split, no scaling): max err / max|x| = %.3g\n", worst);
}

TEST(Ops, RopeLinearScalingIsPositionOverFactor) {
    double worst = 0;
    uint32_t seed = 600;
    for (starkv::RopeLayout layout : {starkv::RopeLayout::Adjacent, starkv::RopeLayout::HalfSplit}) {
        for (float factor : {2.0f, 4.0f, 8.0f}) {
            starkv::RopeConfig cfg;
            cfg.theta = 10000.0f;
            cfg.n_dims = 64;
            cfg.layout = layout;
            cfg.scaling = starkv::RopeScaling::Linear;
            cfg.factor = factor;
            worst = std::max(worst, check_rope(cfg, ref_default_inv_freq(10000.0, 64), factor, seed));
            seed += 1000;
        }
    }
    std::printf("[ops] rope linear scaling: max err / max|x| = %.3g\n", worst);
}

TEST(Ops, RopeLlama3ScalingMatchesTransformers) {
    struct P {
        float theta;
        int dim;
        float factor, low, high;
        int orig;
    };
    double worst = 0;
    uint32_t seed = 700;
    // Llama 3.1 8B, Llama 3.2 1B/3B, and a small odd set whose medium band
    // holds several pairs of a small head.
    for (P p : {P{500000.0f, 128, 8.0f, 1.0f, 4.0f, 8192}, P{500000.0f, 64, 32.0f, 1.0f, 4.0f, 8192},
                P{10000.0f, 16, 4.0f, 1.0f, 4.0f, 64}, P{10000.0f, 32, 3.0f, 0.5f, 8.0f, 100}}) {
        std::vector<double> ref = ref_llama3_inv_freq(p.theta, p.dim, p.factor, p.low, p.high, p.orig);
        // All three bands must be exercised by at least one configuration.
        const std::vector<double> base = ref_default_inv_freq(p.theta, p.dim);
        int n_low = 0, n_mid = 0, n_high = 0;
        for (size_t i = 0; i < ref.size(); ++i) {
            const double r = ref[i] / base[i];
            if (std::fabs(r - 1.0) < 1e-15) ++n_high;
            else if (std::fabs(r - 1.0 / p.factor) < 1e-15) ++n_low;
            else ++n_mid;
        }
        if (p.dim == 128) {
            EXPECT_GT(n_low, 0);
            EXPECT_GT(n_mid, 0);
            EXPECT_GT(n_high, 0);
        }
        for (starkv::RopeLayout layout : {starkv::RopeLayout::Adjacent, starkv::RopeLayout::HalfSplit}) {
            starkv::RopeConfig cfg;
            cfg.theta = p.theta;
            cfg.n_dims = p.dim;
            cfg.layout = layout;
            cfg.scaling = starkv::RopeScaling::Llama3;
            cfg.factor = p.factor;
            cfg.low_freq_factor = p.low;
            cfg.high_freq_factor = p.high;
            cfg.original_max_pos = p.orig;
            worst = std::max(worst, check_rope(cfg, ref, 1.0, seed));
            seed += 1000;
        }
    }
    std::printf("[ops] rope llama3 scaling: max err / max|x| = %.3g\n", worst);
}

TEST(Ops, RopeFreqFactorsDivideFrequencies) {
    // llama.cpp stores Llama 3.1 scaling as rope_freqs.weight: per-pair divisors
    // base_freq / llama3_freq. With those and no scaling the table must equal the
    // llama3 reference (to float rounding of the divisors).
    const int dim = 128;
    std::vector<double> base = ref_default_inv_freq(500000.0, dim);
    std::vector<double> llama3 = ref_llama3_inv_freq(500000.0, dim, 8.0, 1.0, 4.0, 8192);
    starkv::RopeConfig cfg;
    cfg.theta = 500000.0f;
    cfg.n_dims = dim;
    for (size_t i = 0; i < base.size(); ++i) cfg.freq_factors.push_back(static_cast<float>(base[i] / llama3[i]));
    std::vector<double> expected(base.size());
    for (size_t i = 0; i < base.size(); ++i) expected[i] = base[i] / static_cast<double>(cfg.freq_factors[i]);
    const double worst = check_rope(cfg, expected, 1.0, 800);
    starkv::cpu::RopeTable table(cfg);
    for (size_t i = 0; i < base.size(); ++i) EXPECT_NEAR(table.inv_freq()[i] / llama3[i], 1.0, 1e-7);
    std::printf("[ops] rope freq_factors: max err / max|x| = %.3g\n", worst);
}

// ---- attention -----------------------------------------------------------------

TEST(Ops, AttentionOneGqaMatchesNaiveFloat64) {
    double worst = 0;
    uint32_t seed = 900;
    const int n_head = 8;
    for (int n_head_kv : {2, 4, 8}) {
        for (int head_dim : {8, 12, 64}) {
            for (int pad : {0, 5}) {  // a kv row stride wider than the row
                for (int pos : {0, 1, 6, 63, 200}) {
                    const size_t kvd = static_cast<size_t>(n_head_kv) * head_dim;
                    const size_t stride = kvd + static_cast<size_t>(pad);
                    const int n_keys = pos + 1;
                    std::vector<float> q = random_floats(static_cast<size_t>(n_head) * head_dim, seed++, -2.0f, 2.0f);
                    std::vector<float> k = random_floats(stride * n_keys, seed++, -2.0f, 2.0f);
                    std::vector<float> v = random_floats(stride * n_keys, seed++);
                    std::vector<float> out(static_cast<size_t>(n_head) * head_dim, NAN);
                    // exactly what the contract asks: group * (pos + 1)
                    std::vector<float> scratch(static_cast<size_t>(n_head / n_head_kv) * n_keys);
                    starkv::cpu::attention_one(q.data(), k.data(), v.data(), stride, pos, n_head, n_head_kv, head_dim,
                                               out.data(), scratch.data());

                    const int group = n_head / n_head_kv;  // query head h reads kv head h / group (HF repeat_kv)
                    for (int h = 0; h < n_head; ++h) {
                        const int kvh = h / group;
                        std::vector<double> s(static_cast<size_t>(n_keys));
                        double mx = -1e300;
                        for (int t = 0; t < n_keys; ++t) {
                            double d = 0;
                            for (int i = 0; i < head_dim; ++i)
                                d += static_cast<double>(q[static_cast<size_t>(h) * head_dim + i]) *
                                     k[t * stride + static_cast<size_t>(kvh) * head_dim + i];
                            s[t] = d / std::sqrt(static_cast<double>(head_dim));
                            mx = std::max(mx, s[t]);
                        }
                        double sum = 0;
                        for (double& x : s) sum += x = std::exp(x - mx);
                        double vmax = 0, diff = 0;
                        for (int i = 0; i < head_dim; ++i) {
                            double o = 0;
                            for (int t = 0; t < n_keys; ++t) {
                                const double vt = v[t * stride + static_cast<size_t>(kvh) * head_dim + i];
                                o += s[t] / sum * vt;
                                vmax = std::max(vmax, std::fabs(vt));
                            }
                            diff = std::max(diff, std::fabs(out[static_cast<size_t>(h) * head_dim + i] - o));
                        }
                        const double err = diff / vmax;
                        ASSERT_LT(err, 1e-5) << "n_head_kv " << n_head_kv << " head_dim " << head_dim << " pos " << pos
                                             << " head " << h;
                        worst = std::max(worst, err);
                    }
                }
            }
        }
    }
    std::printf("[ops] attention_one (GQA 8/2, 8/4, 8/8): max err / max|v| = %.3g\n", worst);
}

}  // namespace
