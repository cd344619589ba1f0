// Vocab from a Hugging Face tokenizer.json (+ tokenizer_config.json).
// Two layouts are understood:
//  * byte-level BPE (GPT-2, Llama 3, SmolLM): ByteLevel pre-tokenizer/decoder;
//  * Llama-2-style BPE with byte_fallback and a U+2581 normalizer/Metaspace,
//    run by the SPM tokenizer with scores = -rank of the merge making a token.
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "model/loader.h"

namespace starkv {
namespace {

using json = nlohmann::json;

constexpr const char* kSpace = "\xE2\x96\x81";  // U+2581
constexpr int64_t kMaxVocab = int64_t{1} << 24;

[[noreturn]] void bad(const std::string& file, const std::string& msg) {
    corrupt(file + ": " + msg);
}

json read_json(const std::string& path, const std::string& name) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(STARKV_ERR_IO, "cannot open '" + path + "'");
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) fail(STARKV_ERR_IO, "cannot read '" + path + "'");
    try {
        return json::parse(ss.str());
    } catch (const json::exception& e) {
        bad(name, std::string("malformed JSON: ") + e.what());
    }
}

const json& field(const json& obj, const char* key, const std::string& where) {
    if (!obj.is_object()) bad("tokenizer.json", where + " is not an object");
    auto it = obj.find(key);
    if (it == obj.end()) bad("tokenizer.json", "missing " + where + "." + key);
    return *it;
}

// Calls fn on obj and, for a "Sequence", on each of its members.
template <typename Fn>
void for_each_component(const json& obj, const char* list_key, Fn&& fn) {
    if (!obj.is_object()) return;
    auto t = obj.find("type");
    if (t != obj.end() && t->is_string() && *t == "Sequence") {
        auto l = obj.find(list_key);
        if (l != obj.end() && l->is_array())
            for (const json& c : *l) for_each_component(c, list_key, fn);
        return;
    }
    fn(obj);
}

std::string type_of(const json& obj) {
    auto t = obj.find("type");
    return t != obj.end() && t->is_string() ? t->get<std::string>() : std::string();
}

// A token named in tokenizer_config.json: "text", {"content": "text"} or null.
std::string config_token_text(const json& v, const char* key) {
    if (v.is_null()) return {};
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string())
        return v["content"].get<std::string>();
    bad("tokenizer_config.json", std::string(key) + " is neither a string nor {\"content\": ...}");
}

struct Parsed {
    std::vector<std::string> tokens;
    std::vector<bool> present;
    std::vector<TokenType> types;
    std::vector<std::pair<std::string, std::string>> merges;
    std::unordered_map<std::string, int32_t> ids;  // text -> id (vocab then added)
};

void set_token(Parsed& p, int64_t id, const std::string& text, TokenType type) {
    if (id < 0 || id >= kMaxVocab) bad("tokenizer.json", "token id " + std::to_string(id) + " out of range");
    const auto i = static_cast<size_t>(id);
    if (i >= p.tokens.size()) {
        p.tokens.resize(i + 1);
        p.present.resize(i + 1, false);
        p.types.resize(i + 1, TokenType::Unused);
    }
    p.tokens[i] = text;
    p.present[i] = true;
    p.types[i] = type;
    p.ids[text] = static_cast<int32_t>(id);
}

Vocab parse(const json& j, const json* config) {
    Parsed p;
    const json& model = field(j, "model", "(root)");
    if (!model.is_object()) bad("tokenizer.json", "model is not an object");
    if (model.contains("type")) {
        const json& t = model["type"];
        if (!t.is_string()) bad("tokenizer.json", "model.type is not a string");
        if (t != "BPE") unsupported("tokenizer.json: model type '" + t.get<std::string>() + "' (only BPE)");
    }
    const json& vocab = field(model, "vocab", "model");
    if (!vocab.is_object()) bad("tokenizer.json", "model.vocab is not an object");
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        if (!it.value().is_number_integer())
            bad("tokenizer.json", "model.vocab['" + it.key() + "'] is not an integer id");
        set_token(p, it.value().get<int64_t>(), it.key(), TokenType::Normal);
    }

    const json& merges = field(model, "merges", "model");
    if (!merges.is_array()) bad("tokenizer.json", "model.merges is not an array");
    p.merges.reserve(merges.size());
    for (const json& m : merges) {
        if (m.is_string()) {
            const std::string s = m.get<std::string>();
            const size_t sp = s.find(' ', 1);
            if (sp == std::string::npos || sp + 1 >= s.size())
                bad("tokenizer.json", "merge '" + s + "' is not 'left right'");
            p.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
            p.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
        } else {
            bad("tokenizer.json", "a merge is neither \"a b\" nor [\"a\", \"b\"]");
        }
    }

    bool byte_fallback = false;
    if (model.contains("byte_fallback") && !model["byte_fallback"].is_null()) {
        if (!model["byte_fallback"].is_boolean()) bad("tokenizer.json", "model.byte_fallback is not a boolean");
        byte_fallback = model["byte_fallback"].get<bool>();
    }
    std::string unk_text;
    if (model.contains("unk_token") && !model["unk_token"].is_null()) {
        if (!model["unk_token"].is_string()) bad("tokenizer.json", "model.unk_token is not a string");
        unk_text = model["unk_token"].get<std::string>();
    }

    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
        const json& added = j["added_tokens"];
        if (!added.is_array()) bad("tokenizer.json", "added_tokens is not an array");
        for (const json& a : added) {
            const json& id = field(a, "id", "added_tokens[]");
            const json& content = field(a, "content", "added_tokens[]");
            if (!id.is_number_integer()) bad("tokenizer.json", "added_tokens[].id is not an integer");
            if (!content.is_string()) bad("tokenizer.json", "added_tokens[].content is not a string");
            bool special = false;
            if (a.contains("special")) {
                if (!a["special"].is_boolean()) bad("tokenizer.json", "added_tokens[].special is not a boolean");
                special = a["special"].get<bool>();
            }
            set_token(p, id.get<int64_t>(), content.get<std::string>(),
                      special ? TokenType::Control : TokenType::UserDefined);
        }
    }
    if (p.tokens.empty()) bad("tokenizer.json", "no tokens");

    // Which layout: look at the normalizer, pre-tokenizer and decoder.
    const json null_json;
    const json& normalizer = j.contains("normalizer") ? j["normalizer"] : null_json;
    const json& pre_tok = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : null_json;
    const json& decoder = j.contains("decoder") ? j["decoder"] : null_json;
    bool byte_level = false, metaspace = false, prepend_space = false;
    std::vector<std::string> split_patterns;
    for_each_component(pre_tok, "pretokenizers", [&](const json& c) {
        const std::string t = type_of(c);
        if (t == "ByteLevel") {
            byte_level = true;
        } else if (t == "Metaspace") {
            metaspace = true;
            std::string scheme = "always";
            if (c.contains("prepend_scheme") && c["prepend_scheme"].is_string())
                scheme = c["prepend_scheme"].get<std::string>();
            else if (c.contains("add_prefix_space") && c["add_prefix_space"].is_boolean())
                scheme = c["add_prefix_space"].get<bool>() ? "always" : "never";
            prepend_space = scheme != "never";
        } else if (t == "Split" && c.contains("pattern") && c["pattern"].is_object()) {
            const json& pat = c["pattern"];
            if (pat.contains("Regex") && pat["Regex"].is_string())
                split_patterns.push_back(pat["Regex"].get<std::string>());
            else if (pat.contains("String") && pat["String"].is_string())
                split_patterns.push_back(pat["String"].get<std::string>());
        }
    });
    for_each_component(normalizer, "normalizers", [&](const json& c) {
        const std::string t = type_of(c);
        if (t == "Prepend" && c.contains("prepend") && c["prepend"] == kSpace) {
            metaspace = true;
            prepend_space = true;
        } else if (t == "Replace" && c.contains("content") && c["content"] == kSpace) {
            metaspace = true;
        }
    });
    for_each_component(decoder, "decoders", [&](const json& c) {
        const std::string t = type_of(c);
        if (t == "ByteLevel") byte_level = true;
        if (t == "ByteFallback" || t == "Metaspace") metaspace = true;
    });

    Vocab v;
    const size_t n = p.tokens.size();
    for (size_t i = 0; i < n; ++i)
        if (!p.present[i]) p.tokens[i] = "";  // a gap in the ids: an unused slot
    if (byte_fallback || (metaspace && !byte_level)) {
        v.kind = TokenizerKind::Spm;
        v.add_space_prefix = prepend_space;
        // SPM merges by score: the earlier the merge producing a token, the
        // higher its score. Tokens no merge produces rank last.
        const float never = -static_cast<float>(p.merges.size()) - 1.0f;
        v.scores.assign(n, never);
        for (size_t r = 0; r < p.merges.size(); ++r) {
            auto it = p.ids.find(p.merges[r].first + p.merges[r].second);
            if (it == p.ids.end()) continue;
            float& s = v.scores[static_cast<size_t>(it->second)];
            s = std::max(s, -static_cast<float>(r));
        }
        for (size_t i = 0; i < n; ++i) {
            const std::string& t = p.tokens[i];
            if (p.types[i] == TokenType::Normal && t.size() == 6 && t.starts_with("<0x") && t[5] == '>')
                p.types[i] = TokenType::Byte;
        }
    } else if (byte_level) {
        v.kind = TokenizerKind::Bpe;
        v.add_space_prefix = false;
        bool digits = false, llama3 = false;
        for (const std::string& s : split_patterns) {
            if (s == "\\p{N}") digits = true;
            if (s.find("(?i:'s|'t|'re|'ve|'m|'ll|'d)") != std::string::npos &&
                s.find("\\p{N}{1,3}") != std::string::npos)
                llama3 = true;
        }
        v.pre = llama3 ? "llama3" : digits ? "smollm" : "gpt2";
        v.merges.reserve(p.merges.size());
        for (auto& m : p.merges) v.merges.push_back(m.first + " " + m.second);
    } else {
        unsupported("tokenizer.json: neither byte-level BPE nor byte-fallback (SentencePiece-like) BPE");
    }

    auto id_of = [&](const std::string& text, const char* file, const char* what) -> int32_t {
        if (text.empty()) return -1;
        auto it = p.ids.find(text);
        if (it == p.ids.end()) bad(file, std::string(what) + " '" + text + "' is not in the vocab");
        return it->second;
    };
    if (!unk_text.empty()) {
        v.unk = id_of(unk_text, "tokenizer.json", "model.unk_token");
        if (p.types[v.unk] == TokenType::Normal) p.types[v.unk] = TokenType::Unknown;
    }

    // BOS / add_bos from the post-processor template when it starts with a special token.
    v.add_bos = v.kind == TokenizerKind::Spm;
    if (j.contains("post_processor") && j["post_processor"].is_object()) {
        for_each_component(j["post_processor"], "processors", [&](const json& c) {
            if (type_of(c) != "TemplateProcessing" || !c.contains("single") || !c["single"].is_array() ||
                c["single"].empty())
                return;
            const json& first = c["single"][0];
            if (first.is_object() && first.contains("SpecialToken") && first["SpecialToken"].is_object() &&
                first["SpecialToken"].contains("id") && first["SpecialToken"]["id"].is_string()) {
                auto it = p.ids.find(first["SpecialToken"]["id"].get<std::string>());
                if (it != p.ids.end()) {
                    v.bos = it->second;
                    v.add_bos = true;
                }
            }
        });
    }
    // Well-known names when nothing says otherwise.
    auto guess = [&](std::initializer_list<const char*> names) -> int32_t {
        for (const char* s : names) {
            auto it = p.ids.find(s);
            if (it != p.ids.end()) return it->second;
        }
        return -1;
    };
    if (v.bos < 0) v.bos = guess({"<s>", "<|begin_of_text|>", "<|startoftext|>"});
    v.eos = guess({"</s>", "<|end_of_text|>", "<|endoftext|>"});

    if (config) {
        const json& c = *config;
        if (!c.is_object()) bad("tokenizer_config.json", "not an object");
        if (c.contains("add_bos_token") && !c["add_bos_token"].is_null()) {
            if (!c["add_bos_token"].is_boolean()) bad("tokenizer_config.json", "add_bos_token is not a boolean");
            v.add_bos = c["add_bos_token"].get<bool>();
        }
        if (c.contains("bos_token")) {
            const std::string t = config_token_text(c["bos_token"], "bos_token");
            if (!t.empty()) v.bos = id_of(t, "tokenizer_config.json", "bos_token");
        }
        if (c.contains("eos_token")) {
            const std::string t = config_token_text(c["eos_token"], "eos_token");
            if (!t.empty()) v.eos = id_of(t, "tokenizer_config.json", "eos_token");
        }
        if (c.contains("pad_token")) {
            const std::string t = config_token_text(c["pad_token"], "pad_token");
            if (!t.empty()) v.pad = id_of(t, "tokenizer_config.json", "pad_token");
        }
        if (c.contains("unk_token") && v.unk < 0) {
            const std::string t = config_token_text(c["unk_token"], "unk_token");
            if (!t.empty()) v.unk = id_of(t, "tokenizer_config.json", "unk_token");
        }
    }
    if (v.bos < 0) v.add_bos = false;

    v.tokens = std::move(p.tokens);
    v.types = std::move(p.types);
    v.validate();
    return v;
}

}  // namespace

Vocab load_tokenizer_json(const std::string& dir) {
    const std::string path = dir + "/tokenizer.json";
    const json j = read_json(path, "tokenizer.json");
    json config;
    bool have_config = false;
    const std::string config_path = dir + "/tokenizer_config.json";
    if (std::ifstream(config_path).good()) {
        config = read_json(config_path, "tokenizer_config.json");
        have_config = true;
    }
    try {
        return parse(j, have_config ? &config : nullptr);
    } catch (const json::exception& e) {
        // Any access our checks missed: still a corrupt file, never a crash.
        corrupt(std::string("tokenizer.json: ") + e.what());
    }
}

}  // namespace starkv
