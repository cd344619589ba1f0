// Shared by the libFuzzer targets: per-process scratch paths, and splitting
// one input into several files (a Hugging Face directory is three files).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace starkv_fuzz {

// A directory of this process, created once.
inline const std::string& scratch_dir() {
    static const std::string dir = [] {
        std::string d = "/tmp/starkv_fuzz_" + std::to_string(::getpid());
        std::filesystem::create_directories(d);
        return d;
    }();
    return dir;
}

inline bool write_file(const std::string& path, const uint8_t* data, size_t size) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return false;
    if (size) std::fwrite(data, 1, size, f);
    std::fclose(f);
    return true;
}

// Splits at each occurrence of sep ("\n--starkv-file--\n" in the multi-file seeds).
inline std::vector<std::string_view> split(std::string_view in, std::string_view sep) {
    std::vector<std::string_view> parts;
    size_t start = 0;
    for (;;) {
        const size_t at = in.find(sep, start);
        if (at == std::string_view::npos) {
            parts.push_back(in.substr(start));
            return parts;
        }
        parts.push_back(in.substr(start, at - start));
        start = at + sep.size();
    }
}

}  // namespace starkv_fuzz
