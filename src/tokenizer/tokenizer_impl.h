// Internals shared by the tokenizer implementations (not part of the
// Tokenizer interface).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace starkv::detail {

// Lets unordered_map<std::string, ...> be searched with a string_view without
// building a std::string per lookup.
struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
        return std::hash<std::string_view>{}(s);
    }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// A run of text to tokenize normally (token == -1) or one special token.
struct Fragment {
    std::string_view text;
    int32_t token = -1;
};

// Finds control / user-defined token texts in a string, longest match first.
class SpecialMatcher {
public:
    explicit SpecialMatcher(const Vocab& vocab);
    // Whole text as one raw fragment when there is nothing to match.
    std::vector<Fragment> split(std::string_view text) const;

private:
    // Candidates by first byte, longest first, so a scan tests few strings.
    std::array<std::vector<std::pair<std::string, int32_t>>, 256> by_first_;
    bool empty_ = true;
};

// Number of bytes of the UTF-8 sequence starting with lead byte c, as
// llama.cpp's unicode_len_utf8 (invalid leads count as 1 byte).
inline size_t utf8_len(unsigned char c) {
    static constexpr uint8_t lookup[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

// Length of the character starting at s[0] (n > 0 bytes available): the
// lead byte's length when the continuation bytes are really there, else 1.
// Treating a broken sequence as single bytes keeps an invalid lead byte from
// swallowing the next character (e.g. an escaped space), so text round-trips.
inline size_t utf8_char_len(const char* s, size_t n) {
    const size_t len = utf8_len(static_cast<unsigned char>(s[0]));
    if (len > n) return 1;
    for (size_t i = 1; i < len; ++i)
        if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) return 1;
    return len;
}

// What SPM and BPE share: a decoded piece per token, the special-token
// matcher, and the id check every public call makes.
class PieceTokenizer : public Tokenizer {
public:
    std::string token_to_piece(int32_t token, bool render_special) const override {
        check_token(token);
        if (vocab_.types[token] == TokenType::Control) return render_special ? vocab_.tokens[token] : std::string();
        return pieces_[token];
    }

protected:
    explicit PieceTokenizer(Vocab vocab) : Tokenizer(std::move(vocab)), special_(vocab_) {
        pieces_.resize(vocab_.tokens.size());
    }
    // Throws Error(STARKV_ERR_INVALID_ARGUMENT) for an id outside the vocabulary.
    void check_token(int32_t token) const;

    SpecialMatcher special_;
    std::vector<std::string> pieces_;  // bytes of each token as it reads in text
};

std::unique_ptr<Tokenizer> make_spm_tokenizer(Vocab vocab);
std::unique_ptr<Tokenizer> make_bpe_tokenizer(Vocab vocab);

}  // namespace starkv::detail
