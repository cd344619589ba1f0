// SentencePiece-style BPE over scores with byte fallback, following
// llama.cpp's llm_tokenizer_spm: symbols start as UTF-8 characters and the
// adjacent pair whose concatenation is a token with the highest score is
// merged first (ties: leftmost). Symbols left without a token become
// <0xAB> byte tokens.
#include <cstdio>
#include <queue>

#include "core/error.h"
#include "tokenizer/tokenizer_impl.h"

namespace starkv::detail {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK
constexpr std::string_view kUnknownPiece = "\xE2\x96\x85";  // U+2585, as llama.cpp

// "<0xAB>" -> 0xAB, or -1.
int parse_byte_token(std::string_view s) {
    if (s.size() != 6 || s.substr(0, 3) != "<0x" || s[5] != '>') return -1;
    int v = 0;
    for (size_t i = 3; i < 5; ++i) {
        const char c = s[i];
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

// Tokens that text may merge into (SentencePiece never produces control,
// byte or unknown pieces by merging).
bool mergeable(TokenType t) {
    return t == TokenType::Normal || t == TokenType::UserDefined || t == TokenType::Undefined;
}

class SpmTokenizer final : public PieceTokenizer {
public:
    explicit SpmTokenizer(Vocab v) : PieceTokenizer(std::move(v)) {
        const size_t n = vocab_.tokens.size();
        byte_ids_.fill(-1);
        for (size_t i = 0; i < n; ++i) {
            const std::string& text = vocab_.tokens[i];
            const TokenType type = vocab_.types[i];
            const auto id = static_cast<int32_t>(i);
            if (mergeable(type)) map_.emplace(text, id);  // first id wins on duplicates
            switch (type) {
                case TokenType::Byte: {
                    const int b = parse_byte_token(text);
                    if (b < 0) corrupt("vocab: byte token '" + text + "' is not <0xAB>");
                    if (byte_ids_[b] < 0) byte_ids_[b] = id;
                    pieces_[i] = std::string(1, static_cast<char>(b));
                    break;
                }
                case TokenType::Normal:
                case TokenType::Undefined: {
                    std::string p;
                    p.reserve(text.size());
                    for (size_t k = 0; k < text.size();) {
                        if (text.compare(k, kSpace.size(), kSpace) == 0) {
                            p += ' ';
                            k += kSpace.size();
                        } else {
                            p += text[k++];
                        }
                    }
                    pieces_[i] = std::move(p);
                    break;
                }
                case TokenType::UserDefined:
                    pieces_[i] = text;
                    break;
                case TokenType::Unknown:
                    pieces_[i] = kUnknownPiece;
                    break;
                case TokenType::Control:
                case TokenType::Unused:
                    break;  // no text
            }
        }
    }

    std::vector<int32_t> tokenize(std::string_view text, bool add_bos,
                                  bool parse_special) const override {
        std::vector<int32_t> out;
        out.reserve(text.size() / 3 + 2);
        if (add_bos && vocab_.bos >= 0) out.push_back(vocab_.bos);
        if (!parse_special) {
            if (!text.empty()) encode_raw(text, vocab_.add_space_prefix, out);
            return out;
        }
        // The space prefix belongs to the start of the text only, so that
        // detokenize (which strips one leading space) inverts tokenize.
        for (const Fragment& f : special_.split(text)) {
            if (f.token >= 0) {
                out.push_back(f.token);
            } else {
                const bool at_start = f.text.data() == text.data();
                encode_raw(f.text, vocab_.add_space_prefix && at_start, out);
            }
        }
        return out;
    }

    std::string detokenize(const std::vector<int32_t>& tokens) const override {
        std::string out;
        bool strip = vocab_.add_space_prefix;
        for (int32_t t : tokens) {
            check_token(t);
            if (vocab_.types[t] == TokenType::Control) continue;
            const std::string& p = pieces_[t];
            if (p.empty()) continue;
            if (strip) {
                strip = false;
                if (p[0] == ' ') {
                    out.append(p, 1);
                    continue;
                }
            }
            out += p;
        }
        return out;
    }

private:
    struct Symbol {
        int32_t prev;
        int32_t next;
        uint32_t off;  // into the escaped text
        uint32_t len;  // 0 once merged into its left neighbour
    };
    struct Bigram {
        int32_t left;
        int32_t right;
        float score;
        uint32_t size;
    };
    struct BigramLess {
        // Highest score first; on ties the leftmost pair.
        bool operator()(const Bigram& a, const Bigram& b) const {
            return a.score < b.score || (a.score == b.score && a.left > b.left);
        }
    };


    int32_t lookup(std::string_view s) const {
        auto it = map_.find(s);
        return it == map_.end() ? -1 : it->second;
    }

    void encode_raw(std::string_view text, bool space_prefix, std::vector<int32_t>& out) const {
        // Escape spaces (and add the prefix) as SentencePiece does.
        std::string s;
        s.reserve(text.size() + text.size() / 4 + 3);
        if (space_prefix) s += kSpace;
        for (char c : text) {
            if (c == ' ') s += kSpace;
            else s += c;
        }
        if (s.size() > UINT32_MAX) fail(STARKV_ERR_INVALID_ARGUMENT, "text too long to tokenize");

        std::vector<Symbol> sym;
        sym.reserve(s.size());
        for (size_t off = 0; off < s.size();) {
            const size_t len = utf8_char_len(s.data() + off, s.size() - off);
            const auto idx = static_cast<int32_t>(sym.size());
            sym.push_back({idx - 1, idx + 1, static_cast<uint32_t>(off),
                           static_cast<uint32_t>(len)});
            off += len;
        }
        if (sym.empty()) return;
        sym.back().next = -1;

        std::vector<Bigram> storage;
        storage.reserve(sym.size() * 2);
        std::priority_queue<Bigram, std::vector<Bigram>, BigramLess> queue(BigramLess{},
                                                                           std::move(storage));
        auto try_add = [&](int32_t left, int32_t right) {
            if (left < 0 || right < 0) return;
            const std::string_view cat(s.data() + sym[left].off, sym[left].len + sym[right].len);
            const int32_t id = lookup(cat);
            if (id < 0) return;
            queue.push({left, right, vocab_.scores[id], static_cast<uint32_t>(cat.size())});
        };
        for (size_t i = 1; i < sym.size(); ++i)
            try_add(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));

        while (!queue.empty()) {
            const Bigram b = queue.top();
            queue.pop();
            Symbol& l = sym[b.left];
            Symbol& r = sym[b.right];
            // Stale entries: one side already merged away or grown since.
            if (l.len == 0 || r.len == 0 || l.next != b.right || l.len + r.len != b.size)
                continue;
            l.len += r.len;
            r.len = 0;
            l.next = r.next;
            if (r.next >= 0) sym[r.next].prev = b.left;
            try_add(l.prev, b.left);
            try_add(b.left, l.next);
        }

        for (int32_t i = 0; i >= 0; i = sym[i].next) {
            const std::string_view piece(s.data() + sym[i].off, sym[i].len);
            const int32_t id = lookup(piece);
            if (id >= 0) {
                out.push_back(id);
                continue;
            }
            bool all_bytes = true;
            for (unsigned char c : piece) all_bytes = all_bytes && byte_ids_[c] >= 0;
            if (all_bytes) {
                for (unsigned char c : piece) out.push_back(byte_ids_[c]);
            } else if (vocab_.unk >= 0) {
                out.push_back(vocab_.unk);  // vocab without byte fallback
            } else {
                fail(STARKV_ERR_INVALID_ARGUMENT,
                     "tokenizer: text has a character with no token and the vocab has no <unk>");
            }
        }
    }

    TokenMap map_;
    std::array<int32_t, 256> byte_ids_{};
};

}  // namespace

std::unique_ptr<Tokenizer> make_spm_tokenizer(Vocab vocab) {
    return std::make_unique<SpmTokenizer>(std::move(vocab));
}

}  // namespace starkv::detail
