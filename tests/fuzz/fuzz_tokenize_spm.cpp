// libFuzzer target: the SentencePiece-style tokenizer with the stories260K
// vocabulary (512 tokens, byte fallback). Byte 0 of the input holds flags, the
// rest is the text: tokenize it (add_bos / parse_special), detokenize the
// result, and detokenize the raw input read as token ids. Property: for text
// without U+2581 and without parse_special, detokenize(tokenize(s)) == s.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/model_source.h"
#include "tokenizer/tokenizer.h"

namespace {
const starkv::Tokenizer* tokenizer() {
    static const std::unique_ptr<starkv::Tokenizer> tok = [] {
        const char* env = std::getenv("STARKV_SHARED_DIR");
        const std::string dir = env ? env : STARKV_SHARED_DIR;
        return starkv::Tokenizer::create(
            starkv::open_gguf_source(dir + "/models/stories260K.gguf").vocab);
    }();
    return tok.get();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const starkv::Tokenizer* tok = tokenizer();
    if (size == 0) return 0;
    const bool add_bos = data[0] & 1, parse_special = data[0] & 2;
    const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
    const auto ids = tok->tokenize(text, add_bos, parse_special);
    for (int32_t id : ids)
        if (id < 0 || id >= tok->n_vocab()) std::abort();
    const std::string back = tok->detokenize(ids);
    if (!parse_special && text.find("\xe2\x96\x81") == std::string::npos && back != text) std::abort();
    // Arbitrary ids: out-of-range ones must be an Error, never a read out of bounds.
    std::vector<int32_t> raw((size - 1) / 4);
    if (!raw.empty()) std::memcpy(raw.data(), data + 1, raw.size() * 4);
    for (auto& id : raw)
        if (data[0] & 4) id = static_cast<int32_t>(static_cast<uint32_t>(id) % 600u);
    try {
        (void)tok->detokenize(raw);
        for (int32_t id : raw) (void)tok->token_to_piece(id, data[0] & 8);
    } catch (const starkv::Error&) {
    }
    return 0;
}
