// Helpers of the robustness tests (fault injection, soak, leak loop): all
// through the public C API, exactly as an embedding application uses it.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <unistd.h>
#include <vector>

#include "api_util.h"

namespace starkv_robust {

using starkv_test::ContextPtr;
using starkv_test::ModelPtr;
using starkv_test::SamplerPtr;

inline ModelPtr load_stories() {
    starkv_model* m = nullptr;
    EXPECT_EQ(starkv_model_load(starkv_test::stories_model().c_str(), nullptr, &m), STARKV_OK) << starkv_last_error();
    return ModelPtr(m);
}

inline std::vector<starkv_token> tokenize(const starkv_model* m, const std::string& text, bool bos = true) {
    size_t n = 0;
    starkv_tokenize(m, text.data(), text.size(), bos, false, nullptr, 0, &n);
    std::vector<starkv_token> t(n);
    EXPECT_EQ(starkv_tokenize(m, text.data(), text.size(), bos, false, t.data(), t.size(), &n), STARKV_OK);
    return t;
}

// Resident set size in bytes (Linux /proc/self/statm).
inline size_t rss_bytes() {
    long pages = 0, resident = 0;
    if (FILE* f = std::fopen("/proc/self/statm", "r")) {
        if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        std::fclose(f);
    }
    return static_cast<size_t>(resident) * static_cast<size_t>(::sysconf(_SC_PAGESIZE));
}

inline bool sanitized() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
    return true;
#else
    return false;
#endif
#else
    return false;
#endif
}

// An integer from the environment (test sizes: STARKV_SOAK_THREADS, ...).
inline int env_int(const char* name, int dflt) {
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : dflt;
}

}  // namespace starkv_robust
