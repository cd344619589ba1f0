#include "tokenizer/vocab.h"

#include <string>

#include "core/error.h"

namespace starkv {

void Vocab::validate() const {
    const size_t n = tokens.size();
    if (n == 0) corrupt("vocab: no tokens");
    if (n > static_cast<size_t>(INT32_MAX)) corrupt("vocab: too many tokens");
    if (types.size() != n)
        corrupt("vocab: " + std::to_string(types.size()) + " token types for " +
                std::to_string(n) + " tokens");
    // SPM merges by score, so every token needs one; BPE may carry scores or not.
    if (kind == TokenizerKind::Spm && scores.size() != n)
        corrupt("vocab: " + std::to_string(scores.size()) + " scores for " + std::to_string(n) +
                " tokens");
    if (kind == TokenizerKind::Bpe && !scores.empty() && scores.size() != n)
        corrupt("vocab: " + std::to_string(scores.size()) + " scores for " + std::to_string(n) +
                " tokens");
    for (TokenType t : types) {
        const auto v = static_cast<int32_t>(t);
        if (v < 0 || v > static_cast<int32_t>(TokenType::Byte))
            corrupt("vocab: unknown token type " + std::to_string(v));
    }
    auto check_id = [n](int32_t id, const char* what) {
        if (id < -1 || (id >= 0 && static_cast<size_t>(id) >= n))
            corrupt(std::string("vocab: ") + what + " token id " + std::to_string(id) +
                    " out of range (n_vocab " + std::to_string(n) + ")");
    };
    check_id(bos, "bos");
    check_id(eos, "eos");
    check_id(unk, "unk");
    check_id(pad, "pad");
}

}  // namespace starkv
