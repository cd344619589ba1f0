// The paged KV pool against a flat reference: every sequence as a plain
// vector of tokens and rows. Random operations (append, write, fork, write
// after fork, truncate, remove, prefix reuse, eviction) drive both; after
// each, every row the pool returns must equal the reference's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "core/error.h"
#include "kv/kv_state.h"
#include "kv/page_pool.h"

namespace starkv {
namespace {

// 2 layers x 2 KV heads x {K, V}; odd sizes and empty streams on purpose.
RowLayout test_layout() { return RowLayout(2, 2, {12, 4, 3, 0, 8, 5, 1, 0}); }

uint64_t splitmix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// What a model would store: a row that depends on the tokens up to its
// position and on its stream (so equal prefixes give equal rows, as prefix
// caching assumes).
std::vector<uint8_t> model_row(const std::vector<int32_t>& tokens, size_t pos, size_t stream, uint32_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i <= pos; ++i) h = splitmix(h ^ static_cast<uint32_t>(tokens[i]));
    std::vector<uint8_t> r(n);
    for (uint32_t b = 0; b < n; ++b) r[b] = static_cast<uint8_t>(splitmix(h + stream * 1000 + b));
    return r;
}

struct RefSeq {
    std::vector<int32_t> tokens;
    std::vector<std::vector<std::vector<uint8_t>>> rows;  // [pos][stream]
    bool dirty = false;  // a row was overwritten: its rows are no longer the model's, never commit
};

struct Harness {
    RowLayout layout = test_layout();
    PagePool pool;
    std::map<SeqId, RefSeq> ref;

    Harness(const PagePoolOptions& o) : pool(layout, o) {}

    void write_model_rows(SeqId id, size_t from) {
        RefSeq& r = ref[id];
        for (size_t pos = from; pos < r.tokens.size(); ++pos) {
            r.rows.resize(pos + 1);
            r.rows[pos].resize(layout.n_streams());
            for (int l = 0; l < layout.n_layer(); ++l)
                for (int h = 0; h < layout.n_head_kv(); ++h)
                    for (KvKind k : {KvKind::K, KvKind::V}) {
                        const size_t s = layout.stream(l, h, k);
                        r.rows[pos][s] = model_row(r.tokens, pos, s, layout.row_bytes(s));
                        if (!r.rows[pos][s].empty())
                            std::memcpy(pool.mutable_row(id, l, h, k, static_cast<int>(pos)), r.rows[pos][s].data(),
                                        r.rows[pos][s].size());
                    }
        }
    }

    // Appends tokens (status: what append threw, STARKV_OK if it did not).
    starkv_status append(SeqId id, const std::vector<int32_t>& toks) {
        try {
            pool.append(id, toks);
        } catch (const Error& e) {
            return e.status();
        }
        RefSeq& r = ref[id];
        const size_t from = r.tokens.size();
        r.tokens.insert(r.tokens.end(), toks.begin(), toks.end());
        write_model_rows(id, from);
        if (!r.dirty) pool.commit(id);
        return STARKV_OK;
    }

    void check() {
        ASSERT_EQ(pool.sequences().size(), ref.size());
        uint64_t tokens = 0;
        std::set<int32_t> pages;
        for (const auto& [id, r] : ref) {
            ASSERT_TRUE(pool.has(id));
            ASSERT_EQ(pool.length(id), static_cast<int>(r.tokens.size())) << "seq " << id;
            ASSERT_EQ(pool.tokens(id), r.tokens) << "seq " << id;
            tokens += r.tokens.size();
            for (int i = 0; i < pool.n_pages(id); ++i) pages.insert(pool.page_id(id, i));
            for (int l = 0; l < layout.n_layer(); ++l)
                for (int h = 0; h < layout.n_head_kv(); ++h)
                    for (KvKind k : {KvKind::K, KvKind::V}) {
                        const size_t s = layout.stream(l, h, k);
                        const uint32_t rb = layout.row_bytes(s);
                        if (rb == 0) continue;  // an empty stream
                        for (size_t pos = 0; pos < r.tokens.size(); ++pos)
                            ASSERT_EQ(0, std::memcmp(pool.row(id, l, h, k, static_cast<int>(pos)), r.rows[pos][s].data(), rb))
                                << "seq " << id << " pos " << pos << " stream " << s;
                        // The streaming view sees the same rows.
                        for (int p = 0; p < pool.n_pages(id); ++p) {
                            const PageSpan span = pool.page_span(id, p, l, h, k);
                            ASSERT_EQ(span.n_rows, std::min<int>(pool.page_tokens(),
                                                                 static_cast<int>(r.tokens.size()) - p * pool.page_tokens()));
                            for (int i = 0; i < span.n_rows; ++i)
                                ASSERT_EQ(0, std::memcmp(span.data + static_cast<size_t>(i) * rb,
                                                         r.rows[p * pool.page_tokens() + i][s].data(), rb));
                        }
                    }
        }
        const PagePoolStats st = pool.stats();
        EXPECT_EQ(st.n_sequences, ref.size());
        EXPECT_EQ(st.tokens, tokens);
        EXPECT_EQ(st.pages_used, pages.size());
        EXPECT_EQ(st.pages_used + st.pages_cached + st.pages_free, st.pages_total);
        EXPECT_LE(st.pages_allocated, st.pages_total);
        EXPECT_EQ(st.bytes_allocated, st.pages_allocated * st.page_bytes);
        EXPECT_LE(st.bytes_allocated, st.bytes_budget);
    }
};

struct RandomParam {
    int page_tokens;
    bool evict;
    uint32_t seed;
};

class PagePoolRandom : public ::testing::TestWithParam<RandomParam> {};

TEST_P(PagePoolRandom, MatchesFlatReference) {
    const RandomParam prm = GetParam();
    PagePoolOptions o;
    o.page_tokens = prm.page_tokens;
    o.evict_cached_prefixes = prm.evict;
    {
        PagePool probe(test_layout(), {prm.page_tokens, 1u << 30});
        o.budget_bytes = probe.page_bytes() * (60 / prm.page_tokens + 2);  // ~60 tokens: it fills up
    }
    Harness hx(o);
    std::mt19937 rng(prm.seed);
    auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
    // Prompts from a few shared openings, so prefixes repeat.
    const std::vector<std::vector<int32_t>> openings = {
        {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {1, 2, 3, 4, 9, 9, 9, 9, 9}, {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7}};
    auto random_tokens = [&](int n) {
        std::vector<int32_t> t(static_cast<size_t>(n));
        for (auto& x : t) x = pick(5);
        return t;
    };
    SeqId next_id = 0;
    int n_full = 0, n_reused = 0, n_cow = 0;
    for (int step = 0; step < 1500; ++step) {
        std::vector<SeqId> ids;
        for (const auto& [id, r] : hx.ref) ids.push_back(id);
        const int op = ids.empty() ? 0 : pick(9);
        const SeqId any = ids.empty() ? -1 : ids[static_cast<size_t>(pick(static_cast<int>(ids.size())))];
        switch (op) {
            case 0:
            case 1: {  // a new sequence: an opening, its cached prefix reused, then the rest computed
                if (hx.ref.size() >= 8) break;
                std::vector<int32_t> prompt = openings[static_cast<size_t>(pick(3))];
                prompt.resize(static_cast<size_t>(1 + pick(static_cast<int>(prompt.size()))));
                const auto tail = random_tokens(pick(4));
                prompt.insert(prompt.end(), tail.begin(), tail.end());
                const SeqId id = next_id++;
                hx.pool.create(id);
                hx.ref[id];
                const std::span<const int32_t> all(prompt);
                const int expect = hx.pool.lookup_prefix(all.first(prompt.size() - 1));
                const int got = hx.pool.reuse_prefix(id, all.first(prompt.size() - 1));
                ASSERT_EQ(got, expect);
                ASSERT_EQ(got % prm.page_tokens, 0);
                RefSeq& r = hx.ref[id];
                r.tokens.assign(prompt.begin(), prompt.begin() + got);
                r.rows.clear();
                // Reused rows are the model's rows for these tokens: the
                // reference computes them itself.
                for (int pos = 0; pos < got; ++pos) {
                    r.rows.emplace_back(hx.layout.n_streams());
                    for (size_t s = 0; s < hx.layout.n_streams(); ++s)
                        r.rows.back()[s] = model_row(r.tokens, static_cast<size_t>(pos), s, hx.layout.row_bytes(s));
                }
                n_reused += got > 0;
                const std::vector<int32_t> rest(prompt.begin() + got, prompt.end());
                if (hx.append(id, rest) != STARKV_OK) ++n_full;
                break;
            }
            case 2:
            case 3: {  // decode a few tokens
                const starkv_status s = hx.append(any, random_tokens(1 + pick(6)));
                if (s != STARKV_OK) {
                    ASSERT_EQ(s, STARKV_ERR_KV_POOL_FULL);
                    ++n_full;
                }
                break;
            }
            case 4: {  // fork
                if (hx.ref.size() >= 8) break;
                const SeqId id = next_id++;
                hx.pool.fork(any, id);
                hx.ref[id] = hx.ref[any];
                break;
            }
            case 5: {  // overwrite an existing row (copy-on-write when shared)
                RefSeq& r = hx.ref[any];
                if (r.tokens.empty()) break;
                const int pos = pick(static_cast<int>(r.tokens.size()));
                const int l = pick(2), h = pick(2);
                const KvKind k = pick(2) ? KvKind::V : KvKind::K;
                const size_t s = hx.layout.stream(l, h, k);
                if (hx.layout.row_bytes(s) == 0) break;
                const uint64_t cow = hx.pool.stats().cow_copies;
                uint8_t* p;
                try {
                    p = hx.pool.mutable_row(any, l, h, k, pos);
                } catch (const Error& e) {
                    ASSERT_EQ(e.status(), STARKV_ERR_KV_POOL_FULL);
                    ++n_full;
                    break;
                }
                n_cow += hx.pool.stats().cow_copies > cow;
                for (auto& b : r.rows[static_cast<size_t>(pos)][s]) b = static_cast<uint8_t>(rng());
                std::memcpy(p, r.rows[static_cast<size_t>(pos)][s].data(), hx.layout.row_bytes(s));
                r.dirty = true;
                break;
            }
            case 6: {  // truncate
                RefSeq& r = hx.ref[any];
                const int n = pick(static_cast<int>(r.tokens.size()) + 1);
                hx.pool.truncate(any, n);
                r.tokens.resize(static_cast<size_t>(n));
                r.rows.resize(static_cast<size_t>(n));
                break;
            }
            case 7:  // remove
                hx.pool.remove(any);
                hx.ref.erase(any);
                break;
            case 8:
                if (pick(8) == 0) hx.pool.clear_prefix_cache();
                break;
        }
        hx.check();
        if (::testing::Test::HasFatalFailure()) return;
        if (step % 250 == 249) {
            // The whole pool saved and restored into one of another page size
            // holds the reference's tokens and rows too.
            const std::vector<uint8_t> saved = save_kv_state(hx.pool, 77, hx.pool.sequences(), 1);
            Harness copy({prm.page_tokens + 1, 1u << 20});
            ASSERT_EQ(restore_kv_state(copy.pool, 77, saved), hx.pool.sequences());
            copy.ref = hx.ref;
            copy.check();
            if (::testing::Test::HasFatalFailure()) return;
        }
    }
    const PagePoolStats st = hx.pool.stats();
    // The run went where it should: full pool, reuse, copies, evictions.
    EXPECT_GT(n_full, 0);
    EXPECT_GT(n_reused, 0);
    EXPECT_GT(n_cow, 0);
    EXPECT_GT(st.prefix_hit_tokens, 0u);
    EXPECT_LE(st.prefix_hit_tokens, st.prefix_queried_tokens);
    if (prm.evict) EXPECT_GT(st.evictions, 0u);
    else EXPECT_EQ(st.evictions, 0u);
}

INSTANTIATE_TEST_SUITE_P(Pages, PagePoolRandom,
                         ::testing::Values(RandomParam{4, true, 1}, RandomParam{4, false, 2}, RandomParam{1, true, 3},
                                           RandomParam{3, true, 4}, RandomParam{5, false, 5}));

PagePool small_pool(int page_tokens, int n_pages, bool evict = true) {
    PagePoolOptions o;
    o.page_tokens = page_tokens;
    o.evict_cached_prefixes = evict;
    PagePool probe(test_layout(), {page_tokens, 1u << 30});
    o.budget_bytes = probe.page_bytes() * static_cast<uint64_t>(n_pages);
    return PagePool(test_layout(), o);
}

std::vector<int32_t> iota_tokens(int n, int from = 0) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) t[static_cast<size_t>(i)] = from + i;
    return t;
}

starkv_status status_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.status();
    }
    return STARKV_OK;
}

TEST(PagePool, LayoutAndCapacity) {
    const RowLayout layout = test_layout();
    EXPECT_EQ(layout.bytes_per_token(), 12u + 4 + 3 + 0 + 8 + 5 + 1 + 0);
    PagePool pool(layout, {4, 10 * 1024});
    // Each stream's rows are contiguous and 64-byte aligned inside a page.
    uint64_t expect = 0;
    for (size_t s = 0; s < layout.n_streams(); ++s) {
        EXPECT_EQ(pool.stream_offset(s), expect);
        expect += (4 * layout.row_bytes(s) + 63) / 64 * 64;
    }
    EXPECT_EQ(pool.page_bytes(), expect);
    EXPECT_EQ(pool.pages_total(), 10 * 1024 / expect);
    EXPECT_EQ(pool.capacity_tokens(), pool.pages_total() * 4);
    // Lazy: nothing allocated until used.
    EXPECT_EQ(pool.stats().bytes_allocated, 0u);
    EXPECT_EQ(status_of([&] { PagePool(layout, {4, expect - 1}); }), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status_of([&] { PagePool(layout, {0, 1 << 20}); }), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status_of([&] { PagePool(RowLayout(1, 1, {0, 0}), {4, 1 << 20}); }), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status_of([&] { RowLayout(1, 2, {1, 2}); }), STARKV_ERR_INVALID_ARGUMENT);
}

TEST(PagePool, ExhaustionLeavesThePoolUsable) {
    PagePool pool = small_pool(4, 3);
    pool.create(0);
    pool.append(0, iota_tokens(10));  // 3 pages
    const PagePoolStats before = pool.stats();
    EXPECT_EQ(status_of([&] { pool.append(0, iota_tokens(3)); }), STARKV_ERR_KV_POOL_FULL);
    EXPECT_EQ(pool.pages_to_append(0, 3), 1u);
    EXPECT_EQ(pool.pages_to_append(0, 2), 0u);
    EXPECT_FALSE(pool.can_append(0, 3));
    EXPECT_TRUE(pool.can_append(0, 2));
    pool.create(1);
    EXPECT_EQ(status_of([&] { pool.append(1, iota_tokens(1)); }), STARKV_ERR_KV_POOL_FULL);
    EXPECT_EQ(pool.length(0), 10);
    EXPECT_EQ(pool.length(1), 0);
    EXPECT_EQ(pool.stats().pages_used, before.pages_used);
    // Over the capacity in one go.
    EXPECT_EQ(status_of([&] { pool.append(1, iota_tokens(13)); }), STARKV_ERR_KV_POOL_FULL);
    // Room again after a truncation.
    pool.truncate(0, 4);
    pool.append(1, iota_tokens(8));
    EXPECT_EQ(pool.length(1), 8);
    EXPECT_EQ(pool.stats().pages_free, 0u);
    // Unknown ids and bad positions are argument errors.
    EXPECT_EQ(status_of([&] { pool.append(9, iota_tokens(1)); }), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status_of([&] { pool.row(0, 0, 0, KvKind::K, 4); }), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status_of([&] { pool.row(0, 2, 0, KvKind::K, 0); }), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status_of([&] { pool.truncate(0, 5); }), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status_of([&] { pool.create(0); }), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status_of([&] { pool.fork(0, 1); }), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status_of([&] { pool.fork(0, -2); }), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status_of([&] { pool.create(-1); }), STARKV_ERR_INVALID_ARGUMENT);
}

TEST(PagePool, ForkCopiesOnWriteAndNeverTouchesTheSibling) {
    PagePool pool = small_pool(4, 16);
    pool.create(0);
    pool.append(0, iota_tokens(6));
    for (int pos = 0; pos < 6; ++pos) std::memset(pool.mutable_row(0, 0, 0, KvKind::K, pos), 0xA0 + pos, 12);
    pool.fork(0, 1);
    EXPECT_EQ(pool.page_id(0, 0), pool.page_id(1, 0));
    EXPECT_EQ(pool.stats().pages_used, 2u);
    EXPECT_EQ(pool.pages_to_append(1, 1), 1u);  // the shared partial page is copied
    EXPECT_EQ(pool.pages_to_append(1, 3), 2u);
    // A write into a shared full page copies it.
    std::memset(pool.mutable_row(1, 0, 0, KvKind::K, 1), 0x11, 12);
    EXPECT_NE(pool.page_id(0, 0), pool.page_id(1, 0));
    EXPECT_EQ(pool.stats().cow_copies, 1u);
    // Appending to a shared partial page copies it too.
    pool.append(1, iota_tokens(1, 100));
    std::memset(pool.mutable_row(1, 0, 0, KvKind::K, 6), 0x22, 12);
    EXPECT_NE(pool.page_id(0, 1), pool.page_id(1, 1));
    EXPECT_EQ(pool.stats().cow_copies, 2u);
    for (int pos = 0; pos < 6; ++pos) {
        const uint8_t* r = pool.row(0, 0, 0, KvKind::K, pos);
        for (int b = 0; b < 12; ++b) ASSERT_EQ(r[b], 0xA0 + pos) << pos;
    }
    EXPECT_EQ(pool.length(0), 6);
    EXPECT_EQ(pool.tokens(0), iota_tokens(6));
    EXPECT_EQ(pool.tokens(1).back(), 100);
    EXPECT_EQ(pool.row(1, 0, 0, KvKind::K, 0)[0], 0xA0);  // copied, not lost
    EXPECT_EQ(pool.row(1, 0, 0, KvKind::K, 1)[0], 0x11);
    // The sibling, now alone on its pages, writes in place.
    const int32_t page = pool.page_id(0, 1);
    pool.append(0, iota_tokens(1, 200));
    EXPECT_EQ(pool.page_id(0, 1), page);
    EXPECT_EQ(pool.stats().cow_copies, 2u);
}

TEST(PagePool, PrefixHitsAreCounted) {
    PagePool pool = small_pool(4, 16);
    const std::vector<int32_t> prompt = iota_tokens(10);
    pool.create(0);
    EXPECT_EQ(pool.reuse_prefix(0, prompt), 0);  // cold: 8 full-page tokens queried, none hit
    pool.append(0, prompt);
    std::memset(pool.mutable_row(0, 1, 0, KvKind::K, 5), 0x5A, 8);
    pool.commit(0);
    EXPECT_EQ(pool.stats().prefix_queried_tokens, 8u);
    EXPECT_EQ(pool.stats().prefix_hit_tokens, 0u);
    // Lookups count nothing; a differing token ends the match at its page.
    EXPECT_EQ(pool.lookup_prefix(prompt), 8);
    std::vector<int32_t> other = prompt;
    other[5] = 99;
    EXPECT_EQ(pool.lookup_prefix(other), 4);
    other[0] = 99;
    EXPECT_EQ(pool.lookup_prefix(other), 0);
    EXPECT_EQ(pool.stats().prefix_queried_tokens, 8u);
    // A cached page's tokens after another parent do not match it: the
    // second page below holds page 0's tokens, but its chain differs.
    std::vector<int32_t> repeated = iota_tokens(4);
    repeated.insert(repeated.end(), prompt.begin(), prompt.begin() + 4);
    EXPECT_EQ(pool.lookup_prefix(repeated), 4);

    pool.create(1);
    EXPECT_EQ(pool.reuse_prefix(1, std::span(prompt).first(9)), 8);
    EXPECT_EQ(pool.page_id(1, 1), pool.page_id(0, 1));
    EXPECT_EQ(pool.row(1, 1, 0, KvKind::K, 5)[0], 0x5A);
    pool.create(2);
    EXPECT_EQ(pool.reuse_prefix(2, other), 0);
    const PagePoolStats st = pool.stats();
    EXPECT_EQ(st.prefix_queried_tokens, 8u + 8 + 8);
    EXPECT_EQ(st.prefix_hit_tokens, 8u);
    EXPECT_EQ(status_of([&] { pool.reuse_prefix(0, prompt); }), STARKV_ERR_INVALID_ARGUMENT);  // not empty

    // Removed, the registered pages stay cached (the partial one is freed)
    // and serve the next request.
    pool.remove(0);
    pool.remove(1);
    EXPECT_EQ(pool.stats().pages_cached, 2u);
    EXPECT_EQ(pool.stats().pages_used, 0u);
    pool.create(3);
    EXPECT_EQ(pool.reuse_prefix(3, prompt), 8);
    EXPECT_EQ(pool.stats().pages_cached, 0u);
    EXPECT_EQ(pool.row(3, 1, 0, KvKind::K, 5)[0], 0x5A);
    // Writing into a registered page takes it out of the cache.
    std::memset(pool.mutable_row(3, 0, 0, KvKind::K, 0), 0, 12);
    EXPECT_EQ(pool.lookup_prefix(prompt), 0);
}

TEST(PagePool, EvictionTakesIdleCachedPagesLeastRecentlyUsedFirst) {
    for (bool evict : {true, false}) {
        PagePool pool = small_pool(2, 4, evict);
        pool.create(0);
        pool.append(0, iota_tokens(4, 0));
        pool.commit(0);
        pool.create(1);
        pool.append(1, iota_tokens(4, 10));
        pool.commit(1);
        pool.remove(0);  // oldest
        pool.remove(1);
        EXPECT_EQ(pool.stats().pages_cached, 4u);
        pool.create(2);
        const starkv_status s = status_of([&] { pool.append(2, iota_tokens(2, 20)); });
        if (!evict) {
            EXPECT_EQ(s, STARKV_ERR_KV_POOL_FULL);
            pool.clear_prefix_cache();
            EXPECT_EQ(pool.stats().pages_free, 4u);
            pool.append(2, iota_tokens(2, 20));
            EXPECT_EQ(pool.stats().evictions, 0u);
            continue;
        }
        EXPECT_EQ(s, STARKV_OK);
        EXPECT_EQ(pool.stats().evictions, 1u);
        // Sequence 0's tail went first (removal frees tails first): its
        // first page is still reusable, sequence 1's whole prefix too.
        EXPECT_EQ(pool.lookup_prefix(iota_tokens(4, 0)), 2);
        EXPECT_EQ(pool.lookup_prefix(iota_tokens(4, 10)), 4);
        // Reuse refreshes: sequence 1's pages in use, the next eviction takes 0's head.
        pool.create(3);
        EXPECT_EQ(pool.reuse_prefix(3, iota_tokens(4, 10)), 4);
        pool.append(2, iota_tokens(2, 30));
        EXPECT_EQ(pool.stats().evictions, 2u);
        EXPECT_EQ(pool.lookup_prefix(iota_tokens(4, 0)), 0);
        EXPECT_EQ(pool.lookup_prefix(iota_tokens(4, 10)), 4);
        EXPECT_EQ(status_of([&] { pool.append(2, iota_tokens(1)); }), STARKV_ERR_KV_POOL_FULL);
    }
}

TEST(PagePool, AllocationFailureIsOutOfMemoryAndChangesNothing) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    GTEST_SKIP() << "the sanitizers abort on an impossible allocation instead of failing it";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
    GTEST_SKIP() << "the sanitizers abort on an impossible allocation instead of failing it";
#endif
#endif
    // A page far beyond any address space: the lazy allocation fails.
    PagePool pool(RowLayout(1, 1, {0xFFFFFFFFu, 0xFFFFFFFFu}), {1 << 20, UINT64_MAX});
    pool.create(0);
    EXPECT_EQ(status_of([&] { pool.append(0, iota_tokens(1)); }), STARKV_ERR_OUT_OF_MEMORY);
    EXPECT_EQ(pool.length(0), 0);
    EXPECT_EQ(pool.stats().pages_allocated, 0u);
    EXPECT_EQ(pool.stats().pages_used, 0u);
}

// The contract (docs/kv-pool.md): const calls may run concurrently when no
// call mutates the pool; the rows of distinct unshared pages may be written
// concurrently through pointers taken before (a batched forward pass does).
TEST(PagePool, ConcurrentRowWritesToDistinctSequencesAndConcurrentReads) {
    PagePool pool = small_pool(4, 64);
    const int n_seq = 4, n_tok = 30;
    std::vector<std::vector<uint8_t*>> rows(n_seq);
    for (int s = 0; s < n_seq; ++s) {
        pool.create(s);
        pool.append(s, iota_tokens(n_tok, s * 100));
        for (int pos = 0; pos < n_tok; ++pos) rows[s].push_back(pool.mutable_row(s, 1, 0, KvKind::K, pos));
    }
    std::vector<std::thread> writers;
    for (int s = 0; s < n_seq; ++s)
        writers.emplace_back([&, s] {
            for (int pos = 0; pos < n_tok; ++pos) std::memset(rows[s][pos], s * 16 + pos % 16, 8);
        });
    for (auto& t : writers) t.join();
    std::vector<int> bad(n_seq, 0);
    std::vector<std::thread> readers;
    for (int s = 0; s < n_seq; ++s)
        readers.emplace_back([&, s] {
            for (int r = 0; r < n_seq; ++r)  // every reader reads every sequence
                for (int pos = 0; pos < n_tok; ++pos) {
                    const uint8_t* p = pool.row(r, 1, 0, KvKind::K, pos);
                    for (int b = 0; b < 8; ++b) bad[s] += p[b] != r * 16 + pos % 16;
                }
            bad[s] += pool.stats().tokens != static_cast<uint64_t>(n_seq * n_tok);
        });
    for (auto& t : readers) t.join();
    for (int s = 0; s < n_seq; ++s) EXPECT_EQ(bad[s], 0) << "reader " << s;
}

}  // namespace
}  // namespace starkv
