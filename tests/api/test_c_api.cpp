// Happy paths through the shared library, as a user program sees it.
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <mutex>
#include <set>
#include <thread>

#include "api_util.h"
#include "gguf_writer.h"

namespace starkv_test {
namespace {

std::string golden_greedy() {
    std::string g = read_file(shared_path("golden/stories260K_greedy_from_bos_256.txt"));
    if (!g.empty() && g.back() == '\n') g.pop_back();
    return g;
}

TEST(CApi, VersionMatchesHeader) {
    EXPECT_EQ(starkv_version_number(), static_cast<unsigned>(STARKV_VERSION_NUMBER));
    EXPECT_STREQ(starkv_version_string(), STARKV_VERSION_STRING);
    const std::string expected = std::to_string(STARKV_VERSION_MAJOR) + "." + std::to_string(STARKV_VERSION_MINOR) +
                                 "." + std::to_string(STARKV_VERSION_PATCH);
    EXPECT_EQ(std::string(starkv_version_string()), expected);
    EXPECT_EQ(starkv_version_number() / 10000, static_cast<unsigned>(STARKV_VERSION_MAJOR));
}

TEST(CApi, StatusNames) {
    EXPECT_STREQ(starkv_status_name(STARKV_OK), "STARKV_OK");
    EXPECT_STREQ(starkv_status_name(STARKV_ERR_IO), "STARKV_ERR_IO");
    EXPECT_STREQ(starkv_status_name(STARKV_ERR_CONTEXT_FULL), "STARKV_ERR_CONTEXT_FULL");
    EXPECT_STREQ(starkv_status_name(STARKV_ERR_INTERNAL), "STARKV_ERR_INTERNAL");
}

TEST(CApi, ModelInfo) {
    const starkv_model* model = stories();
    ASSERT_NE(model, nullptr);
    starkv_model_info info;
    starkv_model_info_default(&info);
    EXPECT_EQ(info.struct_size, sizeof info);
    ASSERT_STARKV_OK(starkv_model_get_info(model, &info));
    EXPECT_EQ(info.struct_size, sizeof info);
    EXPECT_STREQ(info.architecture, "llama");
    EXPECT_STREQ(info.format, "gguf");
    EXPECT_EQ(info.n_vocab, 512);
    EXPECT_EQ(info.n_embd, 64);
    EXPECT_EQ(info.n_ff, 172);
    EXPECT_EQ(info.n_layer, 5);
    EXPECT_EQ(info.n_head, 8);
    EXPECT_EQ(info.n_head_kv, 4);
    EXPECT_EQ(info.head_dim, 8);
    EXPECT_EQ(info.n_ctx_train, 2048);  // what the file says
    EXPECT_FLOAT_EQ(info.rope_theta, 10000.0f);
    EXPECT_EQ(info.rope_scaling, STARKV_ROPE_SCALING_NONE);
    EXPECT_FLOAT_EQ(info.rms_norm_eps, 1e-5f);
    EXPECT_FALSE(info.tied_embeddings);  // the file stores output.weight
    EXPECT_EQ(info.tokenizer, STARKV_TOKENIZER_SPM);
    EXPECT_EQ(info.bos_token, 1);
    EXPECT_EQ(info.eos_token, 2);
    EXPECT_EQ(info.unk_token, 0);
    // token_embd + output (512 x 64 each) + output_norm + 5 layers.
    const uint64_t layer = 2 * 64 + 64 * 64 + 2 * (32 * 64) + 64 * 64 + 3 * (172 * 64);
    EXPECT_EQ(info.n_params, 2u * 512 * 64 + 64 + 5 * layer);
}

TEST(CApi, TensorTable) {
    const starkv_model* model = stories();
    ASSERT_EQ(starkv_model_n_tensors(model), 48u);
    const std::string file = read_file(stories_model());
    const GgufWriter w = read_gguf(file);
    ASSERT_EQ(w.tensors.size(), 48u);
    std::set<std::string> names;
    uint64_t total = 0;
    for (size_t i = 0; i < 48; ++i) {
        starkv_tensor_info t;
        starkv_tensor_info_default(&t);
        ASSERT_STARKV_OK(starkv_model_tensor(model, i, &t));
        const GgufTensor& g = w.tensors[i];
        EXPECT_EQ(t.name, g.name);
        EXPECT_STREQ(t.dtype, "F32") << t.name;
        ASSERT_EQ(t.n_dims, static_cast<int32_t>(g.dims.size())) << t.name;
        for (int32_t d = 0; d < t.n_dims; ++d)  // outermost first, GGUF stores innermost first
            EXPECT_EQ(static_cast<uint64_t>(t.shape[d]), g.dims[g.dims.size() - 1 - static_cast<size_t>(d)]) << t.name;
        EXPECT_EQ(t.n_bytes, g.data.size()) << t.name;
        EXPECT_EQ(t.offset % 32, 0u) << t.name;
        ASSERT_LE(t.offset + t.n_bytes, file.size()) << t.name;
        EXPECT_TRUE(file.compare(t.offset, t.n_bytes, g.data) == 0) << t.name << ": offset does not point at its data";
        names.insert(t.name);
        total += t.n_bytes;
    }
    EXPECT_EQ(names.size(), 48u);
    for (const char* n : {"token_embd.weight", "output.weight", "output_norm.weight", "blk.0.attn_q.weight",
                          "blk.4.ffn_down.weight"})
        EXPECT_TRUE(names.count(n)) << n;
    starkv_model_info info;
    starkv_model_info_default(&info);
    ASSERT_STARKV_OK(starkv_model_get_info(model, &info));
    EXPECT_EQ(total, info.n_params * 4);

    starkv_tensor_info t;
    starkv_tensor_info_default(&t);
    ASSERT_STARKV_OK(starkv_model_tensor(model, 0, &t));
    EXPECT_STREQ(t.name, "token_embd.weight");
    EXPECT_EQ(t.n_dims, 2);
    EXPECT_EQ(t.shape[0], 512);
    EXPECT_EQ(t.shape[1], 64);
    EXPECT_EQ(t.n_bytes, 512u * 64 * 4);
}

TEST(CApi, TokenizeDetokenizeRoundTrip) {
    const starkv_model* model = stories();
    const std::vector<std::string> texts = {
        "Once upon a time, there was a little girl named Lily.",
        "Hello world",
        " leading space",
        "two  spaces and\nnew lines\n\n",
        "h\xc3\xa9llo w\xc3\xb6rld \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80",  // byte fallback
        "a",
        "",
    };
    for (const std::string& s : texts) {
        for (bool bos : {true, false}) {
            std::vector<starkv_token> toks = tokenize(model, s, bos);
            if (bos) {
                ASSERT_FALSE(toks.empty());
                EXPECT_EQ(toks[0], 1);
            }
            for (starkv_token t : toks) EXPECT_TRUE(t >= 0 && t < 512);
            std::string out(s.size() + 16, '\0');
            size_t n = 0;
            ASSERT_STARKV_OK(starkv_detokenize(model, toks.data(), toks.size(), out.data(), out.size(), &n));
            out.resize(n);
            EXPECT_EQ(out, s) << "add_bos=" << bos;
        }
    }
    // Pieces: BOS renders as "" unless render_special; a word piece reads with its space.
    char buf[32];
    size_t n = 9;
    ASSERT_STARKV_OK(starkv_token_to_piece(model, 1, false, buf, sizeof buf, &n));
    EXPECT_EQ(n, 0u);
    ASSERT_STARKV_OK(starkv_token_to_piece(model, 1, true, buf, sizeof buf, &n));
    EXPECT_GT(n, 0u);
    std::vector<starkv_token> once = tokenize(model, "Once upon", false);
    std::string joined;
    for (starkv_token t : once) {
        ASSERT_STARKV_OK(starkv_token_to_piece(model, t, false, buf, sizeof buf, &n));
        joined.append(buf, n);
    }
    EXPECT_EQ(joined, " Once upon");
    // parse_special turns "<s>" into BOS; without it, it is text.
    const std::string sp = "<s>";
    starkv_token toks[16];
    ASSERT_STARKV_OK(starkv_tokenize(model, sp.data(), sp.size(), false, true, toks, 16, &n));
    ASSERT_EQ(n, 1u);
    EXPECT_EQ(toks[0], 1);
    ASSERT_STARKV_OK(starkv_tokenize(model, sp.data(), sp.size(), false, false, toks, 16, &n));
    EXPECT_GT(n, 1u);
}

TEST(CApi, GreedyFromBosMatchesGolden) {
    ContextPtr ctx = make_context(stories(), 0, 2);
    ASSERT_EQ(starkv_context_n_ctx(ctx.get()), 2048u);  // 0 = the model's training context
    SamplerPtr s = make_sampler(0.0f);
    starkv_generate_result r;
    starkv_generate_result_default(&r);
    const std::string text = generate_text(ctx.get(), s.get(), {1}, 256, false, &r);
    EXPECT_EQ(text, golden_greedy());
    EXPECT_EQ(r.n_prompt_tokens, 1u);
    EXPECT_EQ(r.n_generated, 256u);
    EXPECT_EQ(r.stop_reason, STARKV_STOP_MAX_TOKENS);
    EXPECT_GE(r.prompt_seconds, 0.0);
    EXPECT_GT(r.decode_seconds, 0.0);
    EXPECT_EQ(starkv_context_n_past(ctx.get()), 257u);
}

TEST(CApi, GreedyWithManualLoopMatchesGolden) {
    // The same text from eval + sample + token_to_piece by hand.
    const starkv_model* model = stories();
    ContextPtr ctx = make_context(model, 300);
    SamplerPtr s = make_sampler(0.0f);
    std::vector<starkv_token> seq{1};
    ASSERT_STARKV_OK(starkv_context_decode(ctx.get(), 1));
    for (int i = 0; i < 256; ++i) {
        const float* l = nullptr;
        ASSERT_STARKV_OK(starkv_context_logits(ctx.get(), -1, &l));
        starkv_token t = -1;
        ASSERT_STARKV_OK(starkv_sampler_sample(s.get(), l, 512, &t));
        ASSERT_STARKV_OK(starkv_sampler_accept(s.get(), t));
        seq.push_back(t);
        ASSERT_STARKV_OK(starkv_context_decode(ctx.get(), t));
    }
    std::string text(4096, '\0');
    size_t n = 0;
    ASSERT_STARKV_OK(starkv_detokenize(model, seq.data(), seq.size(), text.data(), text.size(), &n));
    text.resize(n);
    EXPECT_EQ(text, golden_greedy());
}

TEST(CApi, SeededSamplingIsReproducible) {
    const starkv_model* model = stories();
    const std::vector<starkv_token> prompt = tokenize(model, "Once upon a time", true);
    auto run = [&](uint64_t seed) {
        ContextPtr ctx = make_context(model, 256, 1, seed);
        SamplerPtr s = make_sampler(0.9f, seed);
        return generate_text(ctx.get(), s.get(), prompt, 80, true);
    };
    const std::string a = run(1234), b = run(1234);
    EXPECT_FALSE(a.empty());
    EXPECT_EQ(a, b);
    std::set<std::string> distinct;
    for (uint64_t seed : {1u, 2u, 3u, 4u}) distinct.insert(run(seed));
    EXPECT_GT(distinct.size(), 1u) << "the seed has no effect";
}

std::vector<std::pair<starkv_log_level, std::string>> g_logs;
std::mutex g_logs_mutex;
void collect_log(starkv_log_level level, const char* message, void* user) {
    std::lock_guard<std::mutex> lock(g_logs_mutex);
    EXPECT_EQ(user, &g_logs);
    g_logs.emplace_back(level, message ? message : "(null)");
}

TEST(CApi, LogCallbackAndNothingOnStdoutOrStderr) {
    std::fflush(stdout);
    std::fflush(stderr);
    const std::string cap_path = temp_dir() + "/captured_fds.txt";
    const int cap = ::open(cap_path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    ASSERT_GE(cap, 0);
    const int saved1 = ::dup(1), saved2 = ::dup(2);
    ::dup2(cap, 1);
    ::dup2(cap, 2);

    starkv_set_log_callback(collect_log, &g_logs);
    starkv_model* m = nullptr;
    starkv_status st = starkv_model_load(stories_model().c_str(), nullptr, &m);
    std::string text;
    if (st == STARKV_OK) {
        ContextPtr ctx = make_context(m, 64);
        SamplerPtr s = make_sampler(0.8f, 7);
        text = generate_text(ctx.get(), s.get(), {1}, 32, false);
        // An error path too.
        starkv_model* bad = nullptr;
        starkv_model_load("/nonexistent/x.gguf", nullptr, &bad);
        starkv_model_free(m);
    }
    starkv_set_log_callback(nullptr, nullptr);

    std::fflush(stdout);
    std::fflush(stderr);
    ::dup2(saved1, 1);
    ::dup2(saved2, 2);
    ::close(saved1);
    ::close(saved2);
    ::close(cap);
    ASSERT_EQ(st, STARKV_OK);
    EXPECT_FALSE(text.empty());
    EXPECT_EQ(read_file(cap_path), "") << "the library wrote to stdout/stderr";
    size_t n_logs = 0;
    {
        std::lock_guard<std::mutex> lock(g_logs_mutex);
        EXPECT_FALSE(g_logs.empty()) << "no log message during a load";
        for (const auto& [level, msg] : g_logs) {
            EXPECT_TRUE(level >= STARKV_LOG_DEBUG && level <= STARKV_LOG_ERROR);
            EXPECT_FALSE(msg.empty());
        }
        n_logs = g_logs.size();
    }
    // After removing the callback nothing arrives.
    starkv_model* m2 = nullptr;
    starkv_model_load(stories_model().c_str(), nullptr, &m2);
    starkv_model_free(m2);
    std::lock_guard<std::mutex> lock(g_logs_mutex);
    EXPECT_EQ(g_logs.size(), n_logs);
}

TEST(CApi, SharedModelConcurrentContexts) {
    const starkv_model* model = stories();
    const std::vector<std::string> prompts = {"Once upon a time", "The cat", "Lily and Ben", "One day"};
    auto gen = [&](size_t i) {
        ContextPtr ctx = make_context(model, 128, 1, i);
        SamplerPtr s = make_sampler(0.8f, 100 + i);
        return generate_text(ctx.get(), s.get(), tokenize(model, prompts[i], true), 64, false);
    };
    std::vector<std::string> sequential(4), parallel(4);
    for (size_t i = 0; i < 4; ++i) sequential[i] = gen(i);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < 4; ++i) threads.emplace_back([&, i] { parallel[i] = gen(i); });
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < 4; ++i) {
        EXPECT_FALSE(sequential[i].empty());
        EXPECT_EQ(parallel[i], sequential[i]) << "thread " << i;
    }
}

TEST(CApi, KvStats) {
    const starkv_model* model = stories();
    ContextPtr ctx = make_context(model, 64);
    starkv_kv_stats st;
    starkv_kv_stats_default(&st);
    ASSERT_STARKV_OK(starkv_context_kv_stats(ctx.get(), &st));
    const uint64_t per_token = 2ull * 5 * 4 * 8 * 4;  // K and V, layers, kv heads, head_dim, fp32
    EXPECT_EQ(st.bytes_per_token, per_token);
    EXPECT_EQ(st.n_tokens, 0u);
    EXPECT_EQ(st.n_ctx, 64u);
    EXPECT_EQ(st.bytes_in_use, 0u);
    EXPECT_GE(st.bytes_reserved, 64 * per_token);
    const std::vector<starkv_token> toks = tokenize(model, "Once upon a time, there was a girl", true);
    ASSERT_STARKV_OK(starkv_context_eval(ctx.get(), toks.data(), toks.size(), false));
    ASSERT_STARKV_OK(starkv_context_kv_stats(ctx.get(), &st));
    EXPECT_EQ(st.n_tokens, toks.size());
    EXPECT_EQ(st.bytes_in_use, toks.size() * per_token);
    ASSERT_STARKV_OK(starkv_context_rewind(ctx.get(), 3));
    ASSERT_STARKV_OK(starkv_context_kv_stats(ctx.get(), &st));
    EXPECT_EQ(st.n_tokens, 3u);
    EXPECT_EQ(st.bytes_in_use, 3 * per_token);
}

TEST(CApi, ResetAndRewindReproduceGeneration) {
    const starkv_model* model = stories();
    const std::vector<starkv_token> prompt = tokenize(model, "Once upon a time, there was", true);
    ContextPtr ctx = make_context(model, 128);
    SamplerPtr s = make_sampler(0.0f);
    const std::string first = generate_text(ctx.get(), s.get(), prompt, 30, false);
    ASSERT_FALSE(first.empty());

    ASSERT_STARKV_OK(starkv_context_reset(ctx.get()));
    EXPECT_EQ(starkv_context_n_past(ctx.get()), 0u);
    ASSERT_STARKV_OK(starkv_sampler_reset(s.get()));
    EXPECT_EQ(generate_text(ctx.get(), s.get(), prompt, 30, false), first);

    // Rewind to just before the last prompt token and feed it again.
    ASSERT_STARKV_OK(starkv_context_rewind(ctx.get(), static_cast<uint32_t>(prompt.size() - 1)));
    ASSERT_STARKV_OK(starkv_sampler_reset(s.get()));
    EXPECT_EQ(generate_text(ctx.get(), s.get(), {prompt.back()}, 30, false), first);

    // Seeded sampling: reset context and sampler, same text.
    SamplerPtr r = make_sampler(1.0f, 99);
    ASSERT_STARKV_OK(starkv_context_reset(ctx.get()));
    const std::string a = generate_text(ctx.get(), r.get(), prompt, 30, false);
    ASSERT_STARKV_OK(starkv_context_reset(ctx.get()));
    ASSERT_STARKV_OK(starkv_sampler_reset(r.get()));
    EXPECT_EQ(generate_text(ctx.get(), r.get(), prompt, 30, false), a);

    // Generation continues after what the context holds (empty prompt).
    ASSERT_STARKV_OK(starkv_context_reset(ctx.get()));
    ASSERT_STARKV_OK(starkv_sampler_reset(s.get()));
    const std::string part1 = generate_text(ctx.get(), s.get(), prompt, 10, false);
    const std::string part2 = generate_text(ctx.get(), s.get(), {}, 20, false);
    EXPECT_EQ(part1 + part2, first);
}

TEST(CApi, ScoreMatchesLogitsByHand) {
    const starkv_model* model = stories();
    const std::vector<starkv_token> toks =
        tokenize(model, "Once upon a time, there was a little girl named Lily. She liked to play outside.", true);
    ASSERT_GT(toks.size(), 10u);
    ContextPtr ctx = make_context(model, 128);
    double nll = 0;
    size_t n_scored = 0;
    ASSERT_STARKV_OK(starkv_context_score(ctx.get(), toks.data(), toks.size(), &nll, &n_scored));
    EXPECT_EQ(n_scored, toks.size() - 1);
    EXPECT_TRUE(std::isfinite(nll));
    EXPECT_GT(nll, 0.0);
    const double ppl = std::exp(nll / static_cast<double>(n_scored));
    EXPECT_GT(ppl, 1.0);
    EXPECT_LT(ppl, 50.0);

    // Scoring resets the context: same result again, even after other work.
    ASSERT_STARKV_OK(starkv_context_decode(ctx.get(), 5));
    double nll2 = 0;
    size_t n2 = 0;
    ASSERT_STARKV_OK(starkv_context_score(ctx.get(), toks.data(), toks.size(), &nll2, &n2));
    EXPECT_EQ(nll2, nll);

    // By hand from all_logits.
    ASSERT_STARKV_OK(starkv_context_reset(ctx.get()));
    ASSERT_STARKV_OK(starkv_context_eval(ctx.get(), toks.data(), toks.size(), true));
    double sum = 0;
    for (size_t i = 0; i + 1 < toks.size(); ++i) {
        const float* l = nullptr;
        ASSERT_STARKV_OK(starkv_context_logits(ctx.get(), static_cast<int32_t>(i), &l));
        double mx = l[0];
        for (int v = 1; v < 512; ++v) mx = std::max(mx, static_cast<double>(l[v]));
        double z = 0;
        for (int v = 0; v < 512; ++v) z += std::exp(l[v] - mx);
        sum += -(l[toks[i + 1]] - mx - std::log(z));
    }
    EXPECT_NEAR(sum, nll, 1e-6 * std::abs(nll));
    const float* last = nullptr;
    const float* minus1 = nullptr;
    ASSERT_STARKV_OK(starkv_context_logits(ctx.get(), static_cast<int32_t>(toks.size() - 1), &last));
    ASSERT_STARKV_OK(starkv_context_logits(ctx.get(), -1, &minus1));
    EXPECT_EQ(last, minus1);
}

TEST(CApi, BatchEvalMatchesTokenByToken) {
    const starkv_model* model = stories();
    const std::vector<starkv_token> toks = tokenize(model, "Once upon a time, there was a little dog.", true);
    ContextPtr a = make_context(model, 64), b = make_context(model, 64);
    ASSERT_STARKV_OK(starkv_context_eval(a.get(), toks.data(), toks.size(), false));
    for (starkv_token t : toks) ASSERT_STARKV_OK(starkv_context_decode(b.get(), t));
    const float *la = nullptr, *lb = nullptr;
    ASSERT_STARKV_OK(starkv_context_logits(a.get(), -1, &la));
    ASSERT_STARKV_OK(starkv_context_logits(b.get(), -1, &lb));
    for (int v = 0; v < 512; ++v) EXPECT_NEAR(la[v], lb[v], 1e-4f) << v;
}

// An older caller knows only the first fields of a struct.
TEST(CApi, SmallerStructSizeIsAccepted) {
    const starkv_model* model = stories();
    starkv_model_params mp;
    starkv_model_params_default(&mp);
    mp.struct_size = sizeof(uint32_t);
    mp.progress = reinterpret_cast<starkv_progress_fn>(uintptr_t{0x1});  // beyond struct_size: must be ignored
    EXPECT_STARKV_OK(try_load(stories_model(), &mp));

    starkv_context_params cp;
    starkv_context_params_default(&cp);
    cp.n_ctx = 48;
    cp.n_threads = 1;
    cp.seed = 0xFFFFFFFFFFFFull;
    cp.struct_size = offsetof(starkv_context_params, seed);
    starkv_context* c = nullptr;
    ASSERT_STARKV_OK(starkv_context_create(model, &cp, &c));
    ContextPtr ctx(c);
    EXPECT_EQ(starkv_context_n_ctx(ctx.get()), 48u);

    starkv_sampler_params sp;
    starkv_sampler_params_default(&sp);
    sp.temperature = 0.0f;
    sp.struct_size = offsetof(starkv_sampler_params, top_k);
    starkv_sampler* s = nullptr;
    ASSERT_STARKV_OK(starkv_sampler_create(&sp, &s));
    SamplerPtr sampler(s);

    starkv_generate_params gp;
    starkv_generate_params_default(&gp);
    gp.max_tokens = 256;
    gp.stop_at_eos = false;
    gp.on_piece = reinterpret_cast<starkv_piece_fn>(uintptr_t{0x1});  // beyond struct_size
    gp.struct_size = offsetof(starkv_generate_params, on_piece);
    // Result struct of an older caller: only the first fields are written.
    struct {
        starkv_generate_result r;
        unsigned char guard[16];
    } res;
    std::memset(&res, 0xAB, sizeof res);
    res.r.struct_size = offsetof(starkv_generate_result, stop_reason);
    const starkv_token bos = 1;
    ASSERT_STARKV_OK(starkv_generate(ctx.get(), sampler.get(), &bos, 1, &gp, &res.r));
    EXPECT_EQ(res.r.struct_size, offsetof(starkv_generate_result, stop_reason));
    EXPECT_EQ(res.r.n_prompt_tokens, 1u);
    EXPECT_GE(res.r.n_generated, 47u);  // stops when the 48-token context is full
    EXPECT_LE(res.r.n_generated, 48u);
    const unsigned char* raw = reinterpret_cast<const unsigned char*>(&res.r);
    for (size_t i = offsetof(starkv_generate_result, stop_reason); i < sizeof res.r; ++i)
        EXPECT_EQ(raw[i], 0xAB) << "byte " << i << " beyond struct_size was written";

    starkv_model_info info;
    std::memset(&info, 0xCD, sizeof info);
    info.struct_size = offsetof(starkv_model_info, n_vocab);
    ASSERT_STARKV_OK(starkv_model_get_info(model, &info));
    EXPECT_STREQ(info.architecture, "llama");
    EXPECT_EQ(info.n_vocab, static_cast<int32_t>(0xCDCDCDCD));
    EXPECT_EQ(info.struct_size, offsetof(starkv_model_info, n_vocab));

    starkv_kv_stats ks;
    std::memset(&ks, 0xEE, sizeof ks);
    ks.struct_size = offsetof(starkv_kv_stats, bytes_in_use);
    ASSERT_STARKV_OK(starkv_context_kv_stats(ctx.get(), &ks));
    EXPECT_EQ(ks.n_ctx, 48u);
    EXPECT_EQ(ks.bytes_per_token, 0xEEEEEEEEEEEEEEEEull);

    // A newer caller's larger struct is accepted too (the extra bytes ignored).
    struct {
        starkv_context_params p;
        uint64_t future_field;
    } bigger;
    starkv_context_params_default(&bigger.p);
    bigger.p.n_ctx = 32;
    bigger.p.struct_size = sizeof bigger;
    bigger.future_field = 12345;
    ASSERT_STARKV_OK(starkv_context_create(model, &bigger.p, &c));
    starkv_context_free(c);
}

TEST(CApi, NullParamsMeanDefaults) {
    starkv_sampler* s = nullptr;
    ASSERT_STARKV_OK(starkv_sampler_create(nullptr, &s));
    starkv_sampler_free(s);
    starkv_model* m = nullptr;
    ASSERT_STARKV_OK(starkv_model_load(stories_model().c_str(), nullptr, &m));
    starkv_model_free(m);
}

TEST(CApi, SamplerGreedyIsArgmaxAndDefaults) {
    starkv_sampler_params p;
    starkv_sampler_params_default(&p);
    EXPECT_EQ(p.struct_size, sizeof p);
    EXPECT_FLOAT_EQ(p.temperature, 0.8f);
    EXPECT_EQ(p.top_k, 40);
    EXPECT_FLOAT_EQ(p.top_p, 0.95f);
    EXPECT_FLOAT_EQ(p.min_p, 0.05f);
    EXPECT_FLOAT_EQ(p.repeat_penalty, 1.0f);
    EXPECT_EQ(p.penalty_last_n, 64);
    starkv_generate_params gp;
    starkv_generate_params_default(&gp);
    EXPECT_EQ(gp.max_tokens, 128);
    EXPECT_TRUE(gp.stop_at_eos);

    SamplerPtr s = make_sampler(0.0f);
    std::vector<float> logits(100);
    for (int i = 0; i < 100; ++i) logits[static_cast<size_t>(i)] = std::sin(static_cast<float>(i));
    starkv_token t = -1;
    ASSERT_STARKV_OK(starkv_sampler_sample(s.get(), logits.data(), logits.size(), &t));
    EXPECT_EQ(t, std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace
}  // namespace starkv_test
