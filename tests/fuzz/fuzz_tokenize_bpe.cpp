// libFuzzer target: the byte-level BPE tokenizer with a synthetic vocabulary
// (256 byte tokens in GPT-2's byte-to-unicode spelling, a few hundred merges
// of frequent English pairs, two control tokens). Byte 0 of the input holds
// flags (add_bos, parse_special, pre-tokenizer gpt2 / llama3 / smollm), the
// rest is the text. Property: without parse_special, byte-level BPE is
// lossless: detokenize(tokenize(s)) == s for every byte string s.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "byte_level.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace {
using starkv_test::hf_byte_token;
std::unique_ptr<starkv::Tokenizer> make(const char* pre) {
    starkv::Vocab v;
    v.kind = starkv::TokenizerKind::Bpe;
    v.pre = pre;
    std::map<std::string, int> ids;
    auto add = [&](const std::string& t, starkv::TokenType type) {
        if (ids.count(t)) return;
        ids[t] = static_cast<int>(v.tokens.size());
        v.tokens.push_back(t);
        v.types.push_back(type);
    };
    for (int b = 0; b < 256; ++b) add(hf_byte_token(b), starkv::TokenType::Normal);
    // Merges: pairs of a small English corpus, greedily, as a BPE trainer would.
    const char* words[] = {" the", " and", " of", " to", " in", " is", " that", " it", " was", " for",
                           " on", " are", " with", " as", " he", " she", " they", "ing", "tion", " 123",
                           "\n\n", "  ", " caf\xc3\xa9", " \xe4\xb8\xad\xe6\x96\x87", "Hello", " world"};
    for (const char* w : words) {
        std::string cur = hf_byte_token(static_cast<unsigned char>(w[0]));
        for (size_t i = 1; w[i]; ++i) {
            const std::string next = hf_byte_token(static_cast<unsigned char>(w[i]));
            v.merges.push_back(cur + " " + next);
            cur += next;
            add(cur, starkv::TokenType::Normal);
        }
    }
    v.bos = static_cast<int32_t>(v.tokens.size());
    add("<|begin_of_text|>", starkv::TokenType::Control);
    v.eos = static_cast<int32_t>(v.tokens.size());
    add("<|end_of_text|>", starkv::TokenType::Control);
    add("<tool>", starkv::TokenType::UserDefined);
    v.add_bos = true;
    v.add_space_prefix = false;
    return starkv::Tokenizer::create(std::move(v));
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::unique_ptr<starkv::Tokenizer> toks[3] = {make("gpt2"), make("llama3"), make("smollm")};
    if (size == 0) return 0;
    const starkv::Tokenizer* tok = toks[(data[0] >> 2) % 3].get();
    const bool add_bos = data[0] & 1, parse_special = data[0] & 2;
    const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
    const auto ids = tok->tokenize(text, add_bos, parse_special);
    for (int32_t id : ids)
        if (id < 0 || id >= tok->n_vocab()) std::abort();
    const std::string back = tok->detokenize(ids);
    if (!parse_special && back != text) std::abort();
    std::vector<int32_t> raw((size - 1) / 4);
    if (!raw.empty()) std::memcpy(raw.data(), data + 1, raw.size() * 4);
    for (auto& id : raw)
        if (data[0] & 32) id = static_cast<int32_t>(static_cast<uint32_t>(id) % 600u);
    try {
        (void)tok->detokenize(raw);
        for (int32_t id : raw) (void)tok->token_to_piece(id, data[0] & 64);
    } catch (const starkv::Error&) {
    }
    return 0;
}
