// Helpers for the C API tests (header-only: tests/api/*.cpp include it).
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "starkv/starkv.h"
#include "test_paths.h"

namespace starkv_test {

struct ModelFree {
    void operator()(starkv_model* m) const { starkv_model_free(m); }
};
struct ContextFree {
    void operator()(starkv_context* c) const { starkv_context_free(c); }
};
struct SamplerFree {
    void operator()(starkv_sampler* s) const { starkv_sampler_free(s); }
};
using ModelPtr = std::unique_ptr<starkv_model, ModelFree>;
using ContextPtr = std::unique_ptr<starkv_context, ContextFree>;
using SamplerPtr = std::unique_ptr<starkv_sampler, SamplerFree>;

// The calling thread's last error is a non-empty single line.
inline ::testing::AssertionResult last_error_is_one_line() {
    const char* m = starkv_last_error();
    if (m == nullptr) return ::testing::AssertionFailure() << "starkv_last_error() returned NULL";
    if (*m == '\0') return ::testing::AssertionFailure() << "starkv_last_error() is empty";
    if (std::strchr(m, '\n') || std::strchr(m, '\r'))
        return ::testing::AssertionFailure() << "starkv_last_error() spans lines: \"" << m << "\"";
    return ::testing::AssertionSuccess();
}

// A failed call: the expected status and a one-line message.
inline ::testing::AssertionResult is_error(starkv_status got, starkv_status want) {
    if (got != want)
        return ::testing::AssertionFailure() << "got " << starkv_status_name(got) << ", want "
                                             << starkv_status_name(want) << " (last error: \""
                                             << starkv_last_error() << "\")";
    return last_error_is_one_line();
}

// Same, accepting either of two statuses.
inline ::testing::AssertionResult is_error_of(starkv_status got, std::initializer_list<starkv_status> want) {
    for (starkv_status w : want)
        if (got == w) return last_error_is_one_line();
    auto f = ::testing::AssertionFailure();
    f << "got " << starkv_status_name(got) << ", want one of";
    for (starkv_status w : want) f << " " << starkv_status_name(w);
    return f << " (last error: \"" << starkv_last_error() << "\")";
}

inline ::testing::AssertionResult is_ok(starkv_status got) {
    if (got == STARKV_OK) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << starkv_status_name(got) << ": " << starkv_last_error();
}

#define EXPECT_STARKV_ERROR(call, status) EXPECT_TRUE(::starkv_test::is_error((call), (status))) << #call
#define EXPECT_STARKV_OK(call) EXPECT_TRUE(::starkv_test::is_ok(call)) << #call
#define ASSERT_STARKV_OK(call) ASSERT_TRUE(::starkv_test::is_ok(call)) << #call

// Loads a model; on failure checks that *out_model was set to NULL.
inline starkv_status try_load(const std::string& path, const starkv_model_params* params = nullptr,
                              ModelPtr* out = nullptr) {
    starkv_model* m = reinterpret_cast<starkv_model*>(uintptr_t{0x1});  // must be overwritten
    starkv_status st = starkv_model_load(path.c_str(), params, &m);
    if (st != STARKV_OK) {
        EXPECT_EQ(m, nullptr) << "failed load left *out_model set (" << path << ")";
        return st;
    }
    if (out) out->reset(m);
    else starkv_model_free(m);
    return st;
}

inline std::string write_temp(const std::string& name, const std::string& bytes) {
    const std::string path = temp_dir() + "/" + name;
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.close();
    EXPECT_TRUE(f.good()) << "cannot write " << path;
    return path;
}

// The sample model, loaded once per process.
inline const starkv_model* stories() {
    static ModelPtr model = [] {
        starkv_model* m = nullptr;
        starkv_status st = starkv_model_load(stories_model().c_str(), nullptr, &m);
        EXPECT_EQ(st, STARKV_OK) << starkv_last_error();
        return ModelPtr(m);
    }();
    return model.get();
}

inline ContextPtr make_context(const starkv_model* model, uint32_t n_ctx, uint32_t n_threads = 1, uint64_t seed = 0) {
    starkv_context_params p;
    starkv_context_params_default(&p);
    p.n_ctx = n_ctx;
    p.n_threads = n_threads;
    p.seed = seed;
    starkv_context* c = nullptr;
    EXPECT_STARKV_OK(starkv_context_create(model, &p, &c));
    return ContextPtr(c);
}

inline SamplerPtr make_sampler(float temperature, uint64_t seed = 0) {
    starkv_sampler_params p;
    starkv_sampler_params_default(&p);
    p.temperature = temperature;
    p.seed = seed;
    starkv_sampler* s = nullptr;
    EXPECT_STARKV_OK(starkv_sampler_create(&p, &s));
    return SamplerPtr(s);
}

inline std::vector<starkv_token> tokenize(const starkv_model* model, const std::string& text, bool add_bos) {
    size_t n = 0;
    starkv_status st = starkv_tokenize(model, text.data(), text.size(), add_bos, false, nullptr, 0, &n);
    EXPECT_TRUE(st == STARKV_OK || st == STARKV_ERR_BUFFER_TOO_SMALL) << starkv_status_name(st);
    std::vector<starkv_token> out(n);
    size_t n2 = 0;
    EXPECT_STARKV_OK(starkv_tokenize(model, text.data(), text.size(), add_bos, false, out.data(), out.size(), &n2));
    EXPECT_EQ(n2, n);
    return out;
}

inline bool append_piece(const char* piece, size_t len, starkv_token, void* user) {
    static_cast<std::string*>(user)->append(piece, len);
    return true;
}

// Generates from prompt and returns the streamed text.
inline std::string generate_text(starkv_context* ctx, starkv_sampler* sampler, const std::vector<starkv_token>& prompt,
                                 int max_tokens, bool stop_at_eos, starkv_generate_result* result = nullptr) {
    std::string text;
    starkv_generate_params gp;
    starkv_generate_params_default(&gp);
    gp.max_tokens = max_tokens;
    gp.stop_at_eos = stop_at_eos;
    gp.on_piece = append_piece;
    gp.user_data = &text;
    EXPECT_STARKV_OK(starkv_generate(ctx, sampler, prompt.data(), prompt.size(), &gp, result));
    return text;
}

}  // namespace starkv_test
