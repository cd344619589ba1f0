// Byte-level BPE and the tokenizer.json loader, on small synthetic
// tokenizer.json files whose expected tokenizations can be derived by hand
// (and, for merges, by a naive reference loop in this file).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "byte_level.h"
#include "core/error.h"
#include "model/loader.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace {

using json = nlohmann::json;
using starkv::Tokenizer;
using starkv::TokenType;
using starkv::Vocab;

// Raw bytes as a byte-level vocabulary spells them (GPT-2's map, independent of the library).
std::string mapped(std::string_view raw) {
    std::string s;
    for (unsigned char c : raw) s += starkv_test::hf_byte_token(c);
    return s;
}

struct Spec {
    std::vector<std::pair<std::string, std::string>> merges;  // raw bytes
    std::vector<std::string> extra_tokens;                     // raw bytes, no merge makes them
    std::vector<std::pair<std::string, bool>> added;           // content, special
    json pre_tokenizer = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
    bool array_merges = false;
    json config;  // tokenizer_config.json when not null
};

// Writes dir/tokenizer.json: ids 0..255 are the bytes, then merge results in
// merge order, then extra tokens, then added tokens. Returns raw text -> id.
std::map<std::string, int32_t> write_tokenizer(const std::string& dir, const Spec& spec) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::map<std::string, int32_t> ids;
    json vocab = json::object();
    auto add = [&](const std::string& raw) {
        if (ids.count(raw)) return;
        const auto id = static_cast<int32_t>(ids.size());
        ids[raw] = id;
        vocab[mapped(raw)] = id;
    };
    for (int b = 0; b < 256; ++b) add(std::string(1, static_cast<char>(b)));
    json merges = json::array();
    for (const auto& [l, r] : spec.merges) {
        add(l + r);
        if (spec.array_merges) merges.push_back({mapped(l), mapped(r)});
        else merges.push_back(mapped(l) + " " + mapped(r));
    }
    for (const auto& t : spec.extra_tokens) add(t);
    json added = json::array();
    for (const auto& [content, special] : spec.added) {
        const auto id = static_cast<int32_t>(ids.size());
        ids[content] = id;
        added.push_back({{"id", id}, {"content", content}, {"special", special}});
    }
    json j = {{"version", "1.0"},
              {"added_tokens", added},
              {"normalizer", nullptr},
              {"pre_tokenizer", spec.pre_tokenizer},
              {"decoder", {{"type", "ByteLevel"}}},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
    std::ofstream(dir + "/tokenizer.json") << j.dump();
    if (!spec.config.is_null()) std::ofstream(dir + "/tokenizer_config.json") << spec.config.dump();
    return ids;
}

std::string dir_for(const std::string& name) { return starkv_test::temp_dir() + "/bpe_" + name; }

json split_step(const std::string& regex) {
    return {{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}};
}

json byte_level_step(bool use_regex) {
    return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", use_regex}};
}

json sequence(json steps) { return {{"type", "Sequence"}, {"pretokenizers", std::move(steps)}}; }

const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Llama 3's tokenizer.json: Split(regex) then ByteLevel without its own regex.
json llama3_pre() { return sequence(json::array({split_step(kLlama3Regex), byte_level_step(false)})); }

// SmolLM2's: every digit isolated, then ByteLevel with the GPT-2 regex.
json smollm_pre() { return sequence(json::array({split_step("\\p{N}"), byte_level_step(true)})); }

struct Loaded {
    std::map<std::string, int32_t> ids;
    std::unique_ptr<Tokenizer> tok;
    int32_t operator[](const std::string& raw) const { return ids.at(raw); }
    std::vector<int32_t> operator()(const std::string& text, bool special = false) const {
        return tok->tokenize(text, false, special);
    }
};

Loaded load(const std::string& name, const Spec& spec) {
    Loaded l;
    l.ids = write_tokenizer(dir_for(name), spec);
    l.tok = Tokenizer::create(starkv::load_tokenizer_json(dir_for(name)));
    return l;
}

std::vector<std::pair<std::string, std::string>> hello_merges() {
    return {{"H", "e"},  {"He", "l"},  {"Hel", "l"},  {"Hell", "o"},  {" ", "w"},  {" w", "o"},
            {" wo", "r"}, {" wor", "l"}, {" worl", "d"}, {"'", "s"},     {"1", "2"}};
}

TEST(TokenizerBpe, HelloWorld) {
    Spec spec;
    spec.merges = hello_merges();
    spec.merges.insert(spec.merges.begin(), {"o", " "});  // must never fire across words
    const Loaded t = load("hello", spec);
    EXPECT_EQ(t.tok->vocab().kind, starkv::TokenizerKind::Bpe);
    EXPECT_EQ(t.tok->vocab().pre, "gpt2");
    const std::vector<int32_t> expected{t["Hello"], t[" world"], t["'s"], t[" "], t["12"], t["3"]};
    EXPECT_EQ(t("Hello world's 123"), expected);
    EXPECT_EQ(t.tok->detokenize(expected), "Hello world's 123");
    EXPECT_EQ(t.tok->token_to_piece(t[" world"], false), " world");
    EXPECT_EQ(t("Hello world"), (std::vector<int32_t>{t["Hello"], t[" world"]}));
    EXPECT_EQ(t(""), std::vector<int32_t>{});
}

TEST(TokenizerBpe, ArrayMergesLoadTheSame) {
    Spec spec;
    spec.merges = hello_merges();
    spec.array_merges = true;
    const Loaded t = load("array_merges", spec);
    EXPECT_EQ(t("Hello world's 123"),
              (std::vector<int32_t>{t["Hello"], t[" world"], t["'s"], t[" "], t["12"], t["3"]}));
}

TEST(TokenizerBpe, MergeRanksDecide) {
    Spec a;
    a.merges = {{"a", "b"}, {"b", "c"}};
    const Loaded ta = load("rank_a", a);
    EXPECT_EQ(ta("abc"), (std::vector<int32_t>{ta["ab"], ta["c"]}));
    Spec b;
    b.merges = {{"b", "c"}, {"a", "b"}};
    const Loaded tb = load("rank_b", b);
    EXPECT_EQ(tb("abc"), (std::vector<int32_t>{tb["a"], tb["bc"]}));
    // Equal pairs merge leftmost first.
    Spec c;
    c.merges = {{"a", "a"}};
    const Loaded tc = load("rank_c", c);
    EXPECT_EQ(tc("aaa"), (std::vector<int32_t>{tc["aa"], tc["a"]}));
    EXPECT_EQ(tc("aaaa"), (std::vector<int32_t>{tc["aa"], tc["aa"]}));
}

TEST(TokenizerBpe, Gpt2Whitespace) {
    Spec spec;
    spec.merges = {{" ", " "}, {" ", "b"}, {"\n", "\n"}};
    const Loaded t = load("ws", spec);
    // "a  b": \s+(?!\S) leaves the last space to the word " b".
    EXPECT_EQ(t("a  b"), (std::vector<int32_t>{t["a"], t[" "], t[" b"]}));
    EXPECT_EQ(t("a   b"), (std::vector<int32_t>{t["a"], t["  "], t[" b"]}));
    EXPECT_EQ(t("a  "), (std::vector<int32_t>{t["a"], t["  "]}));
    // Same rule for newlines before a word (as Python's re gives for GPT-2's
    // pattern); at the end of the text the run stays whole.
    EXPECT_EQ(t("x\n\ny"), (std::vector<int32_t>{t["x"], t["\n"], t["\n"], t["y"]}));
    EXPECT_EQ(t("x\n\n"), (std::vector<int32_t>{t["x"], t["\n\n"]}));
}

TEST(TokenizerBpe, Llama3PreTokenizer) {
    Spec spec;
    spec.merges = {{"3", "4"}, {"'", "T"}};
    spec.extra_tokens = {"xyz"};
    spec.pre_tokenizer = llama3_pre();
    const Loaded l3 = load("llama3", spec);
    EXPECT_EQ(l3.tok->vocab().pre, "llama3");
    // Digits in groups of three: "3 4" cannot merge across "123|45".
    EXPECT_EQ(l3("12345"), (std::vector<int32_t>{l3["1"], l3["2"], l3["3"], l3["4"], l3["5"]}));
    // Case-insensitive contractions.
    EXPECT_EQ(l3("DON'T"), (std::vector<int32_t>{l3["D"], l3["O"], l3["N"], l3["'T"]}));
    // A pre-token that is a whole vocab token is taken as is (ignore_merges).
    EXPECT_EQ(l3("xyz"), (std::vector<int32_t>{l3["xyz"]}));

    spec.pre_tokenizer = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
    const Loaded g = load("llama3_vs_gpt2", spec);
    EXPECT_EQ(g.tok->vocab().pre, "gpt2");
    EXPECT_EQ(g("12345"), (std::vector<int32_t>{g["1"], g["2"], g["34"], g["5"]}));
    EXPECT_EQ(g("DON'T"), (std::vector<int32_t>{g["D"], g["O"], g["N"], g["'"], g["T"]}));
    EXPECT_EQ(g("xyz"), (std::vector<int32_t>{g["x"], g["y"], g["z"]}));
}

TEST(TokenizerBpe, SmolLmSplitsDigits) {
    Spec spec;
    spec.merges = {{"1", "2"}, {" ", "1"}};
    spec.pre_tokenizer = smollm_pre();
    const Loaded s = load("smollm", spec);
    EXPECT_EQ(s.tok->vocab().pre, "smollm");
    EXPECT_EQ(s("12"), (std::vector<int32_t>{s["1"], s["2"]}));
    EXPECT_EQ(s("a 1"), (std::vector<int32_t>{s["a"], s[" "], s["1"]}));
    spec.pre_tokenizer = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
    const Loaded g = load("smollm_vs_gpt2", spec);
    EXPECT_EQ(g("12"), (std::vector<int32_t>{g["12"]}));
    EXPECT_EQ(g("a 1"), (std::vector<int32_t>{g["a"], g[" 1"]}));
}

TEST(TokenizerBpe, SpecialTokens) {
    Spec spec;
    spec.merges = {{"h", "i"}};
    spec.added = {{"<|endoftext|>", true}, {"<|x|>", true}, {"<|x|>y", true}, {"<tool>", false}};
    spec.config = {{"add_bos_token", true}, {"bos_token", "<|endoftext|>"},
                   {"eos_token", {{"content", "<|endoftext|>"}, {"lstrip", false}}}};
    const Loaded t = load("special", spec);
    const Vocab& v = t.tok->vocab();
    EXPECT_EQ(v.bos, t["<|endoftext|>"]);
    EXPECT_EQ(v.eos, t["<|endoftext|>"]);
    EXPECT_TRUE(v.add_bos);
    EXPECT_EQ(v.types[t["<|endoftext|>"]], TokenType::Control);
    EXPECT_EQ(v.types[t["<tool>"]], TokenType::UserDefined);

    const int32_t eot = t["<|endoftext|>"];
    EXPECT_EQ(t("hi<|endoftext|>hi", true), (std::vector<int32_t>{t["hi"], eot, t["hi"]}));
    // Longest match wins.
    EXPECT_EQ(t("<|x|>yz", true), (std::vector<int32_t>{t["<|x|>y"], t["z"]}));
    EXPECT_EQ(t("<|x|>z", true), (std::vector<int32_t>{t["<|x|>"], t["z"]}));
    EXPECT_EQ(t("a<tool>b", true), (std::vector<int32_t>{t["a"], t["<tool>"], t["b"]}));
    // Without parse_special it is all text.
    const auto plain = t("hi<|endoftext|>hi");
    EXPECT_EQ(std::count(plain.begin(), plain.end(), eot), 0);
    EXPECT_EQ(t.tok->detokenize(plain), "hi<|endoftext|>hi");
    // BOS from the config; control text hidden unless rendered.
    const auto with_bos = t.tok->tokenize("hi", true, false);
    EXPECT_EQ(with_bos, (std::vector<int32_t>{eot, t["hi"]}));
    EXPECT_EQ(t.tok->detokenize(with_bos), "hi");
    EXPECT_EQ(t.tok->token_to_piece(eot, false), "");
    EXPECT_EQ(t.tok->token_to_piece(eot, true), "<|endoftext|>");
    EXPECT_EQ(t.tok->token_to_piece(t["<tool>"], false), "<tool>");
    EXPECT_EQ(t.tok->detokenize(t("a<tool>b", true)), "a<tool>b");
}

// Naive reference: words of {a,b,c} separated by single spaces (GPT-2 puts
// each space in front of the next word), then "merge the best-ranked adjacent
// pair, leftmost first" until nothing merges.
std::vector<std::string> naive_bpe(const std::string& text,
                                   const std::map<std::pair<std::string, std::string>, int>& ranks) {
    std::vector<std::string> words;
    for (char c : text) {
        if (c == ' ' || words.empty()) words.emplace_back();
        words.back() += c;
    }
    std::vector<std::string> out;
    for (const auto& w : words) {
        std::vector<std::string> sym;
        for (char c : w) sym.emplace_back(1, c);
        for (;;) {
            int best = -1, best_rank = 0;
            for (size_t i = 0; i + 1 < sym.size(); ++i) {
                auto it = ranks.find({sym[i], sym[i + 1]});
                if (it != ranks.end() && (best < 0 || it->second < best_rank)) {
                    best = static_cast<int>(i);
                    best_rank = it->second;
                }
            }
            if (best < 0) break;
            sym[best] += sym[best + 1];
            sym.erase(sym.begin() + best + 1);
        }
        out.insert(out.end(), sym.begin(), sym.end());
    }
    return out;
}

TEST(TokenizerBpe, MatchesNaiveMergeLoop) {
    std::mt19937 rng(7);
    for (int round = 0; round < 5; ++round) {
        // Random merges over {a, b, c, ' '}: each merge makes a new string.
        std::vector<std::string> toks{"a", "b", "c", " "};
        Spec spec;
        std::map<std::pair<std::string, std::string>, int> ranks;
        while (spec.merges.size() < 60) {
            const auto& l = toks[rng() % toks.size()];
            const auto& r = toks[rng() % toks.size()];
            if (r[0] == ' ' || l.size() + r.size() > 8) continue;  // a space only starts a word
            if (std::find(toks.begin(), toks.end(), l + r) != toks.end()) continue;
            ranks[{l, r}] = static_cast<int>(spec.merges.size());
            spec.merges.emplace_back(l, r);
            toks.push_back(l + r);
        }
        const Loaded t = load("naive" + std::to_string(round), spec);
        for (int i = 0; i < 300; ++i) {
            std::string text;
            const int n = 1 + static_cast<int>(rng() % 60);
            for (int k = 0; k < n; ++k) {
                const char c = "abc "[rng() % 4];
                if (c == ' ' && (text.empty() || text.back() == ' ')) continue;
                text += c;
            }
            if (!text.empty() && text.back() == ' ') text.pop_back();
            std::vector<int32_t> expected;
            for (const auto& s : naive_bpe(text, ranks)) expected.push_back(t[s]);
            ASSERT_EQ(t(text), expected) << "round " << round << " text '" << text << "'";
        }
    }
}

TEST(TokenizerBpe, RoundTripsDataFilesAndBytes) {
    Spec spec;
    spec.merges = {{" ", "t"}, {"h", "e"}, {" t", "he"}, {"i", "n"}, {"e", "r"}, {" ", "a"},
                   {"o", "u"}, {"a", "n"}, {" ", "s"}, {"e", "d"}, {"in", "g"}, {"\n", "\n"}};
    json pres[] = {spec.pre_tokenizer, llama3_pre(), smollm_pre()};
    int k = 0;
    for (const json& pre : pres) {
        spec.pre_tokenizer = pre;
        const Loaded t = load("roundtrip" + std::to_string(k++), spec);
        for (const char* name : {"tinystories_val.txt", "wiki.test.raw", "tinyshakespeare_input.txt"}) {
            const std::string text =
                starkv_test::read_file(starkv_test::shared_path(std::string("data/") + name));
            const auto t0 = std::chrono::steady_clock::now();
            const auto ids = t.tok->tokenize(text, false, false);
            const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            EXPECT_EQ(t.tok->detokenize(ids), text) << name << " pre " << t.tok->vocab().pre;
            std::cout << "[ info ] " << t.tok->vocab().pre << " " << name << ": " << text.size()
                      << " bytes -> " << ids.size() << " tokens in " << secs << " s\n";
        }
        std::mt19937 rng(99);
        for (int i = 0; i < 500; ++i) {
            std::string s(rng() % 64, '\0');
            for (char& c : s) c = static_cast<char>(rng() & 0xFF);
            ASSERT_EQ(t.tok->detokenize(t.tok->tokenize(s, false, true)), s);
        }
    }
}

TEST(TokenizerBpe, ThreadsAgree) {
    Spec spec;
    spec.merges = hello_merges();
    spec.pre_tokenizer = llama3_pre();
    const Loaded t = load("threads", spec);
    const std::string text =
        starkv_test::read_file(starkv_test::shared_path("data/wiki.test.raw")).substr(0, 100000);
    std::vector<std::string> lines;
    for (size_t p = 0; p < text.size();) {
        size_t e = text.find('\n', p);
        e = e == std::string::npos ? text.size() : e + 1;
        lines.push_back(text.substr(p, e - p));
        p = e;
    }
    std::vector<std::vector<int32_t>> expected;
    for (const auto& l : lines) expected.push_back(t(l));
    std::vector<int> bad(4, 0);
    std::vector<std::thread> threads;
    for (int th = 0; th < 4; ++th)
        threads.emplace_back([&, th] {
            for (size_t i = 0; i < lines.size(); ++i) {
                const size_t k = (i + th * 37) % lines.size();
                if (t(lines[k]) != expected[k]) ++bad[th];
            }
        });
    for (auto& th : threads) th.join();
    for (int b : bad) EXPECT_EQ(b, 0);
}

// Llama-2-style tokenizer.json: BPE with byte_fallback over U+2581 pieces.
TEST(TokenizerJson, Llama2StyleIsSpm) {
    const std::string sp = "\xE2\x96\x81";
    for (int variant = 0; variant < 2; ++variant) {
        const std::string dir = dir_for("llama2_" + std::to_string(variant));
        std::filesystem::create_directories(dir);
        json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
        for (int b = 0; b < 256; ++b) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "<0x%02X>", b);
            vocab[buf] = 3 + b;
        }
        int id = 259;
        for (const std::string& s : {sp, std::string("a"), std::string("b"), sp + "a", std::string("ab"),
                                     sp + "ab"})
            vocab[s] = id++;
        // Ranks: "▁ a" (0), "a b" (1), "▁a b" (2).
        json j = {{"added_tokens",
                   {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                    {{"id", 1}, {"content", "<s>"}, {"special", true}},
                    {{"id", 2}, {"content", "</s>"}, {"special", true}}}},
                  {"model",
                   {{"type", "BPE"}, {"byte_fallback", true}, {"unk_token", "<unk>"}, {"vocab", vocab},
                    {"merges", {sp + " a", "a b", sp + "a b"}}}}};
        if (variant == 0) {
            j["normalizer"] = {{"type", "Sequence"},
                               {"normalizers",
                                {{{"type", "Prepend"}, {"prepend", sp}},
                                 {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", sp}}}}};
            j["pre_tokenizer"] = nullptr;
        } else {
            j["normalizer"] = nullptr;
            j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "first"},
                                  {"split", false}};
        }
        std::ofstream(dir + "/tokenizer.json") << j.dump();
        const Vocab v = starkv::load_tokenizer_json(dir);
        EXPECT_EQ(v.kind, starkv::TokenizerKind::Spm);
        EXPECT_TRUE(v.add_space_prefix);
        EXPECT_TRUE(v.add_bos);
        EXPECT_EQ(v.bos, 1);
        EXPECT_EQ(v.eos, 2);
        EXPECT_EQ(v.unk, 0);
        EXPECT_EQ(v.types[3 + 0x41], TokenType::Byte);
        const auto t = Tokenizer::create(v);
        // "ab ab": ▁ab ▁ab by ranks ("▁a" first, then "▁ab"), "é" via bytes.
        EXPECT_EQ(t->tokenize("ab ab", true, false), (std::vector<int32_t>{1, 264, 264}));
        EXPECT_EQ(t->tokenize("b\xC3\xA9", false, false),
                  (std::vector<int32_t>{259, 261, 3 + 0xC3, 3 + 0xA9}));
        EXPECT_EQ(t->detokenize(t->tokenize(" ab b\xC3\xA9 ", true, false)), " ab b\xC3\xA9 ");
    }
}

void write_raw(const std::string& dir, const std::string& name, const std::string& content) {
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/" + name) << content;
}

starkv_status load_status(const std::string& dir) {
    try {
        starkv::load_tokenizer_json(dir);
    } catch (const starkv::Error& e) {
        return e.status();
    } catch (...) {
        return STARKV_ERR_INTERNAL;  // anything else escaping is a bug
    }
    return STARKV_OK;
}

TEST(TokenizerJson, Errors) {
    EXPECT_EQ(load_status(dir_for("does_not_exist")), STARKV_ERR_IO);

    const json ok_model = {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}}}, {"merges", json::array()}};
    const json bl = {{"type", "ByteLevel"}};
    auto with_model = [&](const json& model) {
        return json{{"model", model}, {"pre_tokenizer", bl}}.dump();
    };
    const std::vector<std::pair<std::string, std::string>> corrupt_cases = {
        {"malformed", "{\"model\": {\"type\": \"BPE\", "},
        {"not_json", "\x01\x02garbage"},
        {"root_array", "[1, 2, 3]"},
        {"no_model", json{{"pre_tokenizer", bl}}.dump()},
        {"model_string", with_model("BPE")},
        {"no_vocab", with_model({{"type", "BPE"}, {"merges", json::array()}})},
        {"vocab_array", with_model({{"type", "BPE"}, {"vocab", {1, 2}}, {"merges", json::array()}})},
        {"vocab_id_string", with_model({{"type", "BPE"}, {"vocab", {{"a", "0"}}}, {"merges", json::array()}})},
        {"vocab_id_negative", with_model({{"type", "BPE"}, {"vocab", {{"a", -5}}}, {"merges", json::array()}})},
        {"vocab_id_huge", with_model({{"type", "BPE"}, {"vocab", {{"a", 1LL << 40}}}, {"merges", json::array()}})},
        {"no_merges", with_model({{"type", "BPE"}, {"vocab", {{"a", 0}}}})},
        {"merges_object", with_model({{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", {{"a", "b"}}}})},
        {"merge_number", with_model({{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", {1}}})},
        {"merge_no_space", with_model({{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", {"ab"}}})},
        {"merge_triple", with_model({{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", {{"a", "b", "c"}}}})},
        {"type_number", with_model({{"type", 3}, {"vocab", {{"a", 0}}}, {"merges", json::array()}})},
        {"byte_fallback_string",
         with_model({{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", json::array()}, {"byte_fallback", "yes"}})},
        {"unk_not_in_vocab",
         with_model({{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", json::array()}, {"unk_token", "<unk>"}})},
        {"added_not_array", json{{"model", ok_model}, {"pre_tokenizer", bl}, {"added_tokens", 5}}.dump()},
        {"added_content_int",
         json{{"model", ok_model}, {"pre_tokenizer", bl}, {"added_tokens", {{{"id", 2}, {"content", 7}}}}}.dump()},
        {"added_no_id",
         json{{"model", ok_model}, {"pre_tokenizer", bl}, {"added_tokens", {{{"content", "<x>"}}}}}.dump()},
        {"added_special_string",
         json{{"model", ok_model},
              {"pre_tokenizer", bl},
              {"added_tokens", {{{"id", 2}, {"content", "<x>"}, {"special", "yes"}}}}}
             .dump()},
        {"empty_vocab", with_model({{"type", "BPE"}, {"vocab", json::object()}, {"merges", json::array()}})},
    };
    for (const auto& [name, content] : corrupt_cases) {
        const std::string dir = dir_for("err_" + name);
        write_raw(dir, "tokenizer.json", content);
        EXPECT_EQ(load_status(dir), STARKV_ERR_CORRUPT) << name;
    }

    // A model we do not run, and a BPE that is neither byte-level nor byte-fallback.
    write_raw(dir_for("err_wordpiece"), "tokenizer.json",
              json{{"model", {{"type", "WordPiece"}, {"vocab", {{"a", 0}}}}}}.dump());
    EXPECT_EQ(load_status(dir_for("err_wordpiece")), STARKV_ERR_UNSUPPORTED);
    write_raw(dir_for("err_plain_bpe"), "tokenizer.json", json{{"model", ok_model}}.dump());
    EXPECT_EQ(load_status(dir_for("err_plain_bpe")), STARKV_ERR_UNSUPPORTED);

    // tokenizer_config.json problems.
    const std::string good = json{{"model", ok_model}, {"pre_tokenizer", bl}}.dump();
    const std::vector<std::pair<std::string, std::string>> config_cases = {
        {"cfg_malformed", "{"},
        {"cfg_array", "[]"},
        {"cfg_add_bos_string", json{{"add_bos_token", "true"}}.dump()},
        {"cfg_bos_unknown", json{{"bos_token", "<nope>"}}.dump()},
        {"cfg_bos_number", json{{"bos_token", 3}}.dump()},
        {"cfg_eos_object_bad", json{{"eos_token", {{"content", 3}}}}.dump()},
    };
    for (const auto& [name, content] : config_cases) {
        const std::string dir = dir_for(name);
        write_raw(dir, "tokenizer.json", good);
        write_raw(dir, "tokenizer_config.json", content);
        EXPECT_EQ(load_status(dir), STARKV_ERR_CORRUPT) << name;
    }
    const std::string dir = dir_for("cfg_ok");
    write_raw(dir, "tokenizer.json", good);
    write_raw(dir, "tokenizer_config.json", json{{"bos_token", nullptr}, {"add_bos_token", false}}.dump());
    EXPECT_EQ(load_status(dir), STARKV_OK);
}

}  // namespace
