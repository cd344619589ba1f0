// Sequences, batches, prefix reuse, pool exhaustion and saved state through the
// C API (docs/kv-pool.md). The reference is always the same tokens evaluated
// one sequence at a time in a fresh single-sequence context.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>
#include <vector>

#include "api_util.h"

namespace {

using starkv_test::ContextPtr;
using starkv_test::is_error;
using starkv_test::ModelPtr;

// Models under test: the GGUF (fp32 rows) and a STAR-KV bundle with 4-bit
// latents and 8-bit plain layers (every row format the forward pass reads).
const starkv_model* plain_model() {
    static ModelPtr m = [] {
        starkv_model* p = nullptr;
        EXPECT_EQ(starkv_model_load(starkv_test::stories_model().c_str(), nullptr, &p), STARKV_OK);
        return ModelPtr(p);
    }();
    return m.get();
}

const starkv_model* starkv_model_4bit() {
    static ModelPtr m = [] {
        const std::string dir = starkv_test::temp_dir() + "/seqs";
        std::filesystem::create_directories(dir);
        const std::string calib = starkv_test::shared_path("data/tinystories_val.txt"), out = dir + "/kv4.skv";
        starkv_pack_params pp;
        starkv_pack_params_default(&pp);
        pp.kv_compress = 0.5f;
        pp.calib_path = calib.c_str();
        pp.calib_tokens = 256;
        pp.kv_bits = 4.0f;
        pp.kv_bits_plain = 8;
        EXPECT_EQ(starkv_pack(starkv_test::stories_model().c_str(), out.c_str(), &pp), STARKV_OK) << starkv_last_error();
        starkv_model* s = nullptr;
        EXPECT_EQ(starkv_model_load(out.c_str(), nullptr, &s), STARKV_OK) << starkv_last_error();
        return ModelPtr(s);
    }();
    return m.get();
}

uint32_t n_vocab(const starkv_model* m) {
    starkv_model_info info;
    starkv_model_info_default(&info);
    EXPECT_EQ(starkv_model_get_info(m, &info), STARKV_OK);
    return info.n_vocab;
}

ContextPtr pooled(const starkv_model* m, uint64_t budget = 0, uint32_t n_ctx = 256, uint32_t page_tokens = 16) {
    starkv_context_params cp;
    starkv_context_params_default(&cp);
    cp.n_ctx = n_ctx;
    cp.n_threads = 2;
    starkv_pool_params pp;
    starkv_pool_params_default(&pp);
    pp.budget_bytes = budget;
    pp.page_tokens = page_tokens;
    starkv_context* c = nullptr;
    EXPECT_EQ(starkv_context_create_pooled(m, &cp, &pp, &c), STARKV_OK) << starkv_last_error();
    return ContextPtr(c);
}

std::vector<starkv_token> prompt(int n, int salt) {
    std::vector<starkv_token> t{1};
    for (int i = 1; i < n; ++i) t.push_back(2 + (i * 37 + salt * 101) % 500);
    return t;
}

// Largest |a - b| over the row, relative to the row's largest |b|.
double rel_err(const float* a, const float* b, size_t n) {
    double worst = 0, scale = 1e-30;
    for (size_t i = 0; i < n; ++i) {
        worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
        scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
    }
    return worst / scale;
}

starkv_token argmax(const float* l, size_t n) { return static_cast<starkv_token>(std::max_element(l, l + n) - l); }

// Logits after each token of `tokens` evaluated one sequence at a time
// (prompt in one eval, then token by token) in a fresh context.
std::vector<std::vector<float>> alone(const starkv_model* m, const std::vector<starkv_token>& tokens, size_t n_prompt) {
    const size_t V = n_vocab(m);
    ContextPtr c = pooled(m);
    std::vector<std::vector<float>> out;
    const float* l = nullptr;
    EXPECT_EQ(starkv_context_eval(c.get(), tokens.data(), n_prompt, false), STARKV_OK);
    EXPECT_EQ(starkv_context_logits(c.get(), -1, &l), STARKV_OK);
    out.emplace_back(l, l + V);
    for (size_t i = n_prompt; i < tokens.size(); ++i) {
        EXPECT_EQ(starkv_context_decode(c.get(), tokens[i]), STARKV_OK);
        EXPECT_EQ(starkv_context_logits(c.get(), -1, &l), STARKV_OK);
        out.emplace_back(l, l + V);
    }
    return out;
}

class Sequences : public ::testing::TestWithParam<bool> {
protected:
    const starkv_model* model() { return GetParam() ? starkv_model_4bit() : plain_model(); }
};

INSTANTIATE_TEST_SUITE_P(Models, Sequences, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "StarKv4bit" : "Fp32"; });

// Three sequences' prompts in one batch, then greedy decode steps of all three
// per batch (one joins late, one leaves early), against each sequence alone.
TEST_P(Sequences, BatchedDecodingEqualsEachSequenceAlone) {
    const starkv_model* m = model();
    ASSERT_NE(m, nullptr);
    const size_t V = n_vocab(m);
    ContextPtr c = pooled(m);
    const std::vector<std::vector<starkv_token>> prompts{prompt(21, 1), prompt(7, 2), prompt(40, 3)};
    std::map<int, std::vector<starkv_token>> seq_tokens;
    std::map<int, std::vector<std::vector<float>>> got;
    std::vector<starkv_batch_item> items;
    for (int s = 0; s < 2; ++s) {  // sequence 3 joins at the third step
        ASSERT_EQ(starkv_seq_create(c.get(), s + 1), STARKV_OK);
        for (size_t i = 0; i < prompts[s].size(); ++i)
            items.push_back({prompts[s][i], s + 1, static_cast<uint32_t>(i), i + 1 == prompts[s].size()});
        seq_tokens[s + 1] = prompts[s];
    }
    for (int step = 0; step < 8; ++step) {
        ASSERT_EQ(starkv_batch_eval(c.get(), items.data(), items.size()), STARKV_OK) << starkv_last_error();
        std::vector<starkv_batch_item> next;
        for (size_t i = 0; i < items.size(); ++i) {
            if (!items[i].logits) continue;
            const float* l = nullptr;
            ASSERT_EQ(starkv_batch_logits(c.get(), i, &l), STARKV_OK);
            const float* ls = nullptr;
            ASSERT_EQ(starkv_seq_logits(c.get(), items[i].seq, &ls), STARKV_OK);
            ASSERT_EQ(std::vector<float>(l, l + V), std::vector<float>(ls, ls + V));
            got[items[i].seq].emplace_back(l, l + V);
            const starkv_token t = argmax(l, V);
            if (items[i].seq == 2 && step == 5) {  // sequence 2 leaves
                ASSERT_EQ(starkv_seq_remove(c.get(), 2), STARKV_OK);
                continue;
            }
            next.push_back({t, items[i].seq, static_cast<uint32_t>(seq_tokens[items[i].seq].size()), true});
            seq_tokens[items[i].seq].push_back(t);
        }
        if (step == 2) {
            ASSERT_EQ(starkv_seq_create(c.get(), 3), STARKV_OK);
            for (size_t i = 0; i < prompts[2].size(); ++i)
                next.push_back({prompts[2][i], 3, static_cast<uint32_t>(i), i + 1 == prompts[2].size()});
            seq_tokens[3] = prompts[2];
        }
        items = next;
    }
    for (auto& [seq, rows] : got) {
        const std::vector<starkv_token>& toks = seq_tokens[seq];
        const size_t n_prompt = prompts[static_cast<size_t>(seq - 1)].size();
        const auto ref = alone(m, std::vector<starkv_token>(toks.begin(), toks.begin() + static_cast<std::ptrdiff_t>(n_prompt + rows.size() - 1)), n_prompt);
        ASSERT_EQ(ref.size(), rows.size());
        for (size_t i = 0; i < rows.size(); ++i)
            EXPECT_LT(rel_err(rows[i].data(), ref[i].data(), V), 1e-5) << "sequence " << seq << " step " << i;
    }
}

// A fork shares the prompt's pages; both sides then take different tokens and
// each equals a fresh computation of its own text.
TEST_P(Sequences, ForkThenDivergeEqualsFreshComputation) {
    const starkv_model* m = model();
    ASSERT_NE(m, nullptr);
    const size_t V = n_vocab(m);
    ContextPtr c = pooled(m);
    const std::vector<starkv_token> p = prompt(27, 4);  // the last page is partial: written after the fork
    ASSERT_EQ(starkv_seq_create(c.get(), 1), STARKV_OK);
    ASSERT_EQ(starkv_seq_prefill(c.get(), 1, p.data(), p.size(), nullptr), STARKV_OK);
    ASSERT_EQ(starkv_seq_fork(c.get(), 1, 2), STARKV_OK);
    const float* l1 = nullptr;
    const float* l2 = nullptr;
    ASSERT_EQ(starkv_seq_logits(c.get(), 1, &l1), STARKV_OK);
    ASSERT_EQ(starkv_seq_logits(c.get(), 2, &l2), STARKV_OK);
    EXPECT_EQ(std::vector<float>(l1, l1 + V), std::vector<float>(l2, l2 + V));
    std::vector<starkv_token> a = p, b = p;
    for (int step = 0; step < 4; ++step) {
        a.push_back(static_cast<starkv_token>(10 + step));
        b.push_back(static_cast<starkv_token>(300 + step));
        const starkv_batch_item items[] = {{a.back(), 1, static_cast<uint32_t>(a.size() - 1), true},
                                           {b.back(), 2, static_cast<uint32_t>(b.size() - 1), true}};
        ASSERT_EQ(starkv_batch_eval(c.get(), items, 2), STARKV_OK) << starkv_last_error();
    }
    starkv_pool_stats st;
    starkv_pool_stats_default(&st);
    ASSERT_EQ(starkv_context_pool_stats(c.get(), &st), STARKV_OK);
    EXPECT_GE(st.cow_copies, 1u);
    // The shared full page is held once by both: fewer pages than two copies.
    EXPECT_LT(st.pages_used, 2u * ((a.size() + 15) / 16));
    for (auto [seq, toks] : {std::pair{1, a}, std::pair{2, b}}) {
        const auto ref = alone(m, toks, toks.size());
        const float* l = nullptr;
        ASSERT_EQ(starkv_seq_logits(c.get(), seq, &l), STARKV_OK);
        EXPECT_LT(rel_err(l, ref.back().data(), V), 1e-5) << "sequence " << seq;
    }
}

// The same prompt twice: the second reuses the first's full pages (all but
// the last token's page), gives the same logits as recomputation, and the
// hit count says so. A prompt sharing one page reuses one page.
TEST_P(Sequences, PrefixReuseEqualsRecomputation) {
    const starkv_model* m = model();
    ASSERT_NE(m, nullptr);
    const size_t V = n_vocab(m);
    ContextPtr c = pooled(m);
    const std::vector<starkv_token> p = prompt(50, 5);
    size_t reused = 99;
    ASSERT_EQ(starkv_seq_create(c.get(), 1), STARKV_OK);
    ASSERT_EQ(starkv_seq_prefill(c.get(), 1, p.data(), p.size(), &reused), STARKV_OK);
    EXPECT_EQ(reused, 0u);
    ASSERT_EQ(starkv_seq_create(c.get(), 2), STARKV_OK);
    ASSERT_EQ(starkv_seq_prefill(c.get(), 2, p.data(), p.size(), &reused), STARKV_OK);
    EXPECT_EQ(reused, 48u);  // 49 tokens offered, 3 whole pages of 16
    std::vector<starkv_token> q(p.begin(), p.begin() + 20);
    q.push_back(7);
    ASSERT_EQ(starkv_seq_create(c.get(), 3), STARKV_OK);
    ASSERT_EQ(starkv_seq_prefill(c.get(), 3, q.data(), q.size(), &reused), STARKV_OK);
    EXPECT_EQ(reused, 16u);
    starkv_pool_stats st;
    starkv_pool_stats_default(&st);
    ASSERT_EQ(starkv_context_pool_stats(c.get(), &st), STARKV_OK);
    EXPECT_EQ(st.prefix_queried_tokens, 48u + 48u + 16u);
    EXPECT_EQ(st.prefix_hit_tokens, 48u + 16u);
    const auto ref_p = alone(m, p, p.size());
    const auto ref_q = alone(m, q, q.size());
    const float* l = nullptr;
    ASSERT_EQ(starkv_seq_logits(c.get(), 2, &l), STARKV_OK);
    EXPECT_LT(rel_err(l, ref_p.back().data(), V), 1e-5);
    ASSERT_EQ(starkv_seq_logits(c.get(), 3, &l), STARKV_OK);
    EXPECT_LT(rel_err(l, ref_q.back().data(), V), 1e-5);
    // Decoding on after a reused prefix still matches.
    const starkv_batch_item it{5, 2, static_cast<uint32_t>(p.size()), true};
    ASSERT_EQ(starkv_batch_eval(c.get(), &it, 1), STARKV_OK);
    std::vector<starkv_token> p2 = p;
    p2.push_back(5);
    ASSERT_EQ(starkv_batch_logits(c.get(), 0, &l), STARKV_OK);
    EXPECT_LT(rel_err(l, alone(m, p2, p2.size()).back().data(), V), 1e-5);
}

// A pool of 4 pages: a batch that needs more fails with KV_POOL_FULL and
// changes nothing; after a sequence leaves, the context works on.
TEST_P(Sequences, PoolExhaustionReportsStatusAndStaysUsable) {
    const starkv_model* m = model();
    ASSERT_NE(m, nullptr);
    const size_t V = n_vocab(m);
    ContextPtr probe = pooled(m);
    starkv_pool_stats st;
    starkv_pool_stats_default(&st);
    ASSERT_EQ(starkv_context_pool_stats(probe.get(), &st), STARKV_OK);
    ContextPtr c = pooled(m, 4 * st.page_bytes);
    ASSERT_EQ(starkv_context_pool_stats(c.get(), &st), STARKV_OK);
    EXPECT_EQ(st.pages_total, 4u);
    EXPECT_EQ(st.capacity_tokens, 64u);
    const std::vector<starkv_token> p = prompt(40, 6);  // 3 pages
    ASSERT_EQ(starkv_seq_create(c.get(), 1), STARKV_OK);
    ASSERT_EQ(starkv_seq_prefill(c.get(), 1, p.data(), p.size(), nullptr), STARKV_OK);
    ASSERT_EQ(starkv_seq_create(c.get(), 2), STARKV_OK);
    const std::vector<starkv_token> q = prompt(30, 7);  // 2 pages: one too many
    std::vector<starkv_batch_item> items;
    for (size_t i = 0; i < q.size(); ++i) items.push_back({q[i], 2, static_cast<uint32_t>(i), i + 1 == q.size()});
    items.push_back({9, 1, static_cast<uint32_t>(p.size()), true});
    EXPECT_TRUE(is_error(starkv_batch_eval(c.get(), items.data(), items.size()), STARKV_ERR_KV_POOL_FULL));
    uint32_t n = 0;
    ASSERT_EQ(starkv_seq_n_past(c.get(), 1, &n), STARKV_OK);
    EXPECT_EQ(n, p.size());
    ASSERT_EQ(starkv_seq_n_past(c.get(), 2, &n), STARKV_OK);
    EXPECT_EQ(n, 0u);
    EXPECT_TRUE(is_error(starkv_seq_prefill(c.get(), 2, q.data(), q.size(), nullptr), STARKV_ERR_KV_POOL_FULL));
    ASSERT_EQ(starkv_seq_n_past(c.get(), 2, &n), STARKV_OK);
    EXPECT_EQ(n, 0u);
    // Sequence 1 leaves: its 2 full pages stay cached for reuse (evicted, LRU,
    // once nothing else is left).
    ASSERT_EQ(starkv_seq_remove(c.get(), 1), STARKV_OK);
    ASSERT_EQ(starkv_seq_prefill(c.get(), 2, q.data(), q.size(), nullptr), STARKV_OK) << starkv_last_error();
    const float* l = nullptr;
    ASSERT_EQ(starkv_seq_logits(c.get(), 2, &l), STARKV_OK);
    EXPECT_LT(rel_err(l, alone(m, q, q.size()).back().data(), V), 1e-5);
    ASSERT_EQ(starkv_context_pool_stats(c.get(), &st), STARKV_OK);
    EXPECT_EQ(st.pages_used + st.pages_cached + st.pages_free, st.pages_total);
    // Sequence 0 on the legacy calls hits the same limit the same way.
    const std::vector<starkv_token> r = prompt(60, 8);
    EXPECT_TRUE(is_error(starkv_context_eval(c.get(), r.data(), r.size(), false), STARKV_ERR_KV_POOL_FULL));
    EXPECT_EQ(starkv_context_n_past(c.get()), 0u);
    ASSERT_EQ(starkv_context_eval(c.get(), r.data(), 10, false), STARKV_OK);
    ASSERT_EQ(starkv_context_pool_stats(c.get(), &st), STARKV_OK);
    EXPECT_EQ(st.evictions, 1u);
    EXPECT_EQ(st.pages_cached, 1u);
}

// Save sequences (one forked from another), restore into a fresh context: the
// next token's logits equal the original context's, bit for bit; corrupted or
// foreign states are refused and change nothing.
TEST_P(Sequences, SaveRestoreRoundTrip) {
    const starkv_model* m = model();
    ASSERT_NE(m, nullptr);
    const size_t V = n_vocab(m);
    ContextPtr a = pooled(m);
    const std::vector<starkv_token> p = prompt(35, 9);
    ASSERT_EQ(starkv_seq_create(a.get(), 4), STARKV_OK);
    ASSERT_EQ(starkv_seq_prefill(a.get(), 4, p.data(), p.size(), nullptr), STARKV_OK);
    ASSERT_EQ(starkv_seq_fork(a.get(), 4, 5), STARKV_OK);
    const starkv_batch_item step{11, 5, static_cast<uint32_t>(p.size()), false};
    ASSERT_EQ(starkv_batch_eval(a.get(), &step, 1), STARKV_OK);
    ASSERT_EQ(starkv_context_eval(a.get(), p.data(), 5, false), STARKV_OK);  // sequence 0 too

    size_t need = 0;
    ASSERT_TRUE(is_error(starkv_state_save(a.get(), nullptr, 0, nullptr, 0, &need), STARKV_ERR_BUFFER_TOO_SMALL));
    std::vector<uint8_t> state(need);
    ASSERT_EQ(starkv_state_save(a.get(), nullptr, 0, state.data(), state.size(), &need), STARKV_OK);
    ASSERT_EQ(need, state.size());
    const std::string path = starkv_test::temp_dir() + "/seqs_state_" + (GetParam() ? "kv" : "fp") + ".kvs";
    const starkv_seq_id only4[] = {4};
    ASSERT_EQ(starkv_state_save_file(a.get(), only4, 1, path.c_str()), STARKV_OK);

    // The next token on each sequence, in the original.
    const starkv_batch_item next[] = {{3, 4, static_cast<uint32_t>(p.size()), true},
                                      {3, 5, static_cast<uint32_t>(p.size() + 1), true},
                                      {3, 0, 5, true}};
    ASSERT_EQ(starkv_batch_eval(a.get(), next, 3), STARKV_OK);
    std::vector<std::vector<float>> want;
    for (size_t i = 0; i < 3; ++i) {
        const float* l = nullptr;
        ASSERT_EQ(starkv_batch_logits(a.get(), i, &l), STARKV_OK);
        want.emplace_back(l, l + V);
    }

    ContextPtr b = pooled(m);
    // Damaged: one flipped byte in the middle, a truncation; foreign model.
    std::vector<uint8_t> bad = state;
    bad[bad.size() / 2] ^= 0x40;
    EXPECT_TRUE(is_error(starkv_state_restore(b.get(), bad.data(), bad.size(), -1), STARKV_ERR_CORRUPT));
    EXPECT_TRUE(is_error(starkv_state_restore(b.get(), state.data(), state.size() - 9, -1), STARKV_ERR_CORRUPT));
    ContextPtr other = pooled(GetParam() ? plain_model() : starkv_model_4bit());
    EXPECT_TRUE(is_error(starkv_state_restore(other.get(), state.data(), state.size(), -1), STARKV_ERR_INVALID_ARGUMENT));
    starkv_pool_stats st;
    starkv_pool_stats_default(&st);
    ASSERT_EQ(starkv_context_pool_stats(b.get(), &st), STARKV_OK);
    EXPECT_EQ(st.n_sequences, 1u);  // sequence 0 only
    EXPECT_EQ(st.pages_used, 0u);

    ASSERT_EQ(starkv_state_restore(b.get(), state.data(), state.size(), -1), STARKV_OK) << starkv_last_error();
    EXPECT_EQ(starkv_context_n_past(b.get()), 5u);
    ASSERT_EQ(starkv_batch_eval(b.get(), next, 3), STARKV_OK) << starkv_last_error();
    for (size_t i = 0; i < 3; ++i) {
        const float* l = nullptr;
        ASSERT_EQ(starkv_batch_logits(b.get(), i, &l), STARKV_OK);
        EXPECT_EQ(std::vector<float>(l, l + V), want[i]) << "item " << i;
    }
    // Restoring over existing sequences is refused; the file form under a new id works.
    EXPECT_TRUE(is_error(starkv_state_restore(b.get(), state.data(), state.size(), -1), STARKV_ERR_INVALID_ARGUMENT));
    ASSERT_EQ(starkv_state_restore_file(b.get(), path.c_str(), 9), STARKV_OK) << starkv_last_error();
    const starkv_batch_item n9{3, 9, static_cast<uint32_t>(p.size()), true};
    ASSERT_EQ(starkv_batch_eval(b.get(), &n9, 1), STARKV_OK);
    const float* l = nullptr;
    ASSERT_EQ(starkv_batch_logits(b.get(), 0, &l), STARKV_OK);
    EXPECT_EQ(std::vector<float>(l, l + V), want[0]);
    EXPECT_TRUE(is_error(starkv_state_restore_file(b.get(), (path + ".missing").c_str(), 10), STARKV_ERR_IO));
}

TEST(SequencesApi, BadInputsGetAStatusAndAMessage) {
    const starkv_model* m = plain_model();
    ASSERT_NE(m, nullptr);
    ContextPtr c = pooled(m);
    const starkv_token t[] = {1, 2, 3};
    EXPECT_TRUE(is_error(starkv_seq_create(nullptr, 1), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_seq_create(c.get(), -1), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_seq_create(c.get(), 0), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_seq_remove(c.get(), 0), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_seq_remove(c.get(), 7), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_seq_fork(c.get(), 7, 8), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_seq_truncate(c.get(), 7, 0), STARKV_ERR_INVALID_ARGUMENT));
    ASSERT_EQ(starkv_seq_create(c.get(), 1), STARKV_OK);
    EXPECT_TRUE(is_error(starkv_seq_truncate(c.get(), 1, 1), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_seq_fork(c.get(), 1, 1), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_seq_prefill(c.get(), 1, nullptr, 3, nullptr), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_seq_prefill(c.get(), 1, t, 0, nullptr), STARKV_ERR_INVALID_ARGUMENT));
    const starkv_token bad_tok[] = {1, 1 << 20};
    EXPECT_TRUE(is_error(starkv_seq_prefill(c.get(), 1, bad_tok, 2, nullptr), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_batch_eval(c.get(), nullptr, 1), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_batch_eval(c.get(), nullptr, 0), STARKV_ERR_INVALID_ARGUMENT));
    const starkv_batch_item wrong_pos{1, 1, 3, true}, no_seq{1, 42, 0, true};
    EXPECT_TRUE(is_error(starkv_batch_eval(c.get(), &wrong_pos, 1), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_batch_eval(c.get(), &no_seq, 1), STARKV_ERR_INVALID_ARGUMENT));
    const starkv_batch_item twice[] = {{1, 1, 0, false}, {2, 1, 0, true}};
    EXPECT_TRUE(is_error(starkv_batch_eval(c.get(), twice, 2), STARKV_ERR_INVALID_ARGUMENT));
    const float* l = nullptr;
    EXPECT_TRUE(is_error(starkv_batch_logits(c.get(), 0, &l), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_seq_logits(c.get(), 1, &l), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_seq_logits(c.get(), 1, nullptr), STARKV_ERR_INVALID_ARGUMENT));
    uint32_t n = 0;
    EXPECT_TRUE(is_error(starkv_seq_n_past(c.get(), 99, &n), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_seq_n_past(c.get(), 1, nullptr), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_context_pool_stats(c.get(), nullptr), STARKV_ERR_INVALID_ARGUMENT));
    size_t need = 0;
    const starkv_seq_id missing[] = {77};
    EXPECT_TRUE(is_error(starkv_state_save(c.get(), missing, 1, nullptr, 0, &need), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_state_save(c.get(), nullptr, 0, nullptr, 0, nullptr), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(is_error(starkv_state_restore(c.get(), nullptr, 0, -1), STARKV_ERR_CORRUPT));
    EXPECT_TRUE(is_error(starkv_state_restore_file(c.get(), nullptr, -1), STARKV_ERR_INVALID_ARGUMENT));
    starkv_pool_params pp;
    starkv_pool_params_default(&pp);
    starkv_context* out = nullptr;
    pp.page_tokens = 0;
    EXPECT_TRUE(is_error(starkv_context_create_pooled(m, nullptr, &pp, &out), STARKV_ERR_INVALID_ARGUMENT));
    starkv_pool_params_default(&pp);
    pp.budget_bytes = 1;  // below one page
    EXPECT_TRUE(is_error(starkv_context_create_pooled(m, nullptr, &pp, &out), STARKV_ERR_INVALID_ARGUMENT));
    EXPECT_EQ(out, nullptr);
    // Nothing above changed the context: it still evaluates.
    ASSERT_EQ(starkv_seq_prefill(c.get(), 1, t, 3, nullptr), STARKV_OK);
}

// The thread contract: one model shared by N threads, each with its own pooled
// context running batched sequences; every thread gets what one thread alone
// gets. Run under ThreadSanitizer by scripts/test.sh (the name has "Thread").
TEST(SequencesApi, ThreadsShareOneModelEachWithItsOwnContext) {
    const starkv_model* m = plain_model();  // no packing: fast under ThreadSanitizer
    ASSERT_NE(m, nullptr);
    const size_t V = n_vocab(m);
    auto session = [&](int salt, std::vector<float>* out) {
        ContextPtr c = pooled(m);
        const std::vector<starkv_token> a = prompt(20, salt), b = prompt(12, salt + 50);
        if (starkv_seq_create(c.get(), 1) != STARKV_OK || starkv_seq_create(c.get(), 2) != STARKV_OK) return;
        std::vector<starkv_batch_item> items;
        for (size_t i = 0; i < a.size(); ++i) items.push_back({a[i], 1, static_cast<uint32_t>(i), i + 1 == a.size()});
        for (size_t i = 0; i < b.size(); ++i) items.push_back({b[i], 2, static_cast<uint32_t>(i), i + 1 == b.size()});
        if (starkv_batch_eval(c.get(), items.data(), items.size()) != STARKV_OK) return;
        for (int s = 1; s <= 2; ++s) {
            const float* l = nullptr;
            if (starkv_seq_logits(c.get(), s, &l) != STARKV_OK) return;
            out->insert(out->end(), l, l + V);
        }
    };
    constexpr int kThreads = 4;
    std::vector<std::vector<float>> want(kThreads), got(kThreads);
    for (int t = 0; t < kThreads; ++t) session(t, &want[static_cast<size_t>(t)]);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) threads.emplace_back(session, t, &got[static_cast<size_t>(t)]);
    for (std::thread& th : threads) th.join();
    for (int t = 0; t < kThreads; ++t) {
        ASSERT_EQ(want[static_cast<size_t>(t)].size(), 2 * V);
        EXPECT_EQ(got[static_cast<size_t>(t)], want[static_cast<size_t>(t)]) << "thread " << t;
    }
}

}  // namespace
