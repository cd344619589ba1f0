// The runtime's Llama forward against an independent float64 forward written
// here with plain loops. Only the fp32 weights and the config come from
// starkv::load_gguf (a separate load, not the runtime's Model); all the math
// (RMSNorm, adjacent-pair RoPE from the config's theta, GQA causal attention
// over every previous position, SwiGLU, output head) is done in double below.
//
// Checks:
//  - logits at every position of several prompts (incl. 200 tokens, which
//    spans the runtime's 64-token micro-batches): max over positions of
//    max|runtime - ref| / max|ref| < 1e-4;
//  - perplexity over the first 200 documents of tinystories_val.txt (split as
//    the CLI's `perplexity` does, BOS, cut to 512 tokens): score_tokens vs the
//    reference, relative difference < 1e-4.
// Under AddressSanitizer the perplexity uses the first 50 documents only
// (the float64 reference is naive and ASan slows it several times).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "model/context.h"
#include "model/loader.h"
#include "model/model.h"
#include "model/score.h"
#include "test_paths.h"

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kPerplexityDocs = 50;
#else
constexpr size_t kPerplexityDocs = 200;
#endif
constexpr int kPerplexityCtx = 512;

// y[r] = sum_c W[r][c] x[c], in double.
void ref_matvec(const starkv::Matrix& w, const std::vector<double>& x, std::vector<double>& y) {
    y.assign(static_cast<size_t>(w.rows), 0.0);
    for (int r = 0; r < w.rows; ++r) {
        const float* row = w.row(r);
        double s = 0;
        for (int c = 0; c < w.cols; ++c) s += static_cast<double>(row[c]) * x[static_cast<size_t>(c)];
        y[static_cast<size_t>(r)] = s;
    }
}

std::vector<double> ref_rms_norm(const std::vector<double>& x, const std::vector<float>& w, double eps) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
    std::vector<double> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] * scale * w[i];
    return out;
}

// A float64 Llama with its own KV cache; feed tokens one at a time.
class RefLlama {
public:
    explicit RefLlama(const starkv::LoadedModel& m) : m_(m), c_(m.config) {
        kc_.resize(static_cast<size_t>(c_.n_layer));
        vc_.resize(static_cast<size_t>(c_.n_layer));
    }

    void reset() {
        for (auto& k : kc_) k.clear();
        for (auto& v : vc_) v.clear();
        pos_ = 0;
    }

    // Appends one token at the next position; returns its logits.
    std::vector<double> step(int32_t token) {
        const int E = c_.n_embd, hd = c_.head_dim, nh = c_.n_head, nkv = c_.n_head_kv;
        const int kvd = nkv * hd;
        const int group = nh / nkv;
        const starkv::ModelWeights& w = m_.weights;
        std::vector<double> x(w.tok_embd.row(token), w.tok_embd.row(token) + E);
        std::vector<double> q, k, v, o, g, u;
        for (int l = 0; l < c_.n_layer; ++l) {
            const starkv::LayerWeights& L = w.layers[static_cast<size_t>(l)];
            std::vector<double> xn = ref_rms_norm(x, L.attn_norm, c_.rms_eps);
            ref_matvec(L.wq, xn, q);
            ref_matvec(L.wk, xn, k);
            ref_matvec(L.wv, xn, v);
            // RoPE, adjacent pairs (2i, 2i+1) of each head, angle pos * theta^(-2i/hd).
            for (int i = 0; i < hd / 2; ++i) {
                const double a = pos_ * std::pow(static_cast<double>(c_.rope.theta), -2.0 * i / hd);
                const double cs = std::cos(a), sn = std::sin(a);
                auto rot = [&](std::vector<double>& t, int heads) {
                    for (int h = 0; h < heads; ++h) {
                        double& x0 = t[static_cast<size_t>(h * hd + 2 * i)];
                        double& x1 = t[static_cast<size_t>(h * hd + 2 * i + 1)];
                        const double a0 = x0, a1 = x1;
                        x0 = a0 * cs - a1 * sn;
                        x1 = a0 * sn + a1 * cs;
                    }
                };
                rot(q, nh);
                rot(k, nkv);
            }
            std::vector<double>& K = kc_[static_cast<size_t>(l)];
            std::vector<double>& V = vc_[static_cast<size_t>(l)];
            K.insert(K.end(), k.begin(), k.end());
            V.insert(V.end(), v.begin(), v.end());
            // Causal attention over positions 0..pos, query head h reads kv head h / group.
            std::vector<double> att(static_cast<size_t>(nh * hd), 0.0);
            std::vector<double> s(static_cast<size_t>(pos_ + 1));
            for (int h = 0; h < nh; ++h) {
                const int kh = h / group;
                double mx = -1e300;
                for (int t = 0; t <= pos_; ++t) {
                    double d = 0;
                    for (int i = 0; i < hd; ++i)
                        d += q[static_cast<size_t>(h * hd + i)] * K[static_cast<size_t>(t * kvd + kh * hd + i)];
                    s[static_cast<size_t>(t)] = d / std::sqrt(static_cast<double>(hd));
                    mx = std::max(mx, s[static_cast<size_t>(t)]);
                }
                double sum = 0;
                for (double& e : s) sum += e = std::exp(e - mx);
                for (int t = 0; t <= pos_; ++t)
                    for (int i = 0; i < hd; ++i)
                        att[static_cast<size_t>(h * hd + i)] +=
                            s[static_cast<size_t>(t)] / sum * V[static_cast<size_t>(t * kvd + kh * hd + i)];
            }
            ref_matvec(L.wo, att, o);
            for (int i = 0; i < E; ++i) x[static_cast<size_t>(i)] += o[static_cast<size_t>(i)];
            // Feed-forward: down(silu(gate(xn)) * up(xn)).
            xn = ref_rms_norm(x, L.ffn_norm, c_.rms_eps);
            ref_matvec(L.w_gate, xn, g);
            ref_matvec(L.w_up, xn, u);
            for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
            ref_matvec(L.w_down, g, o);
            for (int i = 0; i < E; ++i) x[static_cast<size_t>(i)] += o[static_cast<size_t>(i)];
        }
        std::vector<double> xn = ref_rms_norm(x, w.output_norm, c_.rms_eps);
        std::vector<double> logits;
        ref_matvec(w.output.empty() ? w.tok_embd : w.output, xn, logits);
        ++pos_;
        return logits;
    }

private:
    const starkv::LoadedModel& m_;
    const starkv::ModelConfig& c_;
    std::vector<std::vector<double>> kc_, vc_;  // [layer][pos * kvd]
    int pos_ = 0;
};

double ref_nll(const std::vector<double>& logits, int32_t target) {
    double mx = logits[0];
    for (double v : logits) mx = std::max(mx, v);
    double sum = 0;
    for (double v : logits) sum += std::exp(v - mx);
    return -(logits[static_cast<size_t>(target)] - mx - std::log(sum));
}

// As the CLI's `perplexity` splits a file: lines of only whitespace separate
// documents; a document's lines are joined with '\n'.
std::vector<std::string> split_documents(const std::string& text) {
    std::vector<std::string> docs;
    std::string cur, line;
    std::istringstream in(text);
    while (std::getline(in, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) {
            if (!cur.empty()) docs.push_back(cur);
            cur.clear();
            continue;
        }
        if (!cur.empty()) cur += '\n';
        cur += line;
    }
    if (!cur.empty()) docs.push_back(cur);
    return docs;
}

class ReferenceForward : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        ref_weights_ = new starkv::LoadedModel(starkv::load_gguf(starkv_test::stories_model(), nullptr));
        model_ = new std::shared_ptr<const starkv::Model>(
            std::make_shared<const starkv::Model>(starkv::load_gguf(starkv_test::stories_model(), nullptr)));
    }
    static void TearDownTestSuite() {
        delete model_;
        delete ref_weights_;
        model_ = nullptr;
        ref_weights_ = nullptr;
    }
    static const starkv::Model& model() { return **model_; }

    static starkv::LoadedModel* ref_weights_;
    static std::shared_ptr<const starkv::Model>* model_;
};
starkv::LoadedModel* ReferenceForward::ref_weights_ = nullptr;
std::shared_ptr<const starkv::Model>* ReferenceForward::model_ = nullptr;

TEST_F(ReferenceForward, ConfigIsWhatTheReferenceImplements) {
    const starkv::ModelConfig& c = ref_weights_->config;
    EXPECT_EQ(c.rope.layout, starkv::RopeLayout::Adjacent);
    EXPECT_EQ(c.rope.scaling, starkv::RopeScaling::None);
    EXPECT_TRUE(c.rope.freq_factors.empty());
    EXPECT_EQ(c.rope.n_dims, c.head_dim);
    EXPECT_EQ(c.n_head * c.head_dim, c.n_embd);
    EXPECT_EQ(c.n_head % c.n_head_kv, 0);
    // stories260K: 5 layers, dim 64, 8 heads / 4 kv heads (GQA), vocab 512.
    EXPECT_EQ(c.n_layer, 5);
    EXPECT_EQ(c.n_embd, 64);
    EXPECT_EQ(c.n_head, 8);
    EXPECT_EQ(c.n_head_kv, 4);
    EXPECT_EQ(c.n_vocab, 512);
}

TEST_F(ReferenceForward, LogitsAtEveryPositionMatchFloat64) {
    const starkv::Tokenizer& tok = model().tokenizer();
    std::vector<std::vector<int32_t>> prompts;
    prompts.push_back(tok.tokenize("Once upon a time", true, false));
    prompts.push_back(tok.tokenize("The cat sat on the mat.", true, false));
    // 200 tokens of consecutive tinystories_val paragraphs (the file's
    // paragraphs are shorter than 200 tokens; joined as the file has them).
    {
        const std::vector<std::string> docs =
            split_documents(starkv_test::read_file(starkv_test::shared_path("data/tinystories_val.txt")));
        ASSERT_GT(docs.size(), 10u);
        std::string text;
        std::vector<int32_t> t;
        for (size_t i = 0; i < docs.size() && t.size() < 200; ++i) {
            text += (i ? "\n\n" : "") + docs[i];
            t = tok.tokenize(text, true, false);
        }
        ASSERT_GE(t.size(), 200u);
        t.resize(200);
        prompts.push_back(t);
    }

    RefLlama ref(*ref_weights_);
    const int V = model().config().n_vocab;
    double worst = 0;
    for (size_t pi = 0; pi < prompts.size(); ++pi) {
        const std::vector<int32_t>& p = prompts[pi];
        starkv::ContextOptions o;
        o.n_ctx = 512;
        o.n_threads = 2;
        starkv::Context ctx(*model_, o);
        ctx.eval(p.data(), p.size(), true);
        ref.reset();
        double prompt_worst = 0;
        for (size_t i = 0; i < p.size(); ++i) {
            const std::vector<double> want = ref.step(p[i]);
            const float* got = ctx.logits(static_cast<int>(i));
            ASSERT_NE(got, nullptr);
            double diff = 0, mag = 0;
            for (int j = 0; j < V; ++j) {
                diff = std::max(diff, std::fabs(got[j] - want[static_cast<size_t>(j)]));
                mag = std::max(mag, std::fabs(want[static_cast<size_t>(j)]));
            }
            const double err = diff / mag;
            EXPECT_LT(err, 1e-4) << "prompt " << pi << " position " << i;
            prompt_worst = std::max(prompt_worst, err);
        }
        std::printf("[reference] prompt %zu (%zu tokens): max over positions of max|a-b|/max|b| = %.3g\n", pi,
                    p.size(), prompt_worst);
        worst = std::max(worst, prompt_worst);
    }
    EXPECT_LT(worst, 1e-4);
}

TEST_F(ReferenceForward, PerplexityMatchesFloat64) {
    const starkv::Tokenizer& tok = model().tokenizer();
    std::vector<std::string> docs =
        split_documents(starkv_test::read_file(starkv_test::shared_path("data/tinystories_val.txt")));
    ASSERT_GE(docs.size(), kPerplexityDocs);
    docs.resize(kPerplexityDocs);

    starkv::ContextOptions o;
    o.n_ctx = kPerplexityCtx;
    o.n_threads = 2;
    starkv::Context ctx(*model_, o);
    RefLlama ref(*ref_weights_);
    double nll_rt = 0, nll_ref = 0, worst_doc = 0;
    size_t n_rt = 0, n_ref = 0, used = 0, longest = 0;
    for (const std::string& d : docs) {
        std::vector<int32_t> t = tok.tokenize(d, true, false);
        if (t.size() > static_cast<size_t>(kPerplexityCtx)) t.resize(kPerplexityCtx);
        if (t.size() < 2) continue;
        ++used;
        longest = std::max(longest, t.size());
        const starkv::ScoreResult r = starkv::score_tokens(ctx, t.data(), t.size());
        ref.reset();
        double doc_ref = 0;
        for (size_t i = 0; i + 1 < t.size(); ++i) doc_ref += ref_nll(ref.step(t[i]), t[i + 1]);
        nll_rt += r.nll_sum;
        n_rt += r.n_scored;
        nll_ref += doc_ref;
        n_ref += t.size() - 1;
        worst_doc = std::max(worst_doc, std::fabs(r.nll_sum - doc_ref) / doc_ref);
    }
    ASSERT_EQ(n_rt, n_ref);
    ASSERT_GT(n_ref, 0u);
    const double ppl_rt = std::exp(nll_rt / static_cast<double>(n_rt));
    const double ppl_ref = std::exp(nll_ref / static_cast<double>(n_ref));
    const double rel = std::fabs(ppl_rt - ppl_ref) / ppl_ref;
    std::printf("[reference] perplexity over %zu documents (%zu scored tokens, longest %zu, ctx %d): runtime %.6f, "
                "float64 %.6f, rel diff %.3g (worst document nll rel diff %.3g)\n",
                used, n_ref, longest, kPerplexityCtx, ppl_rt, ppl_ref, rel, worst_doc);
    EXPECT_LT(rel, 1e-4);
    EXPECT_LT(worst_doc, 1e-4);
    // In-domain sanity (models/README.md: about 4.2 to 4.6 on this file).
    EXPECT_GT(ppl_ref, 2.0);
    EXPECT_LT(ppl_ref, 10.0);
}

}  // namespace
