// Everything a tokenizer needs, as read from GGUF metadata or tokenizer.json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace starkv {

enum class TokenizerKind { Spm, Bpe };

// GGUF token types (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
};

struct Vocab {
    TokenizerKind kind = TokenizerKind::Spm;
    std::vector<std::string> tokens;  // token text as stored (SPM uses U+2581 for space;
                                      // byte-level BPE uses the GPT-2 byte-to-unicode map)
    std::vector<float> scores;        // SPM merge priorities (empty for BPE)
    std::vector<TokenType> types;     // same size as tokens
    std::vector<std::string> merges;  // BPE: "left right", by priority (empty for SPM)
    std::string pre;                  // BPE pre-tokenizer name: "gpt2", "llama3", "smollm", ...
    int32_t bos = -1;
    int32_t eos = -1;
    int32_t unk = -1;
    int32_t pad = -1;
    bool add_bos = true;              // does the model expect BOS at the start
    bool add_space_prefix = true;     // SPM: prepend a space to the text (llama.cpp convention)

    // Throws Error(STARKV_ERR_CORRUPT) when sizes disagree or ids are out of range.
    void validate() const;
};

}  // namespace starkv
