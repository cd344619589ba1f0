// The models the CPU benchmarks run on: stories260K from ../shared (or
// $STARKV_SHARED_DIR), SmolLM2-135M Q4_1 from the starkv model cache
// (scripts/fetch_smollm2.sh) when present.
#pragma once

#include <cstdlib>
#include <string>

namespace starkv_bench {

inline std::string smollm2_path() {
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* home = std::getenv("HOME");
    const std::string cache = xdg && *xdg ? xdg : std::string(home ? home : "") + "/.cache";
    return cache + "/starkv/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

inline std::string shared_dir() {
    const char* env = std::getenv("STARKV_SHARED_DIR");
    return env && *env ? env : STARKV_SHARED_DIR;
}

// which: 0 stories260K, 1 SmolLM2.
inline std::string model_path(int which) {
    return which == 0 ? shared_dir() + "/models/stories260K.gguf" : smollm2_path();
}

}  // namespace starkv_bench
