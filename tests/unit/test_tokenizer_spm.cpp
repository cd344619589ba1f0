// SPM tokenizer on the real stories260K vocab, checked against golden
// tokenizations from an independent Python reference
// (tests/tools/spm_reference.py -> tests/golden/tokenizer_stories260K.txt).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "gguf_test_vocab.h"
#include "model/loader.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace {

using starkv::Tokenizer;
using starkv::TokenType;
using starkv::Vocab;

const std::string kSpace = "\xE2\x96\x81";

const Vocab& stories_vocab() {
    static const Vocab v = starkv::load_gguf(starkv_test::stories_model(), nullptr).vocab;
    return v;
}

const Tokenizer& stories() {
    static const std::unique_ptr<Tokenizer> t = Tokenizer::create(stories_vocab());
    return *t;
}

std::string golden_path() {
    return (std::filesystem::path(__FILE__).parent_path().parent_path() / "golden" /
            "tokenizer_stories260K.txt")
        .string();
}

std::string from_hex(const std::string& h) {
    std::string out;
    if (h == "-") return out;
    for (size_t i = 0; i + 1 < h.size(); i += 2)
        out += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
    return out;
}

std::vector<std::string> paragraphs(const std::string& text) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start < text.size()) {
        size_t end = text.find("\n\n", start);
        end = end == std::string::npos ? text.size() : end + 2;
        out.push_back(text.substr(start, end - start));
        start = end;
    }
    return out;
}

TEST(TokenizerSpm, VocabShape) {
    const Vocab& v = stories_vocab();
    ASSERT_EQ(v.tokens.size(), 512u);
    EXPECT_EQ(v.kind, starkv::TokenizerKind::Spm);
    EXPECT_EQ(v.bos, 1);
    EXPECT_EQ(v.eos, 2);
    EXPECT_EQ(v.unk, 0);
    EXPECT_NO_THROW(v.validate());
    EXPECT_EQ(stories().n_vocab(), 512);
}

// The model loader's vocab equals what a separate minimal GGUF reader sees.
TEST(TokenizerSpm, LoaderVocabMatchesTestReader) {
    const Vocab ref = starkv_test::read_gguf_vocab(starkv_test::stories_model());
    const Vocab& v = stories_vocab();
    EXPECT_EQ(v.kind, ref.kind);
    EXPECT_EQ(v.tokens, ref.tokens);
    EXPECT_EQ(v.scores, ref.scores);
    EXPECT_EQ(v.types, ref.types);
    EXPECT_EQ(v.bos, ref.bos);
    EXPECT_EQ(v.eos, ref.eos);
    EXPECT_EQ(v.unk, ref.unk);
    EXPECT_EQ(v.pad, ref.pad);
    EXPECT_EQ(v.add_bos, ref.add_bos);
    EXPECT_EQ(v.add_space_prefix, ref.add_space_prefix);
}

TEST(TokenizerSpm, MatchesIndependentReferenceGolden) {
    std::ifstream in(golden_path());
    ASSERT_TRUE(in.good()) << golden_path();
    std::string line;
    int n_cases = 0;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        const size_t tab = line.find('\t');
        ASSERT_NE(tab, std::string::npos) << line;
        const std::string text = from_hex(line.substr(0, tab));
        std::vector<int32_t> expected;
        std::istringstream ids(line.substr(tab + 1));
        for (int32_t id; ids >> id;) expected.push_back(id);

        EXPECT_EQ(stories().tokenize(text, false, false), expected) << "input hex " << line.substr(0, tab);
        // Text holding U+2581 itself cannot round-trip (SPM reads it as a space).
        if (text.find(kSpace) == std::string::npos) {
            EXPECT_EQ(stories().detokenize(expected), text) << "input hex " << line.substr(0, tab);
        }
        ++n_cases;
    }
    EXPECT_GE(n_cases, 150);
}

TEST(TokenizerSpm, KnownPieces) {
    const Tokenizer& t = stories();
    // "Once upon a time" -> "▁Once ▁upon ▁a ▁time" (the vocab's own tokens).
    const auto ids = t.tokenize("Once upon a time", false, false);
    ASSERT_EQ(ids.size(), 4u);
    EXPECT_EQ(stories_vocab().tokens[ids[0]], kSpace + "Once");
    EXPECT_EQ(t.token_to_piece(ids[0], false), " Once");
    EXPECT_EQ(t.token_to_piece(ids[3], false), " time");
    EXPECT_EQ(t.detokenize(ids), "Once upon a time");

    EXPECT_EQ(t.token_to_piece(3 + 0x41, false), "A");  // <0x41>
    EXPECT_EQ(t.token_to_piece(3 + 0xFF, false), std::string(1, '\xFF'));
    EXPECT_EQ(t.token_to_piece(1, false), "");
    EXPECT_EQ(t.token_to_piece(1, true), "<s>");
    EXPECT_EQ(t.token_to_piece(2, true), "</s>");
    EXPECT_THROW(t.token_to_piece(512, false), starkv::Error);
    EXPECT_THROW(t.token_to_piece(-1, false), starkv::Error);
    EXPECT_THROW(t.detokenize({5, 9999}), starkv::Error);
}

TEST(TokenizerSpm, BosAndEmpty) {
    const Tokenizer& t = stories();
    EXPECT_EQ(t.tokenize("", false, false), std::vector<int32_t>{});
    EXPECT_EQ(t.tokenize("", true, false), std::vector<int32_t>{1});
    auto with = t.tokenize("Hello", true, false);
    auto without = t.tokenize("Hello", false, false);
    ASSERT_EQ(with.size(), without.size() + 1);
    EXPECT_EQ(with[0], 1);
    EXPECT_TRUE(std::equal(without.begin(), without.end(), with.begin() + 1));
    EXPECT_EQ(t.detokenize(with), "Hello");
    // Control tokens vanish from text; EOS at the end too.
    with.push_back(2);
    EXPECT_EQ(t.detokenize(with), "Hello");
}

TEST(TokenizerSpm, LeadingSpacesRoundTrip) {
    for (const char* s : {" x", "  x", " ", "   ", "x ", "\n x", " \xC3\xA9"}) {
        EXPECT_EQ(stories().detokenize(stories().tokenize(s, true, false)), s) << '"' << s << '"';
    }
}

TEST(TokenizerSpm, ParseSpecial) {
    const Tokenizer& t = stories();
    Vocab np = stories_vocab();
    np.add_space_prefix = false;
    const auto no_prefix = Tokenizer::create(np);

    // Without parse_special, "<s>" is ordinary text.
    const auto plain = t.tokenize("<s>Hello</s>", false, false);
    EXPECT_EQ(std::count(plain.begin(), plain.end(), 1), 0);
    EXPECT_EQ(std::count(plain.begin(), plain.end(), 2), 0);
    EXPECT_EQ(t.detokenize(plain), "<s>Hello</s>");

    // With it, control texts become tokens; only the start of the text gets the space prefix.
    std::vector<int32_t> expected{1};
    for (int32_t id : no_prefix->tokenize("Hello", false, false)) expected.push_back(id);
    expected.push_back(2);
    EXPECT_EQ(t.tokenize("<s>Hello</s>", false, true), expected);

    expected = t.tokenize("Hi ", false, false);
    expected.push_back(1);
    for (int32_t id : no_prefix->tokenize(" there", false, false)) expected.push_back(id);
    EXPECT_EQ(t.tokenize("Hi <s> there", false, true), expected);
    EXPECT_EQ(t.detokenize(expected), "Hi  there");

    // <unk> is not control: stays text. Partial matches stay text.
    const auto u = t.tokenize("<unk></s", false, true);
    EXPECT_EQ(std::count(u.begin(), u.end(), 0), 0);
    EXPECT_EQ(std::count(u.begin(), u.end(), 2), 0);
}

TEST(TokenizerSpm, RoundTripsDataFiles) {
    for (const char* name : {"tinystories_val.txt", "wiki.test.raw", "tinyshakespeare_input.txt"}) {
        const std::string text = starkv_test::read_file(starkv_test::shared_path(std::string("data/") + name));
        ASSERT_FALSE(text.empty());
        ASSERT_EQ(text.find(kSpace), std::string::npos);  // would not round-trip by design
        const auto t0 = std::chrono::steady_clock::now();
        const auto ids = stories().tokenize(text, true, false);
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        EXPECT_EQ(stories().detokenize(ids), text) << name;
        std::cout << "[ info ] " << name << ": " << text.size() << " bytes -> " << ids.size()
                  << " tokens in " << secs << " s\n";
    }
}

TEST(TokenizerSpm, RoundTripsArbitraryBytes) {
    std::mt19937 rng(12345);
    std::uniform_int_distribution<int> len(0, 96), byte(0, 255), pick(0, 9);
    const std::string alphabet[] = {" ", "a", "e", "\xC3\xA9", "\xE4\xB8\xAD", "\xF0\x9F\x98\x80",
                                    "\xFF", "\x80", "\xC3", "\n"};
    for (int i = 0; i < 2000; ++i) {
        std::string s;
        const int n = len(rng);
        for (int k = 0; k < n; ++k) {
            if (i % 2) s += static_cast<char>(byte(rng));
            else s += alphabet[pick(rng)];
        }
        if (s.find(kSpace) != std::string::npos) continue;
        const auto ids = stories().tokenize(s, i % 3 == 0, false);
        for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < 512);
        ASSERT_EQ(stories().detokenize(ids), s) << "case " << i;
    }
}

TEST(TokenizerSpm, ThreadsAgree) {
    const std::string text =
        starkv_test::read_file(starkv_test::shared_path("data/tinystories_val.txt")).substr(0, 200000);
    const auto paras = paragraphs(text);
    std::vector<std::vector<int32_t>> expected;
    for (const auto& p : paras) expected.push_back(stories().tokenize(p, true, true));
    std::vector<int> mismatches(4, 0);
    std::vector<std::thread> threads;
    for (int th = 0; th < 4; ++th) {
        threads.emplace_back([&, th] {
            for (int rep = 0; rep < 2; ++rep)
                for (size_t i = th; i < paras.size() + th; ++i) {
                    const size_t k = i % paras.size();
                    if (stories().tokenize(paras[k], true, true) != expected[k]) ++mismatches[th];
                }
        });
    }
    for (auto& t : threads) t.join();
    for (int m : mismatches) EXPECT_EQ(m, 0);
}

TEST(TokenizerSpm, NoByteTokensFallsBackToUnk) {
    Vocab v;
    v.kind = starkv::TokenizerKind::Spm;
    v.tokens = {"<unk>", "<s>", "</s>", kSpace, "a", "b", kSpace + "a"};
    v.scores = {0, 0, 0, -1, -1, -1, -0.5f};
    v.types = {TokenType::Unknown, TokenType::Control, TokenType::Control, TokenType::Normal,
               TokenType::Normal, TokenType::Normal, TokenType::Normal};
    v.unk = 0;
    v.bos = 1;
    v.eos = 2;
    const auto t = Tokenizer::create(v);
    EXPECT_EQ(t->tokenize("ab", true, false), (std::vector<int32_t>{1, 6, 5}));
    EXPECT_EQ(t->tokenize("a\xC3\xA9" "b", false, false), (std::vector<int32_t>{6, 0, 5}));
    v.unk = -1;
    v.types[0] = TokenType::Normal;
    const auto no_unk = Tokenizer::create(v);
    try {
        no_unk->tokenize("x", false, false);
        FAIL() << "expected an error";
    } catch (const starkv::Error& e) {
        EXPECT_EQ(e.status(), STARKV_ERR_INVALID_ARGUMENT);
    }
}

TEST(TokenizerVocab, ValidateRejectsInconsistentVocab) {
    auto expect_corrupt = [](const Vocab& v) {
        try {
            v.validate();
            ADD_FAILURE() << "validate() accepted a bad vocab";
        } catch (const starkv::Error& e) {
            EXPECT_EQ(e.status(), STARKV_ERR_CORRUPT);
        }
        try {
            Tokenizer::create(v);
            ADD_FAILURE() << "create() accepted a bad vocab";
        } catch (const starkv::Error& e) {
            EXPECT_EQ(e.status(), STARKV_ERR_CORRUPT);
        }
    };
    Vocab good = stories_vocab();
    Vocab v = good;
    v.types.pop_back();
    expect_corrupt(v);
    v = good;
    v.scores.push_back(0);
    expect_corrupt(v);
    v = good;
    v.bos = 512;
    expect_corrupt(v);
    v = good;
    v.eos = -2;
    expect_corrupt(v);
    v = good;
    v.unk = 100000;
    expect_corrupt(v);
    v = good;
    v.types[7] = static_cast<TokenType>(42);
    expect_corrupt(v);
    v = good;
    v.tokens.clear();
    v.types.clear();
    v.scores.clear();
    expect_corrupt(v);
    v = good;
    v.tokens[3] = "<0xZZ>";  // a byte token that names no byte: the SPM tokenizer refuses it
    try {
        Tokenizer::create(v);
        ADD_FAILURE() << "create() accepted a bad byte token";
    } catch (const starkv::Error& e) {
        EXPECT_EQ(e.status(), STARKV_ERR_CORRUPT);
    }
    v = good;
    v.pad = -1;
    v.bos = -1;
    EXPECT_NO_THROW(v.validate());
}

}  // namespace
