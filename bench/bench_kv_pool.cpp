// The paged KV pool's bookkeeping and the saved state's speed, on a latent
// layout of SmolLM2-135M's shape (30 layers x 3 KV heads; fp32 key latents of
// rank 24 per head, one value latent of rank 48 per layer: 14,400 bytes per
// token). The pool only moves bytes, so these are the costs the forward pass
// pays on top of attention.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <vector>

#include "kv/kv_state.h"
#include "kv/page_pool.h"

namespace {

using namespace starkv;

RowLayout latent_layout() {
    std::vector<uint32_t> rb;
    for (int l = 0; l < 30; ++l)
        for (int h = 0; h < 3; ++h) {
            rb.push_back(24 * 4);
            rb.push_back(h == 0 ? 48 * 4 : 0);
        }
    return RowLayout(30, 3, rb);
}

// Rows as a model writes them: floats of one scale (zstd gains little on them).
void write_rows(PagePool& pool, SeqId seq, int from, std::mt19937& rng) {
    const RowLayout& L = pool.layout();
    std::normal_distribution<float> d;
    std::vector<float> buf(64);
    for (int pos = from; pos < pool.length(seq); ++pos)
        for (int l = 0; l < L.n_layer(); ++l)
            for (int h = 0; h < L.n_head_kv(); ++h)
                for (KvKind k : {KvKind::K, KvKind::V}) {
                    const uint32_t rb = L.row_bytes(l, h, k);
                    if (!rb) continue;
                    for (size_t i = 0; i < rb / 4; ++i) buf[i] = d(rng);
                    std::memcpy(pool.mutable_row(seq, l, h, k, pos), buf.data(), rb);
                }
}

PagePool make_pool(uint64_t tokens) {
    const RowLayout L = latent_layout();
    return PagePool(L, {16, tokens * L.bytes_per_token()});
}

std::vector<int32_t> tokens(int n, int from) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) t[static_cast<size_t>(i)] = from + i;
    return t;
}

// One decode step of 8 sequences: append a token, write its 270 rows, commit.
void BM_DecodeStep8(benchmark::State& state) {
    PagePool pool = make_pool(16 * 1024);
    std::mt19937 rng(1);
    for (int s = 0; s < 8; ++s) {
        pool.create(s);
        pool.append(s, tokens(512, s * 10000));
        write_rows(pool, s, 0, rng);
        pool.commit(s);
    }
    const std::vector<uint8_t> row(256, 7);
    const RowLayout& L = pool.layout();
    int32_t next = 0;
    for (auto _ : state) {
        for (int s = 0; s < 8; ++s) {
            if (pool.length(s) >= 1024) pool.truncate(s, 512);
            const int32_t t = next++;
            pool.append(s, std::span(&t, 1));
            const int pos = pool.length(s) - 1;
            for (int l = 0; l < L.n_layer(); ++l)
                for (int h = 0; h < L.n_head_kv(); ++h)
                    for (KvKind k : {KvKind::K, KvKind::V})
                        if (const uint32_t rb = L.row_bytes(l, h, k))
                            std::memcpy(pool.mutable_row(s, l, h, k, pos), row.data(), rb);
            pool.commit(s);
        }
    }
    state.SetItemsProcessed(state.iterations() * 8);
}
BENCHMARK(BM_DecodeStep8);

// Attention's read pattern: every (layer, head, K|V) stream of a 2048-token
// sequence, page by page.
void BM_PageSpanScan2048(benchmark::State& state) {
    PagePool pool = make_pool(4096);
    std::mt19937 rng(2);
    pool.create(0);
    pool.append(0, tokens(2048, 0));
    write_rows(pool, 0, 0, rng);
    const RowLayout& L = pool.layout();
    for (auto _ : state) {
        uint64_t sum = 0;
        for (int l = 0; l < L.n_layer(); ++l)
            for (int h = 0; h < L.n_head_kv(); ++h)
                for (KvKind k : {KvKind::K, KvKind::V}) {
                    const uint32_t rb = L.row_bytes(l, h, k);
                    if (!rb) continue;
                    for (int p = 0; p < pool.n_pages(0); ++p) {
                        const PageSpan sp = pool.page_span(0, p, l, h, k);
                        for (size_t i = 0; i < static_cast<size_t>(sp.n_rows) * rb; i += 64) sum += sp.data[i];
                    }
                }
        benchmark::DoNotOptimize(sum);
    }
    state.SetBytesProcessed(state.iterations() * 2048 * static_cast<int64_t>(L.bytes_per_token()));
}
BENCHMARK(BM_PageSpanScan2048);

// A new conversation reusing a 2048-token cached prompt, then dropped.
void BM_ReusePrefix2048(benchmark::State& state) {
    PagePool pool = make_pool(4096);
    std::mt19937 rng(3);
    const std::vector<int32_t> prompt = tokens(2049, 0);
    pool.create(0);
    pool.append(0, prompt);
    write_rows(pool, 0, 0, rng);
    pool.commit(0);
    for (auto _ : state) {
        pool.create(1);
        benchmark::DoNotOptimize(pool.reuse_prefix(1, std::span(prompt).first(2048)));
        pool.remove(1);
    }
}
BENCHMARK(BM_ReusePrefix2048);

void save_restore(benchmark::State& state, bool restore) {
    const int n = static_cast<int>(state.range(0));
    const int level = static_cast<int>(state.range(1));
    PagePool pool = make_pool(4096);
    std::mt19937 rng(4);
    pool.create(0);
    pool.append(0, tokens(n, 0));
    write_rows(pool, 0, 0, rng);
    const SeqId ids[] = {0};
    std::vector<uint8_t> saved = save_kv_state(pool, 1, ids, level);
    for (auto _ : state) {
        if (restore) {
            PagePool fresh = make_pool(4096);
            benchmark::DoNotOptimize(restore_kv_state(fresh, 1, saved));
        } else {
            saved = save_kv_state(pool, 1, ids, level);
        }
    }
    state.SetBytesProcessed(state.iterations() * n * static_cast<int64_t>(pool.layout().bytes_per_token()));
    state.counters["state_bytes"] = static_cast<double>(saved.size());
    state.counters["raw_bytes"] = static_cast<double>(n) * static_cast<double>(pool.layout().bytes_per_token());
}
void BM_SaveState(benchmark::State& state) { save_restore(state, false); }
void BM_RestoreState(benchmark::State& state) { save_restore(state, true); }
BENCHMARK(BM_SaveState)->Args({2048, 1})->Args({2048, 3})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_RestoreState)->Args({2048, 1})->Args({2048, 3})->Unit(benchmark::kMillisecond);

}  // namespace
