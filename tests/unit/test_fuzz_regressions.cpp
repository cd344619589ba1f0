// Replays every seed (tests/fuzz/corpus/<target>/) and every input that once
// crashed a fuzzer (tests/fuzz/regressions/<target>/) through the same entry
// points as the libFuzzer targets, in the ordinary (and ASan) build: each must
// load or end in starkv::Error, nothing else. A new crash input goes into
// tests/fuzz/regressions/<target>/ and is picked up here automatically.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/loader.h"
#include "model/model_source.h"
#include "model/safetensors.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> inputs(const std::string& target) {
    const fs::path fuzz = fs::path(__FILE__).parent_path().parent_path() / "fuzz";
    std::vector<fs::path> out;
    for (const char* kind : {"corpus", "regressions"}) {
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(fuzz / kind / target, ec))
            if (e.is_regular_file()) out.push_back(e.path());
    }
    return out;
}

std::string slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::vector<std::string> split(const std::string& s) {
    const std::string sep = "\n--starkv-file--\n";
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t at; (at = s.find(sep, start)) != std::string::npos; start = at + sep.size())
        parts.push_back(s.substr(start, at - start));
    parts.push_back(s.substr(start));
    return parts;
}

template <typename F>
void expect_error_or_ok(const fs::path& input, F&& f) {
    try {
        f();
    } catch (const starkv::Error&) {
    } catch (const std::exception& e) {
        ADD_FAILURE() << input << ": " << e.what();
    }
}

TEST(FuzzRegressions, ModelLoad) {
    const auto in = inputs("fuzz_model_load");
    EXPECT_FALSE(in.empty());
    for (const auto& p : in)
        expect_error_or_ok(p, [&] { (void)starkv::build_model(starkv::open_model_source(p.string(), nullptr), nullptr); });
}

TEST(FuzzRegressions, Safetensors) {
    for (const auto& p : inputs("fuzz_safetensors"))
        expect_error_or_ok(p, [&] {
            starkv::SafetensorsFile f(p.string());
            for (const auto& t : f.tensors()) (void)f.bytes(t);
        });
}

TEST(FuzzRegressions, HfDirectory) {
    const std::string dir = starkv_test::temp_dir() + "/hf";
    const char* names[] = {"config.json", "tokenizer.json", "model.safetensors", "tokenizer_config.json"};
    for (const auto& p : inputs("fuzz_hf_dir")) {
        fs::remove_all(dir);
        fs::create_directories(dir);
        const auto parts = split(slurp(p));
        for (size_t i = 0; i < parts.size() && i < 4; ++i) std::ofstream(dir + "/" + names[i], std::ios::binary) << parts[i];
        expect_error_or_ok(p, [&] { (void)starkv::build_model(starkv::open_model_source(dir, nullptr), nullptr); });
    }
}

TEST(FuzzRegressions, TokenizerJson) {
    const std::string dir = starkv_test::temp_dir() + "/tok";
    for (const auto& p : inputs("fuzz_tokenizer_json")) {
        fs::remove_all(dir);
        fs::create_directories(dir);
        const auto parts = split(slurp(p));
        std::ofstream(dir + "/tokenizer.json", std::ios::binary) << parts[0];
        if (parts.size() > 1) std::ofstream(dir + "/tokenizer_config.json", std::ios::binary) << parts[1];
        expect_error_or_ok(p, [&] {
            auto tok = starkv::Tokenizer::create(starkv::load_tokenizer_json(dir));
            (void)tok->detokenize(tok->tokenize("Hello, world! 123 <s>", true, true));
        });
    }
}

}  // namespace
