// The abort callback: a long prefill, a generation and a scoring run stop with
// STARKV_ERR_CANCELLED, and the context stays usable with the documented state.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "api_util.h"

namespace starkv_test {
namespace {

// Counts the calls and asks to stop at the `stop_at`-th one (1-based; 0 = never).
struct AbortAfter {
    int calls = 0;
    int stop_at = 0;
    static bool fn(void* user) {
        auto* a = static_cast<AbortAfter*>(user);
        return ++a->calls == a->stop_at || (a->stop_at > 0 && a->calls > a->stop_at);
    }
};

// A prompt long enough for several micro-batches (the context evaluates 64 tokens at a time).
std::vector<starkv_token> long_prompt(const starkv_model* model) {
    std::string text;
    for (int i = 0; i < 12; ++i) text += "Once upon a time, there was a little girl named Lily. She loved to play outside. ";
    std::vector<starkv_token> t = tokenize(model, text, true);
    EXPECT_GT(t.size(), 200u);
    return t;
}

std::vector<float> last_logits(starkv_context* ctx) {
    const float* l = nullptr;
    EXPECT_STARKV_OK(starkv_context_logits(ctx, -1, &l));
    starkv_model_info info;
    starkv_model_info_default(&info);
    EXPECT_STARKV_OK(starkv_model_get_info(stories(), &info));
    return l ? std::vector<float>(l, l + info.n_vocab) : std::vector<float>{};
}

TEST(Abort, PrefillStopsBetweenMicroBatchesAndLeavesTheContextAsItWas) {
    const starkv_model* model = stories();
    ContextPtr ctx = make_context(model, 512);
    const std::vector<starkv_token> head = tokenize(model, "Tom had a red ball.", true);
    ASSERT_STARKV_OK(starkv_context_eval(ctx.get(), head.data(), head.size(), false));
    const uint32_t held = starkv_context_n_past(ctx.get());

    std::vector<starkv_token> prompt = long_prompt(model);
    prompt.erase(prompt.begin());  // continues the text: no second BOS
    AbortAfter stop{0, 3};         // lets two micro-batches through
    ASSERT_STARKV_OK(starkv_context_set_abort_callback(ctx.get(), &AbortAfter::fn, &stop));
    EXPECT_STARKV_ERROR(starkv_context_eval(ctx.get(), prompt.data(), prompt.size(), false), STARKV_ERR_CANCELLED);
    EXPECT_EQ(stop.calls, 3);
    EXPECT_EQ(starkv_context_n_past(ctx.get()), held);  // the partial prompt is forgotten
    const float* l = nullptr;
    EXPECT_STARKV_ERROR(starkv_context_logits(ctx.get(), -1, &l), STARKV_ERR_INVALID_ARGUMENT);

    // Cleared, the same call completes and equals a context that was never interrupted.
    ASSERT_STARKV_OK(starkv_context_set_abort_callback(ctx.get(), nullptr, nullptr));
    ASSERT_STARKV_OK(starkv_context_eval(ctx.get(), prompt.data(), prompt.size(), false));
    ContextPtr ref = make_context(model, 512);
    ASSERT_STARKV_OK(starkv_context_eval(ref.get(), head.data(), head.size(), false));
    ASSERT_STARKV_OK(starkv_context_eval(ref.get(), prompt.data(), prompt.size(), false));
    EXPECT_EQ(starkv_context_n_past(ctx.get()), starkv_context_n_past(ref.get()));
    EXPECT_EQ(last_logits(ctx.get()), last_logits(ref.get()));
}

TEST(Abort, GenerationKeepsTheEmittedTokensAndContinues) {
    const starkv_model* model = stories();
    const std::vector<starkv_token> prompt = tokenize(model, "Once upon a time", true);
    SamplerPtr greedy = make_sampler(0.0f);

    // Reference: 40 greedy tokens without interruption.
    ContextPtr ref = make_context(model, 512);
    std::string ref_text;
    starkv_generate_params gp;
    starkv_generate_params_default(&gp);
    gp.max_tokens = 40;
    gp.stop_at_eos = false;
    gp.on_piece = append_piece;
    gp.user_data = &ref_text;
    ASSERT_STARKV_OK(starkv_generate(ref.get(), greedy.get(), prompt.data(), prompt.size(), &gp, nullptr));

    // The prompt fits one micro-batch: call 1 is the prefill, calls 2.. precede each sampled token.
    ContextPtr ctx = make_context(model, 512);
    SamplerPtr greedy2 = make_sampler(0.0f);
    AbortAfter stop{0, 1 + 1 + 15};
    ASSERT_STARKV_OK(starkv_context_set_abort_callback(ctx.get(), &AbortAfter::fn, &stop));
    std::string text;
    gp.user_data = &text;
    EXPECT_STARKV_ERROR(starkv_generate(ctx.get(), greedy2.get(), prompt.data(), prompt.size(), &gp, nullptr),
                        STARKV_ERR_CANCELLED);
    EXPECT_EQ(starkv_context_n_past(ctx.get()), prompt.size() + 15);  // every emitted token is cached
    EXPECT_EQ(ref_text.compare(0, text.size(), text), 0) << text;

    // Continuing with an empty prompt gives the uninterrupted text.
    ASSERT_STARKV_OK(starkv_context_set_abort_callback(ctx.get(), nullptr, nullptr));
    gp.max_tokens = 25;
    ASSERT_STARKV_OK(starkv_generate(ctx.get(), greedy2.get(), nullptr, 0, &gp, nullptr));
    EXPECT_EQ(text, ref_text);
}

TEST(Abort, AnotherThreadCancelsThroughAFlag) {
    const starkv_model* model = stories();
    ContextPtr ctx = make_context(model, 2048);
    std::atomic<bool> cancel{false};
    std::atomic<int> pieces{0};
    auto read_flag = [](void* user) { return static_cast<std::atomic<bool>*>(user)->load(); };
    ASSERT_STARKV_OK(starkv_context_set_abort_callback(ctx.get(), read_flag, &cancel));
    starkv_generate_params gp;
    starkv_generate_params_default(&gp);
    gp.max_tokens = 2000;
    gp.stop_at_eos = false;
    gp.on_piece = [](const char*, size_t, starkv_token, void* user) {
        static_cast<std::atomic<int>*>(user)->fetch_add(1);
        return true;
    };
    gp.user_data = &pieces;
    std::thread canceller([&] {
        while (pieces.load() < 5) std::this_thread::yield();
        cancel.store(true);
    });
    const std::vector<starkv_token> prompt = tokenize(model, "Once upon a time", true);
    SamplerPtr greedy = make_sampler(0.0f);
    const starkv_status st = starkv_generate(ctx.get(), greedy.get(), prompt.data(), prompt.size(), &gp, nullptr);
    canceller.join();
    EXPECT_STARKV_ERROR(st, STARKV_ERR_CANCELLED);
    EXPECT_GE(pieces.load(), 5);
    EXPECT_LT(starkv_context_n_past(ctx.get()), 2048u);
}

TEST(Abort, ScoringStopsAndNullContextIsAnError) {
    const starkv_model* model = stories();
    ContextPtr ctx = make_context(model, 512);
    const std::vector<starkv_token> t = long_prompt(model);
    AbortAfter stop{0, 2};
    ASSERT_STARKV_OK(starkv_context_set_abort_callback(ctx.get(), &AbortAfter::fn, &stop));
    double nll = 0;
    size_t n = 0;
    EXPECT_STARKV_ERROR(starkv_context_score(ctx.get(), t.data(), t.size(), &nll, &n), STARKV_ERR_CANCELLED);
    EXPECT_STARKV_ERROR(starkv_context_set_abort_callback(nullptr, &AbortAfter::fn, &stop), STARKV_ERR_INVALID_ARGUMENT);
}

}  // namespace
}  // namespace starkv_test
