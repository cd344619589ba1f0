// Every error path of the C API: a status and a non-empty one-line
// starkv_last_error(), never a crash, and outputs left in a defined state.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <set>
#include <thread>

#include "api_util.h"
#include "gguf_writer.h"

namespace starkv_test {
namespace {

starkv_model* const kGarbageModel = reinterpret_cast<starkv_model*>(uintptr_t{0x1});

// ---- NULL arguments, function by function -------------------------------

TEST(CApiNull, DefaultsAndFreeAcceptNull) {
    starkv_model_params_default(nullptr);
    starkv_model_info_default(nullptr);
    starkv_tensor_info_default(nullptr);
    starkv_context_params_default(nullptr);
    starkv_kv_stats_default(nullptr);
    starkv_sampler_params_default(nullptr);
    starkv_generate_params_default(nullptr);
    starkv_generate_result_default(nullptr);
    starkv_model_free(nullptr);
    starkv_context_free(nullptr);
    starkv_sampler_free(nullptr);
    starkv_set_log_callback(nullptr, nullptr);
    EXPECT_NE(starkv_last_error(), nullptr);
    EXPECT_NE(starkv_status_name(static_cast<starkv_status>(999)), nullptr);
    EXPECT_NE(starkv_status_name(static_cast<starkv_status>(-1)), nullptr);
    for (int s = 0; s <= 10; ++s) EXPECT_STRNE(starkv_status_name(static_cast<starkv_status>(s)), "");
    EXPECT_EQ(starkv_model_n_tensors(nullptr), 0u);
    EXPECT_EQ(starkv_context_n_past(nullptr), 0u);
    EXPECT_EQ(starkv_context_n_ctx(nullptr), 0u);
}

TEST(CApiNull, ModelLoad) {
    starkv_model* m = kGarbageModel;
    EXPECT_STARKV_ERROR(starkv_model_load(nullptr, nullptr, &m), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(m, nullptr);
    EXPECT_STARKV_ERROR(starkv_model_load(stories_model().c_str(), nullptr, nullptr), STARKV_ERR_INVALID_ARGUMENT);
}

TEST(CApiNull, ModelInfoAndTensors) {
    const starkv_model* model = stories();
    ASSERT_NE(model, nullptr);
    starkv_model_info info;
    starkv_model_info_default(&info);
    EXPECT_STARKV_ERROR(starkv_model_get_info(nullptr, &info), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_model_get_info(model, nullptr), STARKV_ERR_INVALID_ARGUMENT);
    starkv_tensor_info ti;
    starkv_tensor_info_default(&ti);
    EXPECT_STARKV_ERROR(starkv_model_tensor(nullptr, 0, &ti), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_model_tensor(model, 0, nullptr), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_model_tensor(model, 48, &ti), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_model_tensor(model, SIZE_MAX, &ti), STARKV_ERR_INVALID_ARGUMENT);
}

TEST(CApiNull, Tokenizer) {
    const starkv_model* model = stories();
    ASSERT_NE(model, nullptr);
    starkv_token toks[8];
    char buf[64];
    size_t n = 123;
    EXPECT_STARKV_ERROR(starkv_tokenize(nullptr, "a", 1, true, false, toks, 8, &n), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_tokenize(model, "a", 1, true, false, toks, 8, nullptr), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_tokenize(model, nullptr, 5, true, false, toks, 8, &n), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_tokenize(model, "a", 1, true, false, nullptr, 8, &n), STARKV_ERR_INVALID_ARGUMENT);
    // NULL text of length 0 is the empty text.
    EXPECT_STARKV_OK(starkv_tokenize(model, nullptr, 0, true, false, toks, 8, &n));
    EXPECT_EQ(n, 1u);

    EXPECT_STARKV_ERROR(starkv_token_to_piece(nullptr, 5, false, buf, sizeof buf, &n), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_token_to_piece(model, 5, false, buf, sizeof buf, nullptr), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_token_to_piece(model, 5, false, nullptr, 8, &n), STARKV_ERR_INVALID_ARGUMENT);

    const starkv_token t[2] = {1, 300};
    EXPECT_STARKV_ERROR(starkv_detokenize(nullptr, t, 2, buf, sizeof buf, &n), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_detokenize(model, nullptr, 2, buf, sizeof buf, &n), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_detokenize(model, t, 2, nullptr, 8, &n), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_detokenize(model, t, 2, buf, sizeof buf, nullptr), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_OK(starkv_detokenize(model, nullptr, 0, buf, sizeof buf, &n));
    EXPECT_EQ(n, 0u);
}

TEST(CApiNull, Context) {
    const starkv_model* model = stories();
    ASSERT_NE(model, nullptr);
    starkv_context* c = reinterpret_cast<starkv_context*>(uintptr_t{0x1});
    EXPECT_STARKV_ERROR(starkv_context_create(nullptr, nullptr, &c), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(c, nullptr);
    EXPECT_STARKV_ERROR(starkv_context_create(model, nullptr, nullptr), STARKV_ERR_INVALID_ARGUMENT);

    ContextPtr ctx = make_context(model, 32);
    ASSERT_NE(ctx, nullptr);
    const starkv_token tok = 1;
    EXPECT_STARKV_ERROR(starkv_context_eval(nullptr, &tok, 1, false), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_eval(ctx.get(), nullptr, 1, false), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_eval(ctx.get(), nullptr, 0, false), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_eval(ctx.get(), &tok, 0, false), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_decode(nullptr, 1), STARKV_ERR_INVALID_ARGUMENT);
    const float* logits = reinterpret_cast<const float*>(uintptr_t{0x4});
    EXPECT_STARKV_ERROR(starkv_context_logits(nullptr, -1, &logits), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(logits, nullptr);
    EXPECT_STARKV_ERROR(starkv_context_logits(ctx.get(), -1, nullptr), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_reset(nullptr), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_rewind(nullptr, 0), STARKV_ERR_INVALID_ARGUMENT);

    const starkv_token two[2] = {1, 5};
    double nll = 0;
    size_t ns = 0;
    EXPECT_STARKV_ERROR(starkv_context_score(nullptr, two, 2, &nll, &ns), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_score(ctx.get(), nullptr, 2, &nll, &ns), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_score(ctx.get(), two, 2, nullptr, &ns), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_score(ctx.get(), two, 2, &nll, nullptr), STARKV_ERR_INVALID_ARGUMENT);

    starkv_kv_stats st;
    starkv_kv_stats_default(&st);
    EXPECT_STARKV_ERROR(starkv_context_kv_stats(nullptr, &st), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_kv_stats(ctx.get(), nullptr), STARKV_ERR_INVALID_ARGUMENT);
}

TEST(CApiNull, Sampler) {
    EXPECT_STARKV_ERROR(starkv_sampler_create(nullptr, nullptr), STARKV_ERR_INVALID_ARGUMENT);
    SamplerPtr s = make_sampler(0.0f);
    ASSERT_NE(s, nullptr);
    std::vector<float> logits(512, 0.0f);
    starkv_token t = 0;
    EXPECT_STARKV_ERROR(starkv_sampler_sample(nullptr, logits.data(), 512, &t), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_sampler_sample(s.get(), nullptr, 512, &t), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_sampler_sample(s.get(), logits.data(), 512, nullptr), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_sampler_sample(s.get(), logits.data(), 0, &t), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_sampler_accept(nullptr, 1), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_sampler_reset(nullptr), STARKV_ERR_INVALID_ARGUMENT);
}

TEST(CApiNull, Generate) {
    ContextPtr ctx = make_context(stories(), 32);
    SamplerPtr s = make_sampler(0.0f);
    const starkv_token bos = 1;
    starkv_generate_result r;
    starkv_generate_result_default(&r);
    EXPECT_STARKV_ERROR(starkv_generate(nullptr, s.get(), &bos, 1, nullptr, &r), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_generate(ctx.get(), nullptr, &bos, 1, nullptr, &r), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_generate(ctx.get(), s.get(), nullptr, 1, nullptr, &r), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(starkv_context_n_past(ctx.get()), 0u);
    // Empty prompt on a fresh context: nothing to continue from.
    EXPECT_STARKV_ERROR(starkv_generate(ctx.get(), s.get(), nullptr, 0, nullptr, &r), STARKV_ERR_INVALID_ARGUMENT);
    // NULL params and NULL result are allowed.
    EXPECT_STARKV_OK(starkv_generate(ctx.get(), s.get(), &bos, 1, nullptr, nullptr));
}

// ---- struct_size --------------------------------------------------------

TEST(CApiStructSize, ZeroOrGarbageIsInvalidArgument) {
    const starkv_model* model = stories();
    ASSERT_NE(model, nullptr);
    for (uint32_t bad : {0u, 1u, 3u, 0xDEADBEEFu, 0xFFFFFFFFu}) {
        SCOPED_TRACE(bad);
        starkv_model_params mp;
        starkv_model_params_default(&mp);
        mp.struct_size = bad;
        starkv_model* m = kGarbageModel;
        EXPECT_STARKV_ERROR(starkv_model_load(stories_model().c_str(), &mp, &m), STARKV_ERR_INVALID_ARGUMENT);
        EXPECT_EQ(m, nullptr);

        starkv_context_params cp;
        starkv_context_params_default(&cp);
        cp.struct_size = bad;
        starkv_context* c = reinterpret_cast<starkv_context*>(uintptr_t{0x1});
        EXPECT_STARKV_ERROR(starkv_context_create(model, &cp, &c), STARKV_ERR_INVALID_ARGUMENT);
        EXPECT_EQ(c, nullptr);

        starkv_sampler_params sp;
        starkv_sampler_params_default(&sp);
        sp.struct_size = bad;
        starkv_sampler* s = reinterpret_cast<starkv_sampler*>(uintptr_t{0x1});
        EXPECT_STARKV_ERROR(starkv_sampler_create(&sp, &s), STARKV_ERR_INVALID_ARGUMENT);
        EXPECT_EQ(s, nullptr);

        ContextPtr ctx = make_context(model, 16);
        SamplerPtr smp = make_sampler(0.0f);
        const starkv_token bos = 1;
        starkv_generate_params gp;
        starkv_generate_params_default(&gp);
        gp.struct_size = bad;
        EXPECT_STARKV_ERROR(starkv_generate(ctx.get(), smp.get(), &bos, 1, &gp, nullptr), STARKV_ERR_INVALID_ARGUMENT);
        EXPECT_EQ(starkv_context_n_past(ctx.get()), 0u);
    }
    // Output structs: struct_size must be set (at least the size field).
    for (uint32_t bad : {0u, 1u, 3u}) {
        SCOPED_TRACE(bad);
        starkv_model_info info;
        starkv_model_info_default(&info);
        info.struct_size = bad;
        EXPECT_STARKV_ERROR(starkv_model_get_info(model, &info), STARKV_ERR_INVALID_ARGUMENT);
        starkv_tensor_info ti;
        starkv_tensor_info_default(&ti);
        ti.struct_size = bad;
        EXPECT_STARKV_ERROR(starkv_model_tensor(model, 0, &ti), STARKV_ERR_INVALID_ARGUMENT);
        ContextPtr ctx = make_context(model, 16);
        starkv_kv_stats ks;
        starkv_kv_stats_default(&ks);
        ks.struct_size = bad;
        EXPECT_STARKV_ERROR(starkv_context_kv_stats(ctx.get(), &ks), STARKV_ERR_INVALID_ARGUMENT);
        SamplerPtr smp = make_sampler(0.0f);
        starkv_generate_result r;
        starkv_generate_result_default(&r);
        r.struct_size = bad;
        const starkv_token bos = 1;
        EXPECT_STARKV_ERROR(starkv_generate(ctx.get(), smp.get(), &bos, 1, nullptr, &r), STARKV_ERR_INVALID_ARGUMENT);
    }
}

TEST(CApiParams, OutOfRangeValues) {
    const starkv_model* model = stories();
    starkv_context_params cp;
    starkv_context_params_default(&cp);
    cp.n_ctx = (1u << 24) + 1;
    starkv_context* c = nullptr;
    EXPECT_STARKV_ERROR(starkv_context_create(model, &cp, &c), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(c, nullptr);
    starkv_context_params_default(&cp);
    cp.n_threads = 100000;
    EXPECT_STARKV_ERROR(starkv_context_create(model, &cp, &c), STARKV_ERR_INVALID_ARGUMENT);

    starkv_sampler_params sp;
    starkv_sampler_params_default(&sp);
    sp.temperature = std::numeric_limits<float>::quiet_NaN();
    starkv_sampler* s = nullptr;
    EXPECT_STARKV_ERROR(starkv_sampler_create(&sp, &s), STARKV_ERR_INVALID_ARGUMENT);
    starkv_sampler_params_default(&sp);
    sp.repeat_penalty = 0.0f;
    EXPECT_STARKV_ERROR(starkv_sampler_create(&sp, &s), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(s, nullptr);

    ContextPtr ctx = make_context(model, 16);
    SamplerPtr smp = make_sampler(0.0f);
    starkv_generate_params gp;
    starkv_generate_params_default(&gp);
    gp.max_tokens = -1;
    const starkv_token bos = 1;
    EXPECT_STARKV_ERROR(starkv_generate(ctx.get(), smp.get(), &bos, 1, &gp, nullptr), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(starkv_context_n_past(ctx.get()), 0u);
}

// ---- files ---------------------------------------------------------------

TEST(CApiLoad, MissingFileIsIo) {
    EXPECT_STARKV_ERROR(try_load(temp_dir() + "/does-not-exist.gguf"), STARKV_ERR_IO);
    EXPECT_STARKV_ERROR(try_load(""), STARKV_ERR_IO);
    EXPECT_STARKV_ERROR(try_load("/nonexistent-dir/sub/model.gguf"), STARKV_ERR_IO);
}

TEST(CApiLoad, MessageStaysOneLineForPathWithNewline) {
    // The path is echoed in the message; it must not break the one-line rule.
    EXPECT_STARKV_ERROR(try_load(temp_dir() + "/no\nsuch\rfile.gguf"), STARKV_ERR_IO);
}

TEST(CApiLoad, UnreadableFileIsIo) {
    if (::geteuid() == 0) GTEST_SKIP() << "root reads any file";
    const std::string p = write_temp("unreadable.gguf", read_file(stories_model()));
    ::chmod(p.c_str(), 0);
    EXPECT_STARKV_ERROR(try_load(p), STARKV_ERR_IO);
}

TEST(CApiLoad, DirectoryWithoutConfigJson) {
    const std::string dir = temp_dir() + "/empty_hf_dir";
    std::filesystem::create_directories(dir);
    EXPECT_STARKV_ERROR(try_load(dir), STARKV_ERR_IO);
}

TEST(CApiLoad, WrongMagicIsCorrupt) {
    std::string bytes = read_file(stories_model());
    for (const char* magic : {"GGUX", "FUGG", "GGML", "\0\0\0\0", "ggjt"}) {
        std::string b = bytes;
        std::memcpy(b.data(), magic, 4);
        EXPECT_STARKV_ERROR(try_load(write_temp("magic.gguf", b)), STARKV_ERR_CORRUPT) << magic;
    }
    EXPECT_STARKV_ERROR(try_load(write_temp("text.gguf", "hello, this is not a model\n")), STARKV_ERR_CORRUPT);
    EXPECT_STARKV_ERROR(try_load(write_temp("short.gguf", "GG")), STARKV_ERR_CORRUPT);
}

TEST(CApiLoad, EmptyFileIsCorrupt) {
    EXPECT_STARKV_ERROR(try_load(write_temp("empty.gguf", "")), STARKV_ERR_CORRUPT);
}

TEST(CApiLoad, UnsupportedGgufVersion) {
    std::string bytes = read_file(stories_model());
    for (uint32_t v : {0u, 1u, 4u, 99u, 0xFFFFFFFFu}) {
        std::string b = bytes;
        const std::string le = le_u32(v);
        std::memcpy(b.data() + 4, le.data(), 4);
        EXPECT_STARKV_ERROR(try_load(write_temp("version.gguf", b)), STARKV_ERR_UNSUPPORTED) << v;
    }
    // Version 2 has the same layout as 3 for everything this file uses.
    std::string b = bytes;
    b[4] = 2;
    EXPECT_STARKV_OK(try_load(write_temp("version2.gguf", b)));
}

// A copy of stories260K.gguf cut at many lengths: every cut is CORRUPT.
TEST(CApiLoad, TruncatedFilesAreCorrupt) {
    const std::string bytes = read_file(stories_model());
    const GgufWriter w = read_gguf(bytes);
    const uint64_t data_start = w.data_start();
    ASSERT_GT(data_start, 1000u);
    ASSERT_LT(data_start, bytes.size());

    std::set<size_t, std::greater<>> cuts;
    cuts.insert(0);
    for (size_t i = 0; i < 512; ++i) cuts.insert(i);  // header, first keys: every byte
    for (size_t i = 0; i < 16384; i += 7) cuts.insert(i);
    for (size_t i = data_start - 64; i <= data_start + 64; ++i) cuts.insert(i);  // around the data start
    // Tensor boundaries and a few hundred cuts spread over the data.
    uint64_t off = data_start;
    for (const GgufTensor& t : w.tensors) {
        for (int64_t d : {-1, 0, 1, 4}) cuts.insert(static_cast<size_t>(static_cast<int64_t>(off) + d));
        off = (off + t.data.size() + 31) / 32 * 32;
    }
    for (size_t k = 0; k < 300; ++k) cuts.insert(data_start + (bytes.size() - data_start) * k / 300 + k % 13);
    cuts.insert(bytes.size() - 1);
    cuts.insert(bytes.size() - 4);
    std::erase_if(cuts, [&](size_t c) { return c >= bytes.size(); });

    // Write the file once, then cut it shorter and shorter.
    const std::string path = write_temp("truncated.gguf", bytes);
    size_t n_fail = 0;
    for (size_t len : cuts) {
        ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(len)), 0);
        starkv_model* m = kGarbageModel;
        const starkv_status st = starkv_model_load(path.c_str(), nullptr, &m);
        const bool ok = st == STARKV_ERR_CORRUPT && m == nullptr && last_error_is_one_line();
        if (!ok) {
            ADD_FAILURE() << "cut at " << len << ": " << starkv_status_name(st) << " \"" << starkv_last_error() << "\"";
            if (st == STARKV_OK) starkv_model_free(m);
            if (++n_fail > 20) break;
        }
    }
    EXPECT_GT(cuts.size(), 2800u);
}

// ---- crafted files --------------------------------------------------------

class CraftedGguf : public ::testing::Test {
protected:
    static const GgufWriter& base() {
        static const GgufWriter w = read_gguf(read_file(stories_model()));
        return w;
    }
    static starkv_status load(const GgufWriter& w) {
        return try_load(write_temp("crafted_" + std::to_string(++counter_) + ".gguf", w.build()));
    }
    static starkv_status load_bytes(const std::string& b) {
        return try_load(write_temp("crafted_" + std::to_string(++counter_) + ".gguf", b));
    }
    static inline int counter_ = 0;
};

TEST_F(CraftedGguf, BaseLoads) { EXPECT_STARKV_OK(load(base())); }

TEST_F(CraftedGguf, AbsurdEmbeddingLength) {
    for (uint64_t v : {uint64_t{0}, uint64_t{63}, uint64_t{65}, uint64_t{1} << 31, uint64_t{0xFFFFFFFF}}) {
        GgufWriter w = base();
        w.set_u32("llama.embedding_length", static_cast<uint32_t>(v));
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT)) << "embedding_length " << v;
    }
    for (uint64_t v : {uint64_t{1} << 40, uint64_t{1} << 62, ~uint64_t{0}}) {
        GgufWriter w = base();
        w.set_u64("llama.embedding_length", v);
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT)) << "embedding_length (u64) " << v;
    }
    GgufWriter w = base();
    w.set_u32("llama.embedding_length", 128);  // consistent with the heads, not with the tensors
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    w.set_string("llama.embedding_length", "64");
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    w.set_f32("llama.embedding_length", 64.0f);
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    w.set_i32("llama.embedding_length", -64);
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
}

TEST_F(CraftedGguf, AbsurdBlockCount) {
    for (uint32_t v : {0u, 6u, 1025u, 1u << 20, 0xFFFFFFFFu}) {
        GgufWriter w = base();
        w.set_u32("llama.block_count", v);
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT)) << "block_count " << v;
    }
    GgufWriter w = base();
    w.set_u64("llama.block_count", uint64_t{1} << 62);
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
}

TEST_F(CraftedGguf, AbsurdHeadCount) {
    for (uint32_t v : {0u, 3u, 7u, 1u << 30, 0xFFFFFFFFu}) {
        GgufWriter w = base();
        w.set_u32("llama.attention.head_count", v);
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT)) << "head_count " << v;
    }
    // Divides n_embd, but the attention tensors do not match.
    GgufWriter w = base();
    w.set_u32("llama.attention.head_count", 16);
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
}

TEST_F(CraftedGguf, AbsurdKvHeadCount) {
    for (uint32_t v : {0u, 1u << 30, 0xFFFFFFFFu}) {
        GgufWriter w = base();
        w.set_u32("llama.attention.head_count_kv", v);
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT)) << "head_count_kv " << v;
    }
    // 8 query heads do not split into 3 KV groups.
    GgufWriter w = base();
    w.set_u32("llama.attention.head_count_kv", 3);
    EXPECT_TRUE(is_error_of(load(w), {STARKV_ERR_CORRUPT, STARKV_ERR_UNSUPPORTED}));
    // A valid grouping that disagrees with the K/V tensors.
    w.set_u32("llama.attention.head_count_kv", 2);
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
}

TEST_F(CraftedGguf, AbsurdOtherDims) {
    for (const char* key : {"llama.feed_forward_length", "llama.context_length", "llama.rope.dimension_count"}) {
        for (uint32_t v : {0u, 0xFFFFFFFFu}) {
            GgufWriter w = base();
            w.set_u32(key, v);
            EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT)) << key << " = " << v;
        }
    }
    GgufWriter w = base();
    w.set_u32("llama.feed_forward_length", 171);
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    w = base();
    w.set_f32("llama.attention.layer_norm_rms_epsilon", -1.0f);
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    w = base();
    w.set_f32("llama.rope.freq_base", std::numeric_limits<float>::quiet_NaN());
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
}

TEST_F(CraftedGguf, MissingRequiredKeys) {
    for (const char* key : {"llama.embedding_length", "llama.block_count", "llama.attention.head_count",
                            "llama.feed_forward_length", "tokenizer.ggml.tokens", "tokenizer.ggml.model"}) {
        GgufWriter w = base();
        ASSERT_TRUE(w.remove(key)) << key;
        EXPECT_TRUE(is_error_of(load(w), {STARKV_ERR_CORRUPT, STARKV_ERR_UNSUPPORTED})) << key;
    }
    GgufWriter w = base();
    ASSERT_TRUE(w.remove("general.architecture"));
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
}

TEST_F(CraftedGguf, HugeArrayAndStringLengths) {
    const uint64_t huge = uint64_t{1} << 62;
    {  // tokenizer.ggml.tokens claims 2^62 strings
        GgufWriter w = base();
        GgufKv* kv = w.find("tokenizer.ggml.tokens");
        ASSERT_NE(kv, nullptr);
        kv->value.replace(4, 8, le_u64(huge));
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
        kv->value.replace(4, 8, le_u64(~uint64_t{0}));
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    }
    {  // its first string claims 2^62 bytes
        GgufWriter w = base();
        GgufKv* kv = w.find("tokenizer.ggml.tokens");
        kv->value.replace(12, 8, le_u64(huge));
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    }
    {  // the scores array claims 2^62 floats
        GgufWriter w = base();
        GgufKv* kv = w.find("tokenizer.ggml.scores");
        ASSERT_NE(kv, nullptr);
        kv->value.replace(4, 8, le_u64(huge));
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    }
    {  // a string value of 2^62 bytes
        GgufWriter w = base();
        w.set_raw("general.name", GGUF_STRING, le_u64(huge) + "x");
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    }
    {  // a key of 2^62 bytes
        GgufWriter w = base();
        w.kvs.insert(w.kvs.begin() + 3, GgufKv{"", 0, "", le_u64(huge) + "general.x"});
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    }
    {  // a tensor name of 2^62 bytes
        GgufWriter w = base();
        std::string b = w.build();
        // The first tensor name's length field sits right after the metadata.
        std::string hdr = w.magic + le_u32(3) + le_u64(w.tensors.size()) + le_u64(w.kvs.size());
        for (const GgufKv& kv : w.kvs) hdr += gguf_str(kv.key) + le_u32(kv.type) + kv.value;
        b.replace(hdr.size(), 8, le_u64(huge));
        EXPECT_TRUE(is_error(load_bytes(b), STARKV_ERR_CORRUPT));
    }
    {  // counts in the header
        GgufWriter w = base();
        w.n_kv_override = huge;
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
        w.n_kv_override.reset();
        w.n_tensors_override = huge;
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
        w.n_tensors_override = 49;
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
        w.n_tensors_override = 47;  // the last tensor (a required one) is not listed
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
        w.n_tensors_override.reset();
        w.n_kv_override = 20;
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    }
}

TEST_F(CraftedGguf, BadValueTypes) {
    GgufWriter w = base();
    w.set_raw("general.weird", 99, le_u32(0));
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    w = base();
    w.set_raw("general.weird", GGUF_ARRAY, le_u32(99) + le_u64(1) + le_u32(0));
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    w = base();
    w.set_raw("general.nested", GGUF_ARRAY, le_u32(GGUF_ARRAY) + le_u64(1) + le_u32(GGUF_U8) + le_u64(1) + "x");
    EXPECT_TRUE(is_error_of(load(w), {STARKV_ERR_CORRUPT, STARKV_ERR_UNSUPPORTED}));
    w = base();
    w.set_string("tokenizer.ggml.tokens", "not an array");
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    w = base();
    w.set_f32_array("tokenizer.ggml.scores", std::vector<float>(511, 0.0f));
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    w = base();
    w.set_i32_array("tokenizer.ggml.token_type", std::vector<int32_t>(512, 77));
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
    for (uint32_t id : {512u, 100000u, 0x7FFFFFFFu}) {
        w = base();
        w.set_u32("tokenizer.ggml.bos_token_id", id);
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT)) << "bos " << id;
    }
    for (uint64_t a : {uint64_t{0}, uint64_t{3}, uint64_t{48}, uint64_t{1} << 62}) {
        w = base();
        w.set_u64("general.alignment", a);
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT)) << "alignment " << a;
    }
}

TEST_F(CraftedGguf, UnsupportedArchitectureAndTokenizer) {
    GgufWriter w = base();
    w.set_string("general.architecture", "gpt2");
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_UNSUPPORTED));
    w.set_string("general.architecture", "");
    EXPECT_TRUE(is_error_of(load(w), {STARKV_ERR_CORRUPT, STARKV_ERR_UNSUPPORTED}));
    // An architecture name from the file is echoed: still one line.
    w.set_string("general.architecture", "gpt2\nsecond line");
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_UNSUPPORTED));
    w = base();
    w.set_string("tokenizer.ggml.model", "bert");
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_UNSUPPORTED));
    w = base();
    w.set_string("llama.rope.scaling.type", "yarn");
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_UNSUPPORTED));
}

TEST_F(CraftedGguf, TensorShapes) {
    struct Case {
        const char* name;
        std::vector<uint64_t> dims;
        starkv_status want;
    };
    const std::vector<Case> cases = {
        {"token_embd.weight", {64, uint64_t{1} << 40}, STARKV_ERR_CORRUPT},
        {"token_embd.weight", {64, 0}, STARKV_ERR_CORRUPT},
        {"token_embd.weight", {64, 511}, STARKV_ERR_CORRUPT},
        {"token_embd.weight", {64, 513}, STARKV_ERR_CORRUPT},
        {"token_embd.weight", {64, 512, 1}, STARKV_ERR_CORRUPT},
        {"token_embd.weight", {32768}, STARKV_ERR_CORRUPT},
        {"token_embd.weight", {~uint64_t{0}, ~uint64_t{0}}, STARKV_ERR_CORRUPT},
        {"output_norm.weight", {63}, STARKV_ERR_CORRUPT},
        {"blk.0.attn_q.weight", {64, 32}, STARKV_ERR_CORRUPT},
        {"blk.4.ffn_down.weight", {172, 64, 1, 1}, STARKV_ERR_CORRUPT},
        {"blk.4.ffn_down.weight", {uint64_t{1} << 32, uint64_t{1} << 32}, STARKV_ERR_CORRUPT},
    };
    for (const Case& c : cases) {
        GgufWriter w = base();
        GgufTensor* t = w.tensor(c.name);
        ASSERT_NE(t, nullptr) << c.name;
        t->dims = c.dims;
        EXPECT_TRUE(is_error(load(w), c.want)) << c.name << " dims[0]=" << c.dims[0];
    }
    for (uint32_t nd : {0u, 5u, 0xFFFFFFFFu}) {
        GgufWriter w = base();
        w.tensor("output_norm.weight")->n_dims = nd;
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT)) << "n_dims " << nd;
    }
}

TEST_F(CraftedGguf, TensorOffsets) {
    const uint64_t size = read_file(stories_model()).size();
    for (uint64_t off : {size, size * 2, uint64_t{1} << 62, ~uint64_t{0}, ~uint64_t{0} - 3}) {
        GgufWriter w = base();
        w.tensor("blk.2.attn_k.weight")->offset = off;
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT)) << "offset " << off;
    }
    // The last tensor ends past the end of the file.
    GgufWriter w = base();
    w.tensors.back().offset = size - w.data_start() - 16;
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
}

// GGUF requires every tensor offset to be a multiple of the alignment.
TEST_F(CraftedGguf, MisalignedTensorOffsetIsCorrupt) {
    GgufWriter w = base();
    GgufTensor* t = w.tensor("output_norm.weight");
    ASSERT_NE(t, nullptr);
    // Compute the offset build() gives it, then shift it by 2 bytes (still inside the file).
    uint64_t off = 0;
    for (const GgufTensor& x : w.tensors) {
        if (&x == t) break;
        off = (off + x.data.size() + 31) / 32 * 32;
    }
    t->offset = off + 2;
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
}

TEST_F(CraftedGguf, DuplicateTensor) {
    GgufWriter w = base();
    w.tensors.push_back(w.tensors[1]);
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
}

TEST_F(CraftedGguf, MissingTensor) {
    for (const char* name : {"token_embd.weight", "output_norm.weight", "blk.4.ffn_up.weight", "blk.0.attn_norm.weight"}) {
        GgufWriter w = base();
        ASSERT_TRUE(w.remove_tensor(name));
        EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT)) << name;
    }
}

TEST_F(CraftedGguf, UnsupportedTensorType) {
    GgufWriter w = base();
    GgufTensor* t = w.tensor("blk.1.attn_v.weight");
    t->type = GGML_Q6_K;  // a real ggml type this runtime does not decode
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_UNSUPPORTED));
    for (uint32_t type : {4u, 5u, 99u, 0xFFFFFFFFu}) {  // removed / unknown types
        t->type = type;
        EXPECT_TRUE(is_error_of(load(w), {STARKV_ERR_UNSUPPORTED, STARKV_ERR_CORRUPT})) << "type " << type;
    }
}

TEST_F(CraftedGguf, QuantizedTensorWithPartialBlockIsCorrupt) {
    // A Q8_0 token embedding whose rows (64 elements) are whole blocks loads;
    // the tiny model's 16-element rows are not a whole number of 32-blocks.
    TinyLlama spec;
    GgufWriter w = tiny_llama(spec);
    GgufTensor* t = w.tensor("output_norm.weight");
    t->type = GGML_Q8_0;
    t->data = std::string(34, '\0');
    EXPECT_TRUE(is_error(load(w), STARKV_ERR_CORRUPT));
}

// ---- progress and cancellation --------------------------------------------

struct ProgressLog {
    std::vector<float> values;
    int cancel_at = -1;  // return false on this call (0-based)
};

bool record_progress(float p, void* user) {
    auto* log = static_cast<ProgressLog*>(user);
    log->values.push_back(p);
    return static_cast<int>(log->values.size()) - 1 != log->cancel_at;
}

void expect_progress_ends_at_one(const std::vector<float>& v) {
    ASSERT_FALSE(v.empty());
    for (size_t i = 0; i < v.size(); ++i) {
        EXPECT_TRUE(v[i] >= 0.0f && v[i] <= 1.0f) << v[i];
        if (i) EXPECT_GE(v[i], v[i - 1]);
    }
    EXPECT_GT(v.back(), v.front());
    EXPECT_EQ(v.back(), 1.0f);
}

TEST(CApiProgress, IncreasingAndEndsAtOne) {
    ProgressLog log;
    starkv_model_params p;
    starkv_model_params_default(&p);
    p.progress = record_progress;
    p.progress_user_data = &log;
    EXPECT_STARKV_OK(try_load(stories_model(), &p));
    expect_progress_ends_at_one(log.values);
}

TEST(CApiProgress, EndsAtOneWithAnExtraTensor) {
    // A file may carry tensors the runtime does not use (llama.cpp writes
    // rope_freqs, attn_rot_embd, ...); progress must still reach 1.
    GgufWriter w = read_gguf(read_file(stories_model()));
    w.add_f32_tensor("blk.0.attn_rot_embd", {8});
    ProgressLog log;
    starkv_model_params p;
    starkv_model_params_default(&p);
    p.progress = record_progress;
    p.progress_user_data = &log;
    EXPECT_STARKV_OK(try_load(write_temp("extra_tensor.gguf", w.build()), &p));
    expect_progress_ends_at_one(log.values);
}

TEST(CApiProgress, CancelledLoad) {
    for (int at : {0, 10, 47}) {
        ProgressLog log;
        log.cancel_at = at;
        starkv_model_params p;
        starkv_model_params_default(&p);
        p.progress = record_progress;
        p.progress_user_data = &log;
        EXPECT_STARKV_ERROR(try_load(stories_model(), &p), STARKV_ERR_CANCELLED) << "cancel at call " << at;
        EXPECT_EQ(static_cast<int>(log.values.size()), at + 1) << "progress called after cancelling";
    }
}

// ---- context ----------------------------------------------------------------

TEST(CApiContext, EvalBeyondNCtxIsContextFullAndChangesNothing) {
    const starkv_model* model = stories();
    ContextPtr ctx = make_context(model, 16);
    ASSERT_EQ(starkv_context_n_ctx(ctx.get()), 16u);
    std::vector<starkv_token> toks = tokenize(model, "Once upon a time, there was", true);
    ASSERT_GE(toks.size(), 6u);
    toks.resize(5);
    ASSERT_STARKV_OK(starkv_context_eval(ctx.get(), toks.data(), toks.size(), false));
    const float* l = nullptr;
    ASSERT_STARKV_OK(starkv_context_logits(ctx.get(), -1, &l));
    const std::vector<float> before(l, l + 512);

    std::vector<starkv_token> many(12, 100);
    EXPECT_STARKV_ERROR(starkv_context_eval(ctx.get(), many.data(), many.size(), false), STARKV_ERR_CONTEXT_FULL);
    EXPECT_EQ(starkv_context_n_past(ctx.get()), 5u);
    EXPECT_STARKV_OK(starkv_context_logits(ctx.get(), -1, &l));
    ASSERT_NE(l, nullptr);
    EXPECT_TRUE(std::equal(before.begin(), before.end(), l)) << "logits changed by a failed eval";
    std::vector<starkv_token> huge(1000, 100);
    EXPECT_STARKV_ERROR(starkv_context_eval(ctx.get(), huge.data(), huge.size(), true), STARKV_ERR_CONTEXT_FULL);
    EXPECT_EQ(starkv_context_n_past(ctx.get()), 5u);

    // Still usable: exactly filling it works, one more does not.
    many.resize(11);
    EXPECT_STARKV_OK(starkv_context_eval(ctx.get(), many.data(), many.size(), false));
    EXPECT_EQ(starkv_context_n_past(ctx.get()), 16u);
    EXPECT_STARKV_ERROR(starkv_context_decode(ctx.get(), 5), STARKV_ERR_CONTEXT_FULL);
    EXPECT_EQ(starkv_context_n_past(ctx.get()), 16u);
    EXPECT_STARKV_OK(starkv_context_rewind(ctx.get(), 15));
    EXPECT_STARKV_OK(starkv_context_decode(ctx.get(), 5));
}

TEST(CApiContext, TokenIdsOutOfRange) {
    const starkv_model* model = stories();
    ContextPtr ctx = make_context(model, 16);
    ASSERT_STARKV_OK(starkv_context_decode(ctx.get(), 1));
    for (starkv_token bad : {-1, 512, 513, INT32_MAX, INT32_MIN}) {
        const starkv_token toks[3] = {5, bad, 6};
        EXPECT_STARKV_ERROR(starkv_context_eval(ctx.get(), toks, 3, false), STARKV_ERR_INVALID_ARGUMENT) << bad;
        EXPECT_STARKV_ERROR(starkv_context_decode(ctx.get(), bad), STARKV_ERR_INVALID_ARGUMENT) << bad;
        EXPECT_EQ(starkv_context_n_past(ctx.get()), 1u);
        char buf[16];
        size_t n = 7;
        EXPECT_STARKV_ERROR(starkv_token_to_piece(model, bad, true, buf, sizeof buf, &n), STARKV_ERR_INVALID_ARGUMENT);
        EXPECT_STARKV_ERROR(starkv_detokenize(model, toks, 3, buf, sizeof buf, &n), STARKV_ERR_INVALID_ARGUMENT);
        double nll = 0;
        size_t ns = 0;
        ContextPtr scratch = make_context(model, 16);  // scoring resets its context
        EXPECT_STARKV_ERROR(starkv_context_score(scratch.get(), toks, 3, &nll, &ns), STARKV_ERR_INVALID_ARGUMENT);
        SamplerPtr s = make_sampler(0.0f);
        starkv_status st = starkv_sampler_accept(s.get(), bad);
        EXPECT_TRUE(st == STARKV_OK || is_error(st, STARKV_ERR_INVALID_ARGUMENT));
        EXPECT_STARKV_ERROR(starkv_generate(ctx.get(), s.get(), toks, 3, nullptr, nullptr), STARKV_ERR_INVALID_ARGUMENT);
    }
}

TEST(CApiContext, RewindBeyondNPast) {
    ContextPtr ctx = make_context(stories(), 16);
    EXPECT_STARKV_ERROR(starkv_context_rewind(ctx.get(), 1), STARKV_ERR_INVALID_ARGUMENT);
    const starkv_token toks[3] = {1, 5, 6};
    ASSERT_STARKV_OK(starkv_context_eval(ctx.get(), toks, 3, false));
    EXPECT_STARKV_ERROR(starkv_context_rewind(ctx.get(), 4), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_rewind(ctx.get(), UINT32_MAX), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(starkv_context_n_past(ctx.get()), 3u);
    EXPECT_STARKV_OK(starkv_context_rewind(ctx.get(), 3));
    EXPECT_STARKV_OK(starkv_context_rewind(ctx.get(), 0));
    EXPECT_EQ(starkv_context_n_past(ctx.get()), 0u);
}

TEST(CApiContext, LogitsBeforeEvalAndOutOfRange) {
    ContextPtr ctx = make_context(stories(), 16);
    const float* l = reinterpret_cast<const float*>(uintptr_t{0x4});
    EXPECT_STARKV_ERROR(starkv_context_logits(ctx.get(), -1, &l), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(l, nullptr);
    EXPECT_STARKV_ERROR(starkv_context_logits(ctx.get(), 0, &l), STARKV_ERR_INVALID_ARGUMENT);
    const starkv_token toks[3] = {1, 5, 6};
    ASSERT_STARKV_OK(starkv_context_eval(ctx.get(), toks, 3, false));
    EXPECT_STARKV_OK(starkv_context_logits(ctx.get(), -1, &l));
    EXPECT_STARKV_OK(starkv_context_logits(ctx.get(), 0, &l));  // the only row kept
    EXPECT_STARKV_ERROR(starkv_context_logits(ctx.get(), 1, &l), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_logits(ctx.get(), -2, &l), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_logits(ctx.get(), INT32_MIN, &l), STARKV_ERR_INVALID_ARGUMENT);
    ASSERT_STARKV_OK(starkv_context_eval(ctx.get(), toks, 3, true));
    EXPECT_STARKV_OK(starkv_context_logits(ctx.get(), 2, &l));
    EXPECT_STARKV_ERROR(starkv_context_logits(ctx.get(), 3, &l), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_logits(ctx.get(), -4, &l), STARKV_ERR_INVALID_ARGUMENT);
    ASSERT_STARKV_OK(starkv_context_reset(ctx.get()));
    EXPECT_STARKV_ERROR(starkv_context_logits(ctx.get(), -1, &l), STARKV_ERR_INVALID_ARGUMENT);
}

TEST(CApiContext, ScoreErrors) {
    ContextPtr ctx = make_context(stories(), 8);
    const starkv_token toks[10] = {1, 5, 6, 7, 8, 9, 10, 11, 12, 13};
    double nll = -1;
    size_t ns = 99;
    EXPECT_STARKV_ERROR(starkv_context_score(ctx.get(), toks, 1, &nll, &ns), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_score(ctx.get(), toks, 0, &nll, &ns), STARKV_ERR_INVALID_ARGUMENT);
    EXPECT_STARKV_ERROR(starkv_context_score(ctx.get(), toks, 9, &nll, &ns), STARKV_ERR_CONTEXT_FULL);
    EXPECT_STARKV_OK(starkv_context_score(ctx.get(), toks, 8, &nll, &ns));
    EXPECT_EQ(ns, 7u);
}

// ---- tokenizer buffers --------------------------------------------------------

TEST(CApiTokenizer, BufferTooSmallReportsTheSizeNeeded) {
    const starkv_model* model = stories();
    const std::string text = "Once upon a time, there was a little girl named Lily.";
    const std::vector<starkv_token> full = tokenize(model, text, true);
    ASSERT_GT(full.size(), 5u);
    for (size_t cap : {size_t{0}, size_t{1}, full.size() - 1}) {
        std::vector<starkv_token> buf(cap + 1, -7);
        size_t n = 0;
        EXPECT_STARKV_ERROR(starkv_tokenize(model, text.data(), text.size(), true, false, cap ? buf.data() : nullptr,
                                            cap, &n),
                            STARKV_ERR_BUFFER_TOO_SMALL);
        EXPECT_EQ(n, full.size());
        EXPECT_EQ(buf[cap], -7) << "wrote past capacity";
    }

    // token_to_piece: a multi-byte piece.
    starkv_token longest = -1;
    size_t longest_len = 0;
    for (starkv_token t = 0; t < 512; ++t) {
        char b[64];
        size_t n = 0;
        ASSERT_STARKV_OK(starkv_token_to_piece(model, t, true, b, sizeof b, &n));
        if (n > longest_len) longest_len = n, longest = t;
    }
    ASSERT_GE(longest_len, 3u);
    for (size_t cap : {size_t{0}, size_t{1}, longest_len - 1}) {
        std::string b(cap + 1, '#');
        size_t n = 0;
        EXPECT_STARKV_ERROR(starkv_token_to_piece(model, longest, true, cap ? b.data() : nullptr, cap, &n),
                            STARKV_ERR_BUFFER_TOO_SMALL);
        EXPECT_EQ(n, longest_len);
        EXPECT_EQ(b[cap], '#');
    }

    // detokenize.
    for (size_t cap : {size_t{0}, size_t{1}, text.size() - 1}) {
        std::string b(cap + 1, '#');
        size_t n = 0;
        EXPECT_STARKV_ERROR(starkv_detokenize(model, full.data(), full.size(), cap ? b.data() : nullptr, cap, &n),
                            STARKV_ERR_BUFFER_TOO_SMALL);
        EXPECT_EQ(n, text.size());
        EXPECT_EQ(b[cap], '#');
    }
}

// ---- generation ---------------------------------------------------------------

struct StopAfter {
    int calls = 0;
    int stop_on = 1;  // return false on this call (1-based)
};

bool stop_after(const char*, size_t, starkv_token, void* user) {
    auto* s = static_cast<StopAfter*>(user);
    return ++s->calls < s->stop_on;
}

TEST(CApiGenerate, CallbackReturningFalseStops) {
    for (int stop_on : {1, 5}) {
        ContextPtr ctx = make_context(stories(), 64);
        SamplerPtr s = make_sampler(0.0f);
        StopAfter st;
        st.stop_on = stop_on;
        starkv_generate_params gp;
        starkv_generate_params_default(&gp);
        gp.max_tokens = 40;
        gp.stop_at_eos = false;
        gp.on_piece = stop_after;
        gp.user_data = &st;
        starkv_generate_result r;
        starkv_generate_result_default(&r);
        const starkv_token bos = 1;
        EXPECT_STARKV_OK(starkv_generate(ctx.get(), s.get(), &bos, 1, &gp, &r));
        EXPECT_EQ(st.calls, stop_on) << "callback called after it returned false";
        EXPECT_EQ(r.stop_reason, STARKV_STOP_CALLBACK);
        EXPECT_GE(r.n_generated, static_cast<uint32_t>(stop_on));
        EXPECT_LT(r.n_generated, 40u);
    }
}

TEST(CApiGenerate, PromptLongerThanContextIsContextFull) {
    const starkv_model* model = stories();
    ContextPtr ctx = make_context(model, 8);
    SamplerPtr s = make_sampler(0.0f);
    const std::vector<starkv_token> prompt = tokenize(model, "Once upon a time, there was a little girl named Lily.", true);
    ASSERT_GT(prompt.size(), 8u);
    starkv_generate_result r;
    starkv_generate_result_default(&r);
    EXPECT_STARKV_ERROR(starkv_generate(ctx.get(), s.get(), prompt.data(), prompt.size(), nullptr, &r),
                        STARKV_ERR_CONTEXT_FULL);
    EXPECT_EQ(starkv_context_n_past(ctx.get()), 0u);
    // A prompt that fits after what the context holds, then one that does not.
    ASSERT_STARKV_OK(starkv_context_eval(ctx.get(), prompt.data(), 5, false));
    EXPECT_STARKV_ERROR(starkv_generate(ctx.get(), s.get(), prompt.data(), 4, nullptr, &r), STARKV_ERR_CONTEXT_FULL);
    EXPECT_EQ(starkv_context_n_past(ctx.get()), 5u);
}

TEST(CApiGenerate, FillingTheContextStopsWithContextFull) {
    ContextPtr ctx = make_context(stories(), 32);
    SamplerPtr s = make_sampler(0.0f);
    starkv_generate_result r;
    starkv_generate_result_default(&r);
    std::string text = generate_text(ctx.get(), s.get(), {1}, 1000, false, &r);
    EXPECT_EQ(r.stop_reason, STARKV_STOP_CONTEXT_FULL);
    EXPECT_EQ(starkv_context_n_past(ctx.get()), 32u);
    EXPECT_GE(r.n_generated, 31u);
    EXPECT_LE(r.n_generated, 32u);
    EXPECT_FALSE(text.empty());
    // Generating more from a full context: not a crash; either an error or an
    // immediate CONTEXT_FULL stop.
    starkv_generate_result r2;
    starkv_generate_result_default(&r2);
    starkv_status st = starkv_generate(ctx.get(), s.get(), nullptr, 0, nullptr, &r2);
    if (st == STARKV_OK) EXPECT_EQ(r2.stop_reason, STARKV_STOP_CONTEXT_FULL);
    else EXPECT_TRUE(last_error_is_one_line());
    EXPECT_EQ(starkv_context_n_past(ctx.get()), 32u);
}

// ---- last error is per thread ---------------------------------------------------

TEST(CApiLastError, IsThreadLocal) {
    std::barrier sync(2);
    std::string msg_a, msg_a_after, msg_b;
    std::thread a([&] {
        EXPECT_EQ(starkv_context_reset(nullptr), STARKV_ERR_INVALID_ARGUMENT);
        msg_a = starkv_last_error();
        sync.arrive_and_wait();  // b fails now
        sync.arrive_and_wait();
        msg_a_after = starkv_last_error();
    });
    std::thread b([&] {
        sync.arrive_and_wait();
        starkv_model* m = nullptr;
        EXPECT_EQ(starkv_model_load("/nonexistent/model.gguf", nullptr, &m), STARKV_ERR_IO);
        msg_b = starkv_last_error();
        sync.arrive_and_wait();
    });
    a.join();
    b.join();
    EXPECT_FALSE(msg_a.empty());
    EXPECT_FALSE(msg_b.empty());
    EXPECT_NE(msg_a, msg_b);
    EXPECT_EQ(msg_a, msg_a_after);
    // A fresh thread has no error.
    std::string fresh = "x";
    std::thread([&] { fresh = starkv_last_error(); }).join();
    EXPECT_EQ(fresh, "");
}

}  // namespace
}  // namespace starkv_test
