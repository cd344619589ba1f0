// libFuzzer target: tokenizer.json (+ an optional tokenizer_config.json after
// "\n--starkv-file--\n") -> Vocab -> Tokenizer, which then tokenizes and
// detokenizes a fixed text. Bad files must end in starkv::Error.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "fuzz_util.h"
#include "model/loader.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::string dir = starkv_fuzz::scratch_dir() + "/tok";
    std::filesystem::create_directories(dir);
    const auto parts = starkv_fuzz::split(
        std::string_view(reinterpret_cast<const char*>(data), size), "\n--starkv-file--\n");
    starkv_fuzz::write_file(dir + "/tokenizer.json", reinterpret_cast<const uint8_t*>(parts[0].data()),
                            parts[0].size());
    if (parts.size() > 1)
        starkv_fuzz::write_file(dir + "/tokenizer_config.json",
                                reinterpret_cast<const uint8_t*>(parts[1].data()), parts[1].size());
    else
        std::filesystem::remove(dir + "/tokenizer_config.json");
    try {
        auto tok = starkv::Tokenizer::create(starkv::load_tokenizer_json(dir));
        const auto ids = tok->tokenize("Hello, world! 123 <s> caf\xc3\xa9\n  x", true, true);
        (void)tok->detokenize(ids);
        for (int32_t i = 0; i < tok->n_vocab() && i < 512; ++i) (void)tok->token_to_piece(i, true);
    } catch (const starkv::Error&) {
    }
    return 0;
}
