// libFuzzer target: a Hugging Face model directory. The input holds up to four
// files separated by "\n--starkv-file--\n": config.json, tokenizer.json,
// model.safetensors, tokenizer_config.json (a missing part = a missing file).
// The directory is loaded exactly as starkv_model_load does (source + weights).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "fuzz_util.h"
#include "model/model_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::string dir = starkv_fuzz::scratch_dir() + "/hf";
    static const char* names[] = {"config.json", "tokenizer.json", "model.safetensors", "tokenizer_config.json"};
    std::filesystem::create_directories(dir);
    const auto parts = starkv_fuzz::split(
        std::string_view(reinterpret_cast<const char*>(data), size), "\n--starkv-file--\n");
    for (size_t i = 0; i < 4; ++i) {
        const std::string p = dir + "/" + names[i];
        if (i < parts.size())
            starkv_fuzz::write_file(p, reinterpret_cast<const uint8_t*>(parts[i].data()), parts[i].size());
        else
            std::filesystem::remove(p);
    }
    try {
        starkv::ModelSource src = starkv::open_model_source(dir, nullptr);
        (void)starkv::build_model(src, nullptr);
    } catch (const starkv::Error&) {
    }
    return 0;
}
