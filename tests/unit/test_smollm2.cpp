// SmolLM2-135M-Instruct (GGUF, Q4_1 projections + Q8_0 token embedding,
// byte-level BPE "gpt2" tokenizer with the "smollm" pre-tokenizer): a real
// model with realistic head sizes. Not in ../shared: scripts/fetch_smollm2.sh
// puts it in the user's cache; the tests skip visibly when it is absent.
//
// The token ids are compared with tests/golden/smollm2_tokens.txt, written by
// Hugging Face `tokenizers` (tests/golden/smollm2_tokens.py), not by starkv.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "model/context.h"
#include "model/loader.h"
#include "model/model.h"
#include "model/score.h"
#include "test_paths.h"

using namespace starkv;

namespace {

std::string smollm2_path() {
    if (const char* env = std::getenv("STARKV_SMOLLM2_GGUF"); env && *env) return env;
    std::string cache;
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
        cache = x;
    else if (const char* h = std::getenv("HOME"); h && *h)
        cache = std::string(h) + "/.cache";
    return cache + "/starkv/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::string golden_path() {
    // tests/unit/ -> tests/golden/
    return (std::filesystem::path(__FILE__).parent_path().parent_path() / "golden" / "smollm2_tokens.txt").string();
}

// The first max_bytes bytes of a file, cut after the last newline in them
// (as tests/golden/smollm2_tokens.py does).
std::string first_paragraphs(const std::string& path, size_t max_bytes) {
    std::string s = starkv_test::read_file(path).substr(0, max_bytes);
    return s.substr(0, s.rfind('\n') + 1);
}

std::string unhex(const std::string& h) {
    std::string out;
    for (size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
    return out;
}

struct GoldenCase {
    std::string text;
    bool special = false;
    std::vector<int32_t> ids;
};

std::vector<GoldenCase> read_golden() {
    std::vector<GoldenCase> cases;
    std::ifstream in(golden_path());
    EXPECT_TRUE(in.good()) << "cannot read " << golden_path();
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        const size_t tab = line.find('\t');
        if (tab == std::string::npos) continue;
        GoldenCase c;
        c.text = unhex(line.substr(0, tab));
        const std::string marker = "SPECIAL:";
        if (c.text.rfind(marker, 0) == 0) {
            c.special = true;
            c.text = c.text.substr(marker.size());
        }
        std::istringstream ids(line.substr(tab + 1));
        for (int32_t id; ids >> id;) c.ids.push_back(id);
        cases.push_back(std::move(c));
    }
    return cases;
}

std::string show(const std::vector<int32_t>& ids, size_t from, size_t n) {
    std::string s;
    for (size_t i = from; i < ids.size() && i < from + n; ++i) s += std::to_string(ids[i]) + " ";
    return s;
}

class SmolLM2 : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        const std::string path = smollm2_path();
        if (!std::filesystem::exists(path)) return;
        model_ = std::make_shared<const Model>(load_gguf(path, nullptr));
    }
    static void TearDownTestSuite() { model_.reset(); }

    void SetUp() override {
        if (!model_) GTEST_SKIP() << "SmolLM2 GGUF not found; run scripts/fetch_smollm2.sh (looked at " << smollm2_path()
                                  << ")";
    }

    static std::shared_ptr<const Model> model_;
};
std::shared_ptr<const Model> SmolLM2::model_;

TEST_F(SmolLM2, Config) {
    const ModelConfig& c = model_->config();
    EXPECT_EQ(c.architecture, "llama");
    EXPECT_EQ(c.n_layer, 30);
    EXPECT_EQ(c.n_embd, 576);
    EXPECT_EQ(c.n_ff, 1536);
    EXPECT_EQ(c.n_head, 9);
    EXPECT_EQ(c.n_head_kv, 3);
    EXPECT_EQ(c.head_dim, 64);
    EXPECT_EQ(c.n_vocab, 49152);
    EXPECT_EQ(c.n_ctx_train, 8192);
    EXPECT_FLOAT_EQ(c.rope.theta, 100000.0f);
    EXPECT_EQ(c.rope.n_dims, 64);
    EXPECT_NEAR(c.rms_eps, 1e-5f, 1e-9f);
    // The file has no output.weight: the LM head is the token embedding.
    EXPECT_TRUE(model_->weights().output.empty());
    EXPECT_EQ(model_->weights().lm_head().rows, 49152);
    EXPECT_EQ(model_->weights().layers.size(), 30u);

    const Vocab& v = model_->tokenizer().vocab();
    EXPECT_EQ(v.kind, TokenizerKind::Bpe);
    EXPECT_EQ(v.pre, "smollm");
    EXPECT_EQ(v.merges.size(), 48900u);
    EXPECT_EQ(v.bos, 1);
    EXPECT_EQ(v.eos, 2);
    EXPECT_FALSE(v.add_bos);
}

TEST_F(SmolLM2, QuantizedWeightsLookSane) {
    // Q4_1 / Q8_0 dequantized to fp32: finite, not all zero, plausible scale.
    const auto check = [](const Matrix& m, const char* name) {
        double ss = 0;
        size_t bad = 0;
        for (float f : m.data) {
            if (!std::isfinite(f)) ++bad;
            ss += static_cast<double>(f) * f;
        }
        const double rms = std::sqrt(ss / static_cast<double>(m.data.size()));
        EXPECT_EQ(bad, 0u) << name;
        EXPECT_GT(rms, 1e-3) << name;
        EXPECT_LT(rms, 10.0) << name;
    };
    const ModelWeights& w = model_->weights();
    check(w.tok_embd, "token_embd (Q8_0)");
    check(w.layers[0].wq, "blk.0.attn_q (Q4_1)");
    check(w.layers[29].w_down, "blk.29.ffn_down (Q4_1)");
}

TEST_F(SmolLM2, TokenIdsMatchHuggingFaceTokenizers) {
    const auto cases = read_golden();
    ASSERT_GE(cases.size(), 10u);
    const Tokenizer& tok = model_->tokenizer();
    int failures = 0;
    for (const auto& c : cases) {
        const std::vector<int32_t> got = tok.tokenize(c.text, false, c.special);
        if (got == c.ids) continue;
        ++failures;
        size_t i = 0;
        while (i < got.size() && i < c.ids.size() && got[i] == c.ids[i]) ++i;
        std::string near_text;
        {
            std::vector<int32_t> prefix(c.ids.begin(), c.ids.begin() + static_cast<long>(i));
            near_text = tok.detokenize(prefix);
            if (near_text.size() > 40) near_text = near_text.substr(near_text.size() - 40);
        }
        ADD_FAILURE() << "text " << ::testing::PrintToString(c.text.substr(0, 80)) << (c.text.size() > 80 ? "..." : "")
                      << "\n  first difference at token " << i << " (after ..." << ::testing::PrintToString(near_text)
                      << ")\n  expected: " << show(c.ids, i, 8) << "\n  got:      " << show(got, i, 8)
                      << "\n  sizes: expected " << c.ids.size() << ", got " << got.size();
    }
    EXPECT_EQ(failures, 0);
}

TEST_F(SmolLM2, RoundTripsDataFilesByteForByte) {
    const Tokenizer& tok = model_->tokenizer();
    for (const char* name : {"data/tinystories_val.txt", "data/wiki.test.raw", "data/tinyshakespeare_input.txt"}) {
        const std::string text = first_paragraphs(starkv_test::shared_path(name), 16384);
        ASSERT_FALSE(text.empty()) << name;
        const auto ids = tok.tokenize(text, false, false);
        EXPECT_LT(ids.size(), text.size()) << name;  // BPE must compress English
        const std::string back = tok.detokenize(ids);
        if (back != text) {
            size_t i = 0;
            while (i < back.size() && i < text.size() && back[i] == text[i]) ++i;
            ADD_FAILURE() << name << ": round trip differs at byte " << i << ": expected "
                          << ::testing::PrintToString(text.substr(i, 30)) << ", got "
                          << ::testing::PrintToString(back.substr(i, 30));
        }
    }
}

TEST_F(SmolLM2, GreedyAnswerIsSensible) {
    ContextOptions opt;
    opt.n_ctx = 256;
    Context ctx(model_, opt);
    const Tokenizer& tok = model_->tokenizer();
    const std::string prompt =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    std::vector<int32_t> ids = tok.tokenize(prompt, false, true);
    ASSERT_GT(ids.size(), 5u);
    EXPECT_EQ(ids.front(), 1);  // <|im_start|> (parsed as a special token)
    ctx.eval(ids.data(), ids.size(), false);
    std::vector<int32_t> out;
    for (int i = 0; i < 24; ++i) {
        const float* l = ctx.logits(-1);
        const int32_t next = static_cast<int32_t>(std::max_element(l, l + model_->config().n_vocab) - l);
        if (next == 2) break;  // <|im_end|>
        out.push_back(next);
        ctx.eval(&next, 1, false);
    }
    const std::string text = tok.detokenize(out);
    std::cout << "[ greedy  ] " << ::testing::PrintToString(text) << "\n";
    EXPECT_NE(text.find("Paris"), std::string::npos) << text;
}

TEST_F(SmolLM2, PerplexityOnTinyStoriesIsLow) {
    ContextOptions opt;
    opt.n_ctx = 1024;
    Context ctx(model_, opt);
    const std::string text = first_paragraphs(starkv_test::shared_path("data/tinystories_val.txt"), 2500);
    const auto ids = model_->tokenizer().tokenize(text, false, false);
    ASSERT_GT(ids.size(), 100u);
    ASSERT_LE(ids.size(), 1024u);
    const ScoreResult r = score_tokens(ctx, ids.data(), ids.size());
    const double ppl = std::exp(r.nll_sum / static_cast<double>(r.n_scored));
    std::cout << "[ ppl     ] " << ids.size() << " tokens, perplexity " << ppl << "\n";
    EXPECT_TRUE(std::isfinite(ppl));
    EXPECT_LT(ppl, 30.0);
    EXPECT_GT(ppl, 1.5);
}

}  // namespace
