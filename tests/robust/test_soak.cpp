// Load: many threads run many sessions over one shared model, with random
// prompts, generation cancelled by the callback, rewinds, resets and scoring.
// No crash, every session's transcript equals a sequential rerun with the same
// seed, and the resident memory of a second identical round stays flat.
// Sizes: STARKV_SOAK_THREADS (8), STARKV_SOAK_SESSIONS per thread (50; 4
// under a sanitizer). Registered with the ctest label "soak".
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "robust_util.h"

namespace {

using namespace starkv_robust;

const char* kWords[] = {"Once", "upon", "a", "time", "there", "was", "little", "girl", "named", "Lily",
                        "she", "loved", "to", "play", "with", "her", "dog", "in", "the", "park",
                        "One", "day", "Ben", "saw", "big", "red", "ball", "and", "said", "happy"};

struct StopAfter {
    int left;
};

bool stop_after(const char*, size_t, starkv_token, void* ud) {
    auto* s = static_cast<StopAfter*>(ud);
    return --s->left > 0;
}

// One session; everything observable goes into the transcript.
std::vector<int64_t> run_session(const starkv_model* model, uint64_t seed, uint32_t n_threads) {
    std::mt19937_64 rng(seed);
    std::vector<int64_t> tr;
    auto rnd = [&](int lo, int hi) { return static_cast<int>(lo + rng() % static_cast<uint64_t>(hi - lo + 1)); };
    auto prompt = [&] {
        std::string s;
        for (int i = rnd(2, 12); i > 0; --i) s += std::string(s.empty() ? "" : " ") + kWords[rng() % 30];
        return tokenize(model, s, true);
    };
    starkv_context_params cp;
    starkv_context_params_default(&cp);
    cp.n_ctx = 96;
    cp.n_threads = n_threads;
    cp.seed = seed;
    starkv_context* raw = nullptr;
    const starkv_status cs = starkv_context_create(model, &cp, &raw);
    tr.push_back(cs);
    if (cs != STARKV_OK) return tr;
    ContextPtr ctx(raw);
    starkv_sampler_params sp;
    starkv_sampler_params_default(&sp);
    sp.seed = seed * 7 + 1;
    sp.temperature = rng() % 4 == 0 ? 0.0f : 0.9f;
    starkv_sampler* s = nullptr;
    tr.push_back(starkv_sampler_create(&sp, &s));
    SamplerPtr sampler(s);
    std::vector<starkv_token> p = prompt();
    for (int step = rnd(2, 5); step > 0; --step) {
        starkv_generate_params gp;
        starkv_generate_params_default(&gp);
        gp.max_tokens = rnd(4, 40);
        StopAfter stop{rnd(1, 20)};
        if (rng() % 3 == 0) {
            gp.on_piece = stop_after;
            gp.user_data = &stop;
        }
        starkv_generate_result res;
        starkv_generate_result_default(&res);
        tr.push_back(starkv_generate(ctx.get(), rng() % 2 ? sampler.get() : nullptr, p.data(), p.size(), &gp, &res));
        tr.push_back(res.n_generated);
        tr.push_back(res.stop_reason);
        tr.push_back(starkv_context_n_past(ctx.get()));
        const float* logits = nullptr;
        if (starkv_context_logits(ctx.get(), -1, &logits) == STARKV_OK) {
            int best = 0;
            for (int i = 1; i < 512; ++i)
                if (logits[i] > logits[best]) best = i;
            tr.push_back(best);
        }
        switch (rng() % 4) {
            case 0: tr.push_back(starkv_context_rewind(ctx.get(), rng() % (starkv_context_n_past(ctx.get()) + 1))); p.clear(); break;
            case 1: tr.push_back(starkv_context_reset(ctx.get())); p = prompt(); break;
            case 2: {
                const auto t = prompt();
                double nll = 0;
                size_t n = 0;
                tr.push_back(starkv_context_score(ctx.get(), t.data(), t.size(), &nll, &n));
                tr.push_back(static_cast<int64_t>(nll * 1e6));
                p = prompt();
                break;
            }
            default: p.clear();  // continue the text
        }
    }
    return tr;
}

using Transcripts = std::vector<std::vector<std::vector<int64_t>>>;

Transcripts parallel_round(const starkv_model* model, int threads, int sessions) {
    Transcripts out(static_cast<size_t>(threads));
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            for (int i = 0; i < sessions; ++i)
                out[t].push_back(run_session(model, 1000u * static_cast<uint64_t>(t) + static_cast<uint64_t>(i), 1 + t % 2));
        });
    for (auto& th : pool) th.join();
    return out;
}

TEST(Soak, ConcurrentSessionsMatchSequential) {
    const int threads = env_int("STARKV_SOAK_THREADS", 8);
    const int sessions = env_int("STARKV_SOAK_SESSIONS", sanitized() ? 4 : 50);
    ModelPtr model = load_stories();
    ASSERT_TRUE(model);
    const Transcripts first = parallel_round(model.get(), threads, sessions);
    const size_t rss_after_first = rss_bytes();
    const Transcripts second = parallel_round(model.get(), threads, sessions);
    const size_t rss_after_second = rss_bytes();
    size_t checked = 0;
    for (int t = 0; t < threads; ++t)
        for (int i = 0; i < sessions; ++i) {
            const auto seq = run_session(model.get(), 1000u * static_cast<uint64_t>(t) + static_cast<uint64_t>(i), 1 + t % 2);
            ASSERT_EQ(first[t][i], seq) << "thread " << t << " session " << i;
            ASSERT_EQ(second[t][i], seq) << "thread " << t << " session " << i;
            ASSERT_EQ(seq.at(0), STARKV_OK);
            ++checked;
        }
    EXPECT_EQ(checked, static_cast<size_t>(threads * sessions));
    // Memory flat: a second identical round does not grow the process (the
    // first one warmed the allocator's per-thread arenas).
    if (!sanitized()) {
        const size_t margin = 16u << 20;
        EXPECT_LE(rss_after_second, rss_after_first + margin)
            << "RSS grew from " << rss_after_first << " to " << rss_after_second << " bytes";
    }
    RecordProperty("sessions", threads * sessions * 3);
}

// A load-generate-free loop whose point is the leak check: under ASan
// (detect_leaks=1) LeakSanitizer reports any block still allocated at exit;
// without a sanitizer the resident memory must stay flat.
TEST(LeakCheck, LoadGenerateFreeLoop) {
    const int iterations = env_int("STARKV_LEAK_ITERATIONS", sanitized() ? 20 : 50);
    size_t rss_warm = 0;
    for (int i = 0; i < iterations; ++i) {
        ModelPtr model = load_stories();
        ASSERT_TRUE(model);
        const auto seq = run_session(model.get(), static_cast<uint64_t>(i), 1);
        ASSERT_EQ(seq.at(0), STARKV_OK);
        model.reset();
        if (i == 4) rss_warm = rss_bytes();
    }
    if (!sanitized() && iterations > 5)
        EXPECT_LE(rss_bytes(), rss_warm + (8u << 20)) << "RSS grew over " << iterations << " load/free cycles";
}

}  // namespace
