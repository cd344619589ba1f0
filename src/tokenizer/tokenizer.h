// Text <-> token ids. Built once from a Vocab, immutable afterwards (safe to
// share across threads).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/vocab.h"

namespace starkv {

class Tokenizer {
public:
    virtual ~Tokenizer() = default;

    // Throws Error(STARKV_ERR_UNSUPPORTED / CORRUPT) for a vocab it cannot use.
    static std::unique_ptr<Tokenizer> create(Vocab vocab);

    // parse_special: substrings equal to a control/user-defined token's text
    // become that token; otherwise all text is ordinary text.
    virtual std::vector<int32_t> tokenize(std::string_view text, bool add_bos,
                                          bool parse_special) const = 0;
    // Bytes of one token as it reads in text (SPM: U+2581 -> ' ', <0xAB> -> byte
    // 0xAB; byte-level BPE: unicode -> bytes). Control tokens: "" unless
    // render_special, then their text.
    virtual std::string token_to_piece(int32_t token, bool render_special) const = 0;
    // Concatenated pieces without control tokens; SPM removes the one leading
    // space that tokenize() added, so detokenize(tokenize(s)) == s.
    virtual std::string detokenize(const std::vector<int32_t>& tokens) const = 0;

    const Vocab& vocab() const { return vocab_; }
    int32_t n_vocab() const { return static_cast<int32_t>(vocab_.tokens.size()); }

protected:
    explicit Tokenizer(Vocab vocab) : vocab_(std::move(vocab)) {}
    Vocab vocab_;
};

}  // namespace starkv
