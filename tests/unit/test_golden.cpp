// End-to-end checks on stories260K:
//  - greedy decoding from BOS for 256 steps reproduces Karpathy's documented
//    run.c output (../shared/golden/stories260K_greedy_from_bos_256.txt);
//  - the KV-cache path equals recomputation: token-by-token decoding gives the
//    logits of one batched eval (to 1e-5 relative), and rewind(k) + re-eval
//    reproduces them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "model/context.h"
#include "model/loader.h"
#include "model/model.h"
#include "ref_math.h"
#include "sampling/generate.h"
#include "sampling/sampler.h"
#include "test_paths.h"

namespace {

std::shared_ptr<const starkv::Model> load_stories() {
    return std::make_shared<const starkv::Model>(starkv::load_gguf(starkv_test::stories_model(), nullptr));
}

TEST(Golden, GreedyFromBos256MatchesRunC) {
    auto model = load_stories();
    std::string golden = starkv_test::read_file(starkv_test::shared_path("golden/stories260K_greedy_from_bos_256.txt"));
    ASSERT_FALSE(golden.empty());
    ASSERT_EQ(golden.back(), '\n');
    golden.pop_back();

    starkv::ContextOptions co;
    co.n_ctx = 512;
    co.n_threads = 2;
    starkv::Context ctx(model, co);
    starkv::SamplerOptions so;
    so.temperature = 0.0f;
    starkv::Sampler sampler(so);
    std::string text;
    int pieces = 0;
    const std::vector<int32_t> prompt = {model->tokenizer().vocab().bos};
    starkv::GenerateResult r = starkv::generate(ctx, sampler, prompt, 256, false,
                                                [&](const std::string& piece, int32_t) {
                                                    text += piece;
                                                    ++pieces;
                                                    return true;
                                                });
    EXPECT_EQ(r.n_generated, 256);
    EXPECT_EQ(r.stop, starkv::StopReason::MaxTokens);
    EXPECT_EQ(ctx.n_past(), 1 + 256);
    EXPECT_EQ(text, golden);
    std::printf("[golden] 256 greedy tokens, %d pieces, %zu bytes, equal to golden: %s\n", pieces, text.size(),
                text == golden ? "yes" : "no");
}

// max over positions of max|a - b| / max|b|.
double worst_rel(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
    double worst = 0;
    EXPECT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size() && i < b.size(); ++i)
        worst = std::max(worst, starkv_test::normwise_rel_err(a[i].data(), b[i].data(), b[i].size()));
    return worst;
}

TEST(Golden, KvCacheEqualsRecomputation) {
    auto model = load_stories();
    const int V = model->config().n_vocab;
    // 150 tokens: the batched eval spans three 64-token micro-batches.
    std::string text = starkv_test::read_file(starkv_test::shared_path("data/tinystories_val.txt")).substr(0, 2000);
    std::vector<int32_t> tokens = model->tokenizer().tokenize(text, true, false);
    ASSERT_GE(tokens.size(), 150u);
    tokens.resize(150);
    const int n = static_cast<int>(tokens.size());

    starkv::ContextOptions co;
    co.n_ctx = 256;
    co.n_threads = 2;

    // One batched eval, all logits.
    starkv::Context batched(model, co);
    batched.eval(tokens.data(), tokens.size(), true);
    std::vector<std::vector<float>> full;
    for (int i = 0; i < n; ++i) full.emplace_back(batched.logits(i), batched.logits(i) + V);

    // Token by token through the cache.
    starkv::Context step(model, co);
    std::vector<std::vector<float>> inc;
    for (int i = 0; i < n; ++i) {
        step.eval(&tokens[static_cast<size_t>(i)], 1, false);
        inc.emplace_back(step.logits(-1), step.logits(-1) + V);
    }
    const double e_inc = worst_rel(inc, full);
    EXPECT_LT(e_inc, 1e-5);

    // Uneven chunks (crossing micro-batch edges) through the cache.
    starkv::Context chunked(model, co);
    std::vector<std::vector<float>> ch;
    for (int i = 0, len = 1; i < n; i += len, len = len * 3 % 70 + 1) {
        const int m = std::min(len, n - i);
        chunked.eval(&tokens[static_cast<size_t>(i)], static_cast<size_t>(m), true);
        for (int j = 0; j < m; ++j) ch.emplace_back(chunked.logits(j), chunked.logits(j) + V);
    }
    const double e_chunk = worst_rel(ch, full);
    EXPECT_LT(e_chunk, 1e-5);

    // rewind(k) then re-eval the rest reproduces the same logits, also after
    // other tokens were written into the cache past k.
    double e_rewind = 0;
    for (int k : {0, 1, 63, 64, 100, 149}) {
        batched.rewind(k);
        EXPECT_EQ(batched.n_past(), k);
        EXPECT_EQ(batched.logits(-1), nullptr);
        std::vector<int32_t> other(static_cast<size_t>(n - k), 7);  // overwrite the cache past k
        batched.eval(other.data(), other.size(), false);
        batched.rewind(k);
        batched.eval(tokens.data() + k, static_cast<size_t>(n - k), true);
        std::vector<std::vector<float>> again, want;
        for (int i = k; i < n; ++i) {
            again.emplace_back(batched.logits(i - k), batched.logits(i - k) + V);
            want.push_back(full[static_cast<size_t>(i)]);
        }
        const double e = worst_rel(again, want);
        EXPECT_LT(e, 1e-5) << "rewind to " << k;
        e_rewind = std::max(e_rewind, e);
    }
    std::printf("[golden] kv cache vs batched recomputation (%d tokens): token-by-token %.3g, uneven chunks %.3g, "
                "rewind + re-eval %.3g (max|a-b|/max|b|)\n",
                n, e_inc, e_chunk, e_rewind);
}

}  // namespace
