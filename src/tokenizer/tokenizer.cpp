#include "tokenizer/tokenizer.h"

#include <algorithm>

#include "core/error.h"
#include "tokenizer/tokenizer_impl.h"

namespace starkv {

std::unique_ptr<Tokenizer> Tokenizer::create(Vocab vocab) {
    vocab.validate();
    switch (vocab.kind) {
        case TokenizerKind::Spm:
            return detail::make_spm_tokenizer(std::move(vocab));
        case TokenizerKind::Bpe:
            return detail::make_bpe_tokenizer(std::move(vocab));
    }
    unsupported("tokenizer: unknown tokenizer kind");
}

namespace detail {

SpecialMatcher::SpecialMatcher(const Vocab& vocab) {
    for (size_t i = 0; i < vocab.tokens.size(); ++i) {
        const TokenType t = vocab.types[i];
        const std::string& s = vocab.tokens[i];
        if ((t != TokenType::Control && t != TokenType::UserDefined) || s.empty()) continue;
        by_first_[static_cast<unsigned char>(s[0])].emplace_back(s, static_cast<int32_t>(i));
        empty_ = false;
    }
    for (auto& list : by_first_) {
        // Longest first; equal texts keep the lowest id (stable sort).
        std::stable_sort(list.begin(), list.end(), [](const auto& a, const auto& b) {
            return a.first.size() > b.first.size();
        });
    }
}

void PieceTokenizer::check_token(int32_t token) const {
    if (token < 0 || token >= n_vocab())
        fail(STARKV_ERR_INVALID_ARGUMENT,
             "token id " + std::to_string(token) + " out of range (n_vocab " + std::to_string(n_vocab()) + ")");
}

std::vector<Fragment> SpecialMatcher::split(std::string_view text) const {
    std::vector<Fragment> out;
    if (empty_) {
        if (!text.empty()) out.push_back({text, -1});
        return out;
    }
    size_t raw_start = 0;
    size_t i = 0;
    while (i < text.size()) {
        const auto& cands = by_first_[static_cast<unsigned char>(text[i])];
        const std::pair<std::string, int32_t>* hit = nullptr;
        for (const auto& c : cands) {
            if (text.compare(i, c.first.size(), c.first) == 0 &&
                c.first.size() <= text.size() - i) {
                hit = &c;
                break;
            }
        }
        if (!hit) {
            ++i;
            continue;
        }
        if (i > raw_start) out.push_back({text.substr(raw_start, i - raw_start), -1});
        out.push_back({text.substr(i, hit->first.size()), hit->second});
        i += hit->first.size();
        raw_start = i;
    }
    if (raw_start < text.size()) out.push_back({text.substr(raw_start), -1});
    return out;
}

}  // namespace detail
}  // namespace starkv
