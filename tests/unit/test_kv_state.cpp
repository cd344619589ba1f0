// Saved KV state: round trips against the rows written (a flat reference),
// every truncation and every single-byte corruption rejected with the pool
// untouched, inconsistent (but checksummed) payloads rejected, and the fuzz
// corpus, written by scripts/make_fuzz_seeds.py from the documented format
// alone, read back as the format says.
#include <gtest/gtest.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <vector>

#include "../fuzz/kv_state_input.h"
#include "core/error.h"
#include "kv/kv_state.h"
#include "kv/page_pool.h"

namespace starkv {
namespace {

constexpr uint64_t kBundle = 0xB0D1EC0FFEEull;

RowLayout layout() { return RowLayout(2, 2, {12, 4, 3, 0, 8, 5, 1, 0}); }

PagePool make_pool(int page_tokens, uint64_t n_pages) {
    PagePool probe(layout(), {page_tokens, 1u << 30});
    return PagePool(layout(), {page_tokens, probe.page_bytes() * n_pages});
}

// Every row written, by sequence, position and stream.
using Rows = std::map<SeqId, std::vector<std::vector<std::vector<uint8_t>>>>;

struct Filled {
    Rows rows;
    std::map<SeqId, std::vector<int32_t>> tokens;
};

void append_random(PagePool& pool, Filled& f, SeqId id, int n, std::mt19937& rng) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (auto& x : t) x = static_cast<int32_t>(rng() % 1000);
    const int from = pool.length(id);
    pool.append(id, t);
    auto& rows = f.rows[id];
    auto& toks = f.tokens[id];
    rows.resize(static_cast<size_t>(from));
    toks.resize(static_cast<size_t>(from));
    toks.insert(toks.end(), t.begin(), t.end());
    const RowLayout& L = pool.layout();
    for (int pos = from; pos < from + n; ++pos) {
        rows.emplace_back(L.n_streams());
        for (int l = 0; l < L.n_layer(); ++l)
            for (int h = 0; h < L.n_head_kv(); ++h)
                for (KvKind k : {KvKind::K, KvKind::V}) {
                    auto& r = rows.back()[L.stream(l, h, k)];
                    r.resize(L.row_bytes(l, h, k));
                    for (auto& b : r) b = static_cast<uint8_t>(rng());
                    if (!r.empty()) std::memcpy(pool.mutable_row(id, l, h, k, pos), r.data(), r.size());
                }
    }
}

// Sequences 0..4: independent ones, forks sharing whole and partial pages,
// a fork that grew past its parent, an empty one.
Filled fill(PagePool& pool) {
    Filled f;
    std::mt19937 rng(7);
    pool.create(0);
    append_random(pool, f, 0, 13, rng);
    pool.commit(0);
    pool.fork(0, 1);
    f.rows[1] = f.rows[0];
    f.tokens[1] = f.tokens[0];
    append_random(pool, f, 1, 6, rng);  // copies the shared partial page
    pool.fork(0, 2);                    // shares all of 0, partial page included
    f.rows[2] = f.rows[0];
    f.tokens[2] = f.tokens[0];
    pool.create(3);
    append_random(pool, f, 3, 5, rng);
    pool.create(4);
    f.rows[4];
    f.tokens[4];
    return f;
}

void expect_rows(const PagePool& pool, const Filled& f, SeqId id, SeqId as) {
    const RowLayout& L = pool.layout();
    ASSERT_EQ(pool.tokens(as), f.tokens.at(id));
    const auto& rows = f.rows.at(id);
    ASSERT_EQ(pool.length(as), static_cast<int>(rows.size()));
    for (size_t pos = 0; pos < rows.size(); ++pos)
        for (int l = 0; l < L.n_layer(); ++l)
            for (int h = 0; h < L.n_head_kv(); ++h)
                for (KvKind k : {KvKind::K, KvKind::V}) {
                    const auto& r = rows[pos][L.stream(l, h, k)];
                    if (r.empty()) continue;  // an empty stream
                    ASSERT_EQ(0, std::memcmp(pool.row(as, l, h, k, static_cast<int>(pos)), r.data(), r.size()))
                        << "seq " << id << " pos " << pos;
                }
}

starkv_status restore_status(PagePool& pool, std::span<const uint8_t> state, uint64_t bundle = kBundle,
                             const KvStateRestoreOptions& o = {}) {
    try {
        restore_kv_state(pool, bundle, state, o);
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);  // one line
        return e.status();
    }
    return STARKV_OK;
}

void reseal(std::vector<uint8_t>& s) {
    const uint64_t h = XXH3_64bits(s.data(), s.size() - 8);
    for (int i = 0; i < 8; ++i) s[s.size() - 8 + i] = static_cast<uint8_t>(h >> (8 * i));
}

TEST(KvState, RoundTripRestoresEveryRowAndSharing) {
    PagePool pool = make_pool(4, 64);
    const Filled f = fill(pool);
    const std::vector<SeqId> all = pool.sequences();
    const std::vector<uint8_t> state = save_kv_state(pool, kBundle, all);

    PagePool back = make_pool(4, 64);
    EXPECT_EQ(restore_kv_state(back, kBundle, state), all);
    for (SeqId id : all) expect_rows(back, f, id, id);
    // Forks come back as forks: the same pages shared, no more pages used.
    EXPECT_EQ(back.stats().pages_used, pool.stats().pages_used);
    EXPECT_EQ(back.page_id(2, 3), back.page_id(0, 3));
    // ... and the restored pool saves to the same bytes.
    EXPECT_EQ(save_kv_state(back, kBundle, all), state);
    // Restored full pages serve prefix reuse.
    EXPECT_EQ(back.lookup_prefix(f.tokens.at(0)), 12);

    // Another page size holds the same rows.
    PagePool other = make_pool(3, 64);
    restore_kv_state(other, kBundle, state);
    for (SeqId id : all) expect_rows(other, f, id, id);
}

TEST(KvState, OneSequenceRestoresUnderAnotherId) {
    PagePool pool = make_pool(4, 64);
    const Filled f = fill(pool);
    const SeqId one[] = {1};
    const std::vector<uint8_t> state = save_kv_state(pool, kBundle, one, 19);
    // Into the same pool, beside its source: the id must be free.
    EXPECT_EQ(restore_status(pool, state), STARKV_ERR_INVALID_ARGUMENT);
    KvStateRestoreOptions o;
    o.target_seq = 7;
    EXPECT_EQ(restore_kv_state(pool, kBundle, state, o), std::vector<SeqId>{7});
    expect_rows(pool, f, 1, 7);
    expect_rows(pool, f, 1, 1);
    // A target id needs a one-sequence state.
    const std::vector<uint8_t> two = save_kv_state(pool, kBundle, std::vector<SeqId>{0, 3});
    PagePool fresh = make_pool(4, 64);
    EXPECT_EQ(restore_status(fresh, two, kBundle, o), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(fresh.stats().n_sequences, 0u);
}

TEST(KvState, MismatchesAreRejectedAndChangeNothing) {
    PagePool pool = make_pool(4, 64);
    fill(pool);
    const std::vector<uint8_t> state = save_kv_state(pool, kBundle, pool.sequences());
    PagePool target = make_pool(4, 64);
    target.create(3);  // one of the saved ids
    EXPECT_EQ(restore_status(target, state), STARKV_ERR_INVALID_ARGUMENT);
    target.remove(3);
    EXPECT_EQ(restore_status(target, state, kBundle + 1), STARKV_ERR_INVALID_ARGUMENT);
    PagePool other_layout(RowLayout(2, 2, {12, 4, 3, 0, 8, 5, 2, 0}), {4, 1 << 20});
    EXPECT_EQ(restore_status(other_layout, state), STARKV_ERR_INVALID_ARGUMENT);
    // Too small a pool: the whole state, or one sequence, does not fit.
    PagePool small = make_pool(4, 7);  // the state needs 8 pages
    EXPECT_EQ(restore_status(small, state), STARKV_ERR_KV_POOL_FULL);
    PagePool tiny = make_pool(4, 3);
    EXPECT_EQ(restore_status(tiny, state), STARKV_ERR_KV_POOL_FULL);
    for (PagePool* p : {&target, &other_layout, &small, &tiny}) {
        EXPECT_EQ(p->stats().n_sequences, 0u);
        EXPECT_EQ(p->stats().pages_used, 0u);
    }
    // A newer format version is unsupported, not corrupt.
    std::vector<uint8_t> newer = state;
    newer[8] = 2;
    reseal(newer);
    EXPECT_EQ(restore_status(target, newer), STARKV_ERR_UNSUPPORTED);
}

TEST(KvState, EveryTruncationAndEveryFlippedByteIsRejected) {
    PagePool pool = make_pool(4, 16);
    fill(pool);
    const SeqId ids[] = {0, 2};
    const std::vector<uint8_t> state = save_kv_state(pool, kBundle, ids);
    ASSERT_LT(state.size(), 4096u);  // small enough to try everything
    PagePool target = make_pool(4, 16);
    target.create(9);
    target.append(9, std::vector<int32_t>{1, 2, 3, 4, 5});
    const PagePoolStats before = target.stats();
    auto untouched = [&] {
        const PagePoolStats st = target.stats();
        return st.n_sequences == before.n_sequences && st.pages_used == before.pages_used &&
               st.tokens == before.tokens && target.sequences() == std::vector<SeqId>{9};
    };
    for (size_t n = 0; n < state.size(); ++n) {
        ASSERT_EQ(restore_status(target, std::span(state).first(n)), STARKV_ERR_CORRUPT) << "length " << n;
        ASSERT_TRUE(untouched());
    }
    for (size_t i = 0; i < state.size(); ++i)
        for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xFF}}) {
            std::vector<uint8_t> bad = state;
            bad[i] ^= mask;
            ASSERT_NE(restore_status(target, bad), STARKV_OK) << "byte " << i;
            ASSERT_TRUE(untouched());
        }
    // One byte too many is rejected too; the intact state restores.
    std::vector<uint8_t> longer = state;
    longer.push_back(0);
    EXPECT_EQ(restore_status(target, longer), STARKV_ERR_CORRUPT);
    EXPECT_EQ(restore_status(target, state), STARKV_OK);
}

// Little-endian builder of raw payloads (the records of docs/kv-pool.md).
struct Payload {
    std::vector<uint8_t> b;
    void u32(uint32_t v) {
        for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
    }
    void record(int32_t id, uint32_t n, int32_t parent, uint32_t shared, std::vector<int32_t> toks, size_t row_bytes) {
        u32(static_cast<uint32_t>(id));
        u32(n);
        u32(static_cast<uint32_t>(parent));
        u32(shared);
        for (int32_t t : toks) u32(static_cast<uint32_t>(t));
        b.insert(b.end(), row_bytes, 0x42);
    }
};

TEST(KvState, InconsistentPayloadsAreCorrupt) {
    const RowLayout L = layout();
    const size_t bpt = L.bytes_per_token();
    auto status = [&](const Payload& p, uint32_t n_seq, int32_t n_vocab = 0) {
        PagePool pool = make_pool(4, 64);
        KvStateRestoreOptions o;
        o.n_vocab = n_vocab;
        const starkv_status s = restore_status(pool, encode_kv_state(L, kBundle, n_seq, p.b), kBundle, o);
        if (s != STARKV_OK) EXPECT_EQ(pool.stats().n_sequences, 0u);
        return s;
    };
    Payload ok;
    ok.record(0, 3, -1, 0, {1, 2, 3}, 3 * bpt);
    ok.record(1, 4, 0, 2, {1, 2, 9, 9}, 2 * bpt);
    {
        PagePool pool = make_pool(4, 64);
        EXPECT_EQ(restore_kv_state(pool, kBundle, encode_kv_state(L, kBundle, 2, ok.b)), (std::vector<SeqId>{0, 1}));
        EXPECT_EQ(pool.tokens(1), (std::vector<int32_t>{1, 2, 9, 9}));
        EXPECT_EQ(0, std::memcmp(pool.row(1, 0, 0, KvKind::K, 1), pool.row(0, 0, 0, KvKind::K, 1), 12));  // shared rows
    }
    EXPECT_EQ(status(ok, 3), STARKV_ERR_CORRUPT);  // a record missing
    EXPECT_EQ(status(ok, 1), STARKV_ERR_CORRUPT);  // bytes left over
    EXPECT_EQ(status(ok, 2, 3), STARKV_ERR_CORRUPT);  // token 9 >= n_vocab 3
    EXPECT_EQ(status(ok, 2, 10), STARKV_OK);
    Payload p;
    p.record(0, 3, -1, 0, {1, 2, 3}, 3 * bpt - 1);  // short rows
    EXPECT_EQ(status(p, 1), STARKV_ERR_CORRUPT);
    p = {};
    p.record(0, 3, 0, 0, {1, 2, 3}, 3 * bpt);  // its own parent
    EXPECT_EQ(status(p, 1), STARKV_ERR_CORRUPT);
    p = {};
    p.record(0, 3, -1, 1, {1, 2, 3}, 2 * bpt);  // shares without a parent
    EXPECT_EQ(status(p, 1), STARKV_ERR_CORRUPT);
    p = {};
    p.record(0, 3, -1, 0, {1, 2, 3}, 3 * bpt);
    p.record(1, 4, 0, 4, {1, 2, 3, 4}, 0);  // shares more than its parent has
    EXPECT_EQ(status(p, 2), STARKV_ERR_CORRUPT);
    p = {};
    p.record(0, 3, -1, 0, {1, 2, 3}, 3 * bpt);
    p.record(1, 3, 0, 2, {1, 5, 3}, 1 * bpt);  // a shared token differs
    EXPECT_EQ(status(p, 2), STARKV_ERR_CORRUPT);
    p = {};
    p.record(0, 1, -1, 0, {1}, bpt);
    p.record(0, 1, -1, 0, {1}, bpt);  // the same id twice
    EXPECT_EQ(status(p, 2), STARKV_ERR_CORRUPT);
    p = {};
    p.record(-5, 1, -1, 0, {1}, bpt);
    EXPECT_EQ(status(p, 1), STARKV_ERR_CORRUPT);
    p = {};
    p.record(0, 1, -1, 0, {-1}, bpt);
    EXPECT_EQ(status(p, 1), STARKV_ERR_CORRUPT);
    p = {};
    p.record(0, 0x7FFFFFFF, -1, 0, {}, 0);  // more tokens than the pool holds
    EXPECT_EQ(status(p, 1), STARKV_ERR_KV_POOL_FULL);
    EXPECT_EQ(status({}, 0), STARKV_OK);  // an empty state is valid
}

TEST(KvState, FilesAndLevels) {
    PagePool pool = make_pool(4, 64);
    fill(pool);
    const std::vector<uint8_t> state = save_kv_state(pool, kBundle, pool.sequences());
    const std::string path = (std::filesystem::temp_directory_path() / ("starkv_kv_state_" + std::to_string(::getpid()))).string();
    write_kv_state_file(path, state);
    EXPECT_EQ(read_kv_state_file(path, state.size()), state);
    auto status = [](const std::function<void()>& fn) {
        try {
            fn();
        } catch (const Error& e) {
            return e.status();
        }
        return STARKV_OK;
    };
    EXPECT_EQ(status([&] { read_kv_state_file(path, state.size() - 1); }), STARKV_ERR_INVALID_ARGUMENT);
    std::filesystem::remove(path);
    EXPECT_EQ(status([&] { read_kv_state_file(path, 1 << 20); }), STARKV_ERR_IO);
    EXPECT_EQ(status([&] { write_kv_state_file("/nonexistent-dir/x", state); }), STARKV_ERR_IO);
    EXPECT_EQ(status([&] { save_kv_state(pool, kBundle, pool.sequences(), 0); }), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status([&] { save_kv_state(pool, kBundle, std::vector<SeqId>{0, 0}); }), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status([&] { save_kv_state(pool, kBundle, std::vector<SeqId>{42}); }), STARKV_ERR_INVALID_ARGUMENT);
    // Shared prefixes are stored once: less than every sequence's rows.
    EXPECT_LT(state.size(), pool.stats().tokens * layout().bytes_per_token());
}

// The seeds were written by a Python script from the format description
// alone: valid_* must restore, and nothing may break the round trip.
TEST(KvState, FuzzCorpusReadsAsDocumented) {
    namespace fs = std::filesystem;
    const fs::path fuzz = fs::path(__FILE__).parent_path().parent_path() / "fuzz";
    int n = 0, valid = 0;
    for (const char* kind : {"corpus", "regressions"}) {
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(fuzz / kind / "fuzz_kv_state", ec)) {
            std::ifstream in(e.path(), std::ios::binary);
            std::stringstream ss;
            ss << in.rdbuf();
            const std::string bytes = ss.str();
            const auto outcome = starkv_fuzz::restore_kv_state_input(reinterpret_cast<const uint8_t*>(bytes.data()),
                                                                     bytes.size());
            EXPECT_NE(outcome, starkv_fuzz::KvStateOutcome::Broken) << e.path();
            if (e.path().filename().string().rfind("valid_", 0) == 0) {
                EXPECT_EQ(outcome, starkv_fuzz::KvStateOutcome::Restored) << e.path();
                ++valid;
            }
            ++n;
        }
    }
    EXPECT_GE(valid, 3);
    EXPECT_GE(n, valid);
}

}  // namespace
}  // namespace starkv
