// Byte-level BPE (GPT-2, Llama 3, SmolLM): text is split by the model's
// pre-tokenizer regex, every byte of a piece becomes its GPT-2
// bytes_to_unicode character, and merges apply by rank (lowest first).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cstdlib>
#include <queue>

#include "core/error.h"
#include "tokenizer/tokenizer_impl.h"

namespace starkv::detail {
namespace {

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kDigitPattern = R"(\p{N})";

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the
// rest to U+0100.. in byte order.
std::array<uint32_t, 256> bytes_to_unicode() {
    std::array<uint32_t, 256> map{};
    std::array<bool, 256> direct{};
    for (int b = '!'; b <= '~'; ++b) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) map[b] = direct[b] ? static_cast<uint32_t>(b) : next++;
    return map;
}

// RAII holders for PCRE2 objects.
struct CodeDeleter {
    void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct MatchDataDeleter {
    void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};
using CodePtr = std::unique_ptr<pcre2_code, CodeDeleter>;
using MatchDataPtr = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

CodePtr compile(const char* pattern) {
    int err = 0;
    PCRE2_SIZE err_off = 0;
    // UCP: \s and friends follow Unicode as Python/HF regexes do.
    // MATCH_INVALID_UTF: invalid UTF-8 in the input is never matched
    // instead of failing the match; the gaps are kept as pieces.
    pcre2_code* code =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_off, nullptr);
    if (!code) {
        PCRE2_UCHAR buf[256];
        pcre2_get_error_message(err, buf, sizeof buf);
        fail(STARKV_ERR_INTERNAL, std::string("tokenizer: cannot compile pre-tokenizer regex: ") +
                                      reinterpret_cast<const char*>(buf));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional speed-up; interpreter otherwise
    return CodePtr(code);
}

class BpeTokenizer final : public PieceTokenizer {
public:
    explicit BpeTokenizer(Vocab v) : PieceTokenizer(std::move(v)) {
        const std::string& pre = vocab_.pre;
        if (pre == "llama3" || pre == "llama-bpe") {
            regexes_.push_back(compile(kLlama3Pattern));
            ignore_merges_ = true;  // as HF's Llama 3 tokenizer.json ("ignore_merges")
        } else if (pre == "smollm") {
            regexes_.push_back(compile(kDigitPattern));
            regexes_.push_back(compile(kGpt2Pattern));
        } else {
            regexes_.push_back(compile(kGpt2Pattern));  // gpt2 and unknown names
        }

        const size_t n = vocab_.tokens.size();
        for (size_t i = 0; i < n; ++i) {
            const TokenType t = vocab_.types[i];
            if (t == TokenType::Normal || t == TokenType::Undefined || t == TokenType::Byte)
                map_.emplace(vocab_.tokens[i], static_cast<int32_t>(i));
        }

        const auto b2u = bytes_to_unicode();
        for (int b = 0; b < 256; ++b) {
            std::string u;
            append_utf8(u, b2u[b]);
            unicode_to_byte_.emplace(b2u[b], static_cast<uint8_t>(b));
            auto it = map_.find(u);
            byte_ids_[b] = it == map_.end() ? -1 : it->second;
            byte_chars_[b] = std::move(u);
        }

        merges_.reserve(vocab_.merges.size());
        for (size_t r = 0; r < vocab_.merges.size(); ++r) {
            const std::string& m = vocab_.merges[r];
            const size_t sp = m.find(' ', 1);  // a first-char space would be the token " "
            if (sp == std::string::npos || sp + 1 >= m.size())
                corrupt("vocab: BPE merge '" + m + "' is not 'left right'");
            const std::string_view left(m.data(), sp);
            const std::string_view right(m.data() + sp + 1, m.size() - sp - 1);
            const int32_t l = find(left), rr = find(right);
            std::string cat(left);
            cat += right;
            const int32_t res = find(cat);
            if (l < 0 || rr < 0 || res < 0) continue;  // cannot fire: unknown parts
            merges_.emplace(pair_key(l, rr), Merge{static_cast<int32_t>(r), res});
        }

        for (size_t i = 0; i < n; ++i) pieces_[i] = decode_piece(i);
    }

    std::vector<int32_t> tokenize(std::string_view text, bool add_bos,
                                  bool parse_special) const override {
        std::vector<int32_t> out;
        out.reserve(text.size() / 3 + 2);
        if (add_bos && vocab_.bos >= 0) out.push_back(vocab_.bos);
        MatchDataPtr md(pcre2_match_data_create(1, nullptr));
        if (!md) fail(STARKV_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
        std::vector<std::string_view> words;
        auto encode_raw = [&](std::string_view raw) {
            words.clear();
            pre_tokenize(raw, md.get(), words);
            for (std::string_view w : words) encode_word(w, out);
        };
        if (!parse_special) {
            encode_raw(text);
            return out;
        }
        for (const Fragment& f : special_.split(text)) {
            if (f.token >= 0) out.push_back(f.token);
            else encode_raw(f.text);
        }
        return out;
    }

    std::string detokenize(const std::vector<int32_t>& tokens) const override {
        std::string out;
        for (int32_t t : tokens) {
            check_token(t);
            if (vocab_.types[t] == TokenType::Control) continue;
            out += pieces_[t];
        }
        return out;
    }

private:
    struct Merge {
        int32_t rank;
        int32_t result;
    };
    struct Symbol {
        int32_t prev;
        int32_t next;
        int32_t id;  // -1: a byte without a token
    };
    struct Bigram {
        int32_t left;
        int32_t right;
        int32_t rank;
        int32_t left_id;
        int32_t right_id;
        int32_t result;
    };
    struct BigramGreater {
        // Lowest rank first; on ties the leftmost pair.
        bool operator()(const Bigram& a, const Bigram& b) const {
            return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
        }
    };

    static uint64_t pair_key(int32_t l, int32_t r) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
    }

    int32_t find(std::string_view s) const {
        auto it = map_.find(s);
        return it == map_.end() ? -1 : it->second;
    }


    std::string decode_piece(size_t i) const {
        const std::string& text = vocab_.tokens[i];
        switch (vocab_.types[i]) {
            case TokenType::Control:
            case TokenType::Unused:
                return {};
            case TokenType::UserDefined:
            case TokenType::Unknown:
                return text;  // stored as plain text, not byte-mapped
            case TokenType::Byte:
                if (text.size() == 6 && text.starts_with("<0x") && text[5] == '>') {
                    char* end = nullptr;
                    const std::string hex = text.substr(3, 2);
                    const long v = std::strtol(hex.c_str(), &end, 16);
                    if (end && *end == '\0') return std::string(1, static_cast<char>(v));
                }
                break;
            case TokenType::Normal:
            case TokenType::Undefined:
                break;
        }
        // Undo bytes_to_unicode; characters outside the map pass through.
        std::string out;
        for (size_t k = 0; k < text.size();) {
            const auto c0 = static_cast<unsigned char>(text[k]);
            const size_t len = std::min(utf8_len(c0), text.size() - k);
            uint32_t cp = 0xFFFFFFFF;
            if (len == 1) cp = c0;
            else if (len == 2) cp = ((c0 & 0x1Fu) << 6) | (static_cast<unsigned char>(text[k + 1]) & 0x3Fu);
            auto it = unicode_to_byte_.find(cp);
            if (it != unicode_to_byte_.end()) out += static_cast<char>(it->second);
            else out.append(text, k, len);
            k += len;
        }
        return out;
    }

    // Applies each regex in turn to every piece; text between matches stays
    // a piece of its own, so the pieces always cover the input exactly.
    void pre_tokenize(std::string_view text, pcre2_match_data* md,
                      std::vector<std::string_view>& words) const {
        if (text.empty()) return;
        std::vector<std::string_view> cur{text}, next;
        for (const CodePtr& re : regexes_) {
            next.clear();
            for (std::string_view piece : cur) split_one(re.get(), piece, md, next);
            cur.swap(next);
        }
        words.insert(words.end(), cur.begin(), cur.end());
    }

    static void split_one(const pcre2_code* re, std::string_view s, pcre2_match_data* md,
                          std::vector<std::string_view>& out) {
        const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
        size_t pos = 0, last = 0;
        while (pos < s.size()) {
            const int rc = pcre2_match(re, subject, s.size(), pos, 0, md, nullptr);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) fail(STARKV_ERR_INTERNAL, "tokenizer: regex match failed (" + std::to_string(rc) + ")");
            const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
            const size_t start = ov[0], end = ov[1];
            if (start > last) out.push_back(s.substr(last, start - last));
            if (end > start) {
                out.push_back(s.substr(start, end - start));
                pos = last = end;
            } else {
                // Empty match (none of our patterns make one): step one byte.
                pos = start + 1;
                last = start;
            }
        }
        if (last < s.size()) out.push_back(s.substr(last));
    }

    void encode_word(std::string_view word, std::vector<int32_t>& out) const {
        if (word.empty()) return;
        if (ignore_merges_) {
            // Llama 3 takes a whole pre-token that is in the vocab as is.
            std::string mapped;
            for (unsigned char c : word) mapped += byte_chars_[c];
            const int32_t id = find(mapped);
            if (id >= 0) {
                out.push_back(id);
                return;
            }
        }
        std::vector<Symbol> sym(word.size());
        for (size_t i = 0; i < word.size(); ++i) {
            sym[i] = {static_cast<int32_t>(i) - 1, static_cast<int32_t>(i) + 1,
                      byte_ids_[static_cast<unsigned char>(word[i])]};
        }
        sym.back().next = -1;
        std::priority_queue<Bigram, std::vector<Bigram>, BigramGreater> queue;
        auto try_add = [&](int32_t l, int32_t r) {
            if (l < 0 || r < 0 || sym[l].id < 0 || sym[r].id < 0) return;
            auto it = merges_.find(pair_key(sym[l].id, sym[r].id));
            if (it == merges_.end()) return;
            queue.push({l, r, it->second.rank, sym[l].id, sym[r].id, it->second.result});
        };
        for (size_t i = 1; i < sym.size(); ++i)
            try_add(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
        while (!queue.empty()) {
            const Bigram b = queue.top();
            queue.pop();
            Symbol& l = sym[b.left];
            Symbol& r = sym[b.right];
            // Stale: a side was merged away or changed since the pair was queued.
            if (l.id != b.left_id || r.id != b.right_id || l.next != b.right) continue;
            l.id = b.result;
            r.id = -2;  // dead
            l.next = r.next;
            if (r.next >= 0) sym[r.next].prev = b.left;
            try_add(l.prev, b.left);
            try_add(b.left, l.next);
        }
        for (int32_t i = 0; i >= 0; i = sym[i].next) {
            if (sym[i].id >= 0) {
                out.push_back(sym[i].id);
            } else if (vocab_.unk >= 0) {
                out.push_back(vocab_.unk);
            } else {
                fail(STARKV_ERR_INVALID_ARGUMENT,
                     "tokenizer: a byte has no token in this vocab and there is no <unk>");
            }
        }
    }

    std::vector<CodePtr> regexes_;
    bool ignore_merges_ = false;
    TokenMap map_;
    std::unordered_map<uint64_t, Merge> merges_;
    std::array<int32_t, 256> byte_ids_{};
    std::array<std::string, 256> byte_chars_;
    std::unordered_map<uint32_t, uint8_t> unicode_to_byte_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(Vocab vocab) {
    return std::make_unique<BpeTokenizer>(std::move(vocab));
}

}  // namespace starkv::detail
