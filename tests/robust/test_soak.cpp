// Load: many threads run many sessions over one shared model, with random
// prompts, generation cancelled by the callback, rewinds, resets and scoring.
// No crash, every session's transcript equals a sequential rerun with the same
// seed, and the resident memory of a second identical round stays flat.
// Sizes: STARKV_SOAK_THREADS (8), STARKV_SOAK_SESSIONS per thread (50; 4
// under a sanitizer). Registered with the ctest label "soak".
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
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

int argmax512(const float* l) {
    int best = 0;
    for (int i = 1; i < 512; ++i)
        if (l[i] > l[best]) best = i;
    return best;
}

// One session on a pooled context with a small budget: prompts with shared
// prefixes (prefix reuse), forks, batched greedy decoding of every live
// sequence, truncations, removals, a full pool (eviction or KV_POOL_FULL),
// cancellation through the abort callback, and a save/restore round trip.
// What a pooled session went through (to check that the load covers it).
struct Coverage {
    int64_t reused = 0, forks = 0, batches = 0, pool_full = 0, cancelled = 0, restores = 0, evictions = 0;
};

std::vector<int64_t> run_pooled_session(const starkv_model* model, uint64_t seed, uint32_t n_threads,
                                        Coverage* cov = nullptr) {
    Coverage unused;
    Coverage& c = cov ? *cov : unused;
    std::mt19937_64 rng(seed);
    std::vector<int64_t> tr;
    auto rnd = [&](int lo, int hi) { return static_cast<int>(lo + rng() % static_cast<uint64_t>(hi - lo + 1)); };
    starkv_context_params cp;
    starkv_context_params_default(&cp);
    cp.n_ctx = 128;
    cp.n_threads = n_threads;
    starkv_pool_params pp;
    starkv_pool_params_default(&pp);
    pp.page_tokens = 8;
    pp.budget_bytes = 1280ull * 8 * 14;  // 14 pages of stories260K's 1280-byte tokens: fills up
    pp.max_sequences = 8;
    starkv_context* raw = nullptr;
    const starkv_status cs = starkv_context_create_pooled(model, &cp, &pp, &raw);
    tr.push_back(cs);
    if (cs != STARKV_OK) return tr;
    ContextPtr ctx(raw);
    bool cancel = false;
    tr.push_back(starkv_context_set_abort_callback(ctx.get(), [](void* u) { return *static_cast<bool*>(u); }, &cancel));
    const std::string stem = "Once upon a time there was a little girl named Lily";
    std::vector<starkv_seq_id> live;
    starkv_seq_id next_id = 1;
    for (int step = rnd(6, 14); step > 0; --step) {
        switch (rng() % 6) {
            case 0:
            case 1: {  // a new sequence: the shared stem plus random words, prefilled
                std::string text = stem;
                for (int i = rnd(0, 6); i > 0; --i) text += std::string(" ") + kWords[rng() % 30];
                const auto t = tokenize(model, text, true);
                const starkv_seq_id id = next_id++;
                tr.push_back(starkv_seq_create(ctx.get(), id));
                size_t reused = 0;
                const starkv_status st = starkv_seq_prefill(ctx.get(), id, t.data(), t.size(), &reused);
                tr.push_back(st);
                tr.push_back(static_cast<int64_t>(reused));
                c.reused += static_cast<int64_t>(reused);
                c.pool_full += st == STARKV_ERR_KV_POOL_FULL;
                if (st == STARKV_OK) live.push_back(id);
                else tr.push_back(starkv_seq_remove(ctx.get(), id));
                break;
            }
            case 2:
                if (!live.empty()) {  // fork a live sequence
                    const starkv_seq_id id = next_id++;
                    const starkv_status st = starkv_seq_fork(ctx.get(), live[rng() % live.size()], id);
                    tr.push_back(st);
                    c.forks += st == STARKV_OK;
                    if (st == STARKV_OK) live.push_back(id);
                }
                break;
            case 3:
                if (!live.empty()) {  // truncate or remove one
                    const size_t k = rng() % live.size();
                    uint32_t n = 0;
                    tr.push_back(starkv_seq_n_past(ctx.get(), live[k], &n));
                    if (rng() % 2 && n > 2) {
                        tr.push_back(starkv_seq_truncate(ctx.get(), live[k], 1 + static_cast<uint32_t>(rng() % (n - 1))));
                        tr.push_back(starkv_seq_remove(ctx.get(), live[k]));  // its logits are gone: drop it
                    } else {
                        tr.push_back(starkv_seq_remove(ctx.get(), live[k]));
                    }
                    live.erase(live.begin() + static_cast<long>(k));
                }
                break;
            case 4: {  // save every sequence, restore into a fresh pooled context, compare n_past
                size_t n = 0;
                tr.push_back(starkv_state_save(ctx.get(), nullptr, 0, nullptr, 0, &n));
                std::vector<uint8_t> buf(n);
                tr.push_back(starkv_state_save(ctx.get(), nullptr, 0, buf.data(), buf.size(), &n));
                starkv_context* other = nullptr;
                tr.push_back(starkv_context_create_pooled(model, &cp, &pp, &other));
                ContextPtr o(other);
                if (o) {
                    const starkv_status st = starkv_state_restore(o.get(), buf.data(), n, -1);
                    tr.push_back(st);
                    c.restores += st == STARKV_OK;
                    for (starkv_seq_id id : live) {
                        uint32_t a = 0, b = 0;
                        starkv_seq_n_past(ctx.get(), id, &a);
                        tr.push_back(starkv_seq_n_past(o.get(), id, &b));
                        tr.push_back(static_cast<int64_t>(a) - static_cast<int64_t>(b));
                    }
                }
                break;
            }
            default: {  // a few batched greedy steps over every live sequence; sometimes cancelled
                cancel = rng() % 5 == 0;
                for (int k = rnd(1, 6); k > 0 && !live.empty(); --k) {
                    std::vector<starkv_batch_item> items;
                    for (starkv_seq_id id : live) {
                        const float* l = nullptr;
                        uint32_t n = 0;
                        starkv_seq_n_past(ctx.get(), id, &n);
                        if (starkv_seq_logits(ctx.get(), id, &l) != STARKV_OK) continue;
                        items.push_back({argmax512(l), id, n, true});
                    }
                    if (items.empty()) break;
                    const starkv_status st = starkv_batch_eval(ctx.get(), items.data(), items.size());
                    tr.push_back(st);
                    c.batches += st == STARKV_OK;
                    c.pool_full += st == STARKV_ERR_KV_POOL_FULL;
                    c.cancelled += st == STARKV_ERR_CANCELLED;
                    if (st != STARKV_OK) break;  // full pool, full context or cancelled: nothing changed
                    for (const auto& it : items) tr.push_back(it.token);
                }
                cancel = false;
            }
        }
        starkv_pool_stats ps;
        starkv_pool_stats_default(&ps);
        tr.push_back(starkv_context_pool_stats(ctx.get(), &ps));
        tr.push_back(static_cast<int64_t>(ps.pages_used));
        tr.push_back(static_cast<int64_t>(ps.prefix_hit_tokens));
        c.evictions = static_cast<int64_t>(ps.evictions);
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

// The pool under load: every thread runs pooled sessions (forks, prefix reuse,
// batches, a full pool, cancellations, saved state); each transcript equals a
// sequential rerun.
TEST(Soak, ConcurrentPooledSessionsMatchSequential) {
    const int threads = env_int("STARKV_SOAK_THREADS", 8);
    const int sessions = env_int("STARKV_SOAK_SESSIONS", sanitized() ? 4 : 25);
    ModelPtr model = load_stories();
    ASSERT_TRUE(model);
    Transcripts par(static_cast<size_t>(threads));
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            for (int i = 0; i < sessions; ++i)
                par[t].push_back(run_pooled_session(model.get(), 7000u + 100u * static_cast<uint64_t>(t) + static_cast<uint64_t>(i), 1 + t % 2));
        });
    for (auto& th : pool) th.join();
    Coverage all;
    for (int t = 0; t < threads; ++t)
        for (int i = 0; i < sessions; ++i) {
            Coverage c;
            const auto seq = run_pooled_session(model.get(), 7000u + 100u * static_cast<uint64_t>(t) + static_cast<uint64_t>(i), 1 + t % 2, &c);
            ASSERT_EQ(par[t][i], seq) << "thread " << t << " session " << i;
            ASSERT_EQ(seq.at(0), STARKV_OK);
            all.reused += c.reused, all.forks += c.forks, all.batches += c.batches, all.pool_full += c.pool_full;
            all.cancelled += c.cancelled, all.restores += c.restores, all.evictions += c.evictions;
        }
    // The load reached what it is for (seeded: the same counts every run).
    EXPECT_GT(all.reused, 0);
    EXPECT_GT(all.forks, 0);
    EXPECT_GT(all.batches, 0);
    EXPECT_GT(all.restores, 0);
    EXPECT_GT(all.cancelled, 0);
    EXPECT_GT(all.pool_full + all.evictions, 0);
    std::printf("[soak] pooled: %lld reused tokens, %lld forks, %lld batches, %lld full, %lld cancelled, %lld restores, %lld evictions\n",
                static_cast<long long>(all.reused), static_cast<long long>(all.forks), static_cast<long long>(all.batches),
                static_cast<long long>(all.pool_full), static_cast<long long>(all.cancelled),
                static_cast<long long>(all.restores), static_cast<long long>(all.evictions));
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
