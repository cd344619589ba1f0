#include "test_paths.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace starkv_test {

std::string shared_path(const std::string& rel) {
    const char* env = std::getenv("STARKV_SHARED_DIR");
    std::string base = env && *env ? env : STARKV_SHARED_DIR;
    return base + "/" + rel;
}

std::string stories_model() { return shared_path("models/stories260K.gguf"); }

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    EXPECT_TRUE(in.good()) << "cannot read " << path;
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string temp_dir() {
    static std::string dir = [] {
        auto p = std::filesystem::temp_directory_path() /
                 ("starkv_test_" + std::to_string(::getpid()));
        std::filesystem::create_directories(p);
        return p.string();
    }();
    return dir;
}

}  // namespace starkv_test
