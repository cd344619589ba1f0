#include "bundle/metadata.h"

#include <climits>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace starkv::bundle {

using json = nlohmann::json;

namespace {

// j == "text" without nlohmann's operator==(json, scalar): that one is noexcept
// and builds a json from the literal, so an allocation failure there is
// std::terminate (found by tests/robust/test_fault_injection.cpp).
bool str_is(const json& j, const char* text) {
    return j.is_string() && j.get_ref<const std::string&>() == text;
}

bool valid_utf8(const std::string& s) {
    size_t i = 0;
    const size_t n = s.size();
    while (i < n) {
        const auto c = static_cast<unsigned char>(s[i]);
        size_t len;
        uint32_t cp;
        if (c < 0x80) { ++i; continue; }
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return false;
        if (n - i < len) return false;
        for (size_t k = 1; k < len; ++k) {
            const auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

std::string to_hex(const std::string& s) {
    static const char* d = "0123456789abcdef";
    std::string h;
    h.reserve(s.size() * 2);
    for (unsigned char c : s) {
        h += d[c >> 4];
        h += d[c & 15];
    }
    return h;
}

std::string from_hex(const std::string& h, const std::string& what) {
    if (h.size() % 2) corrupt("bundle metadata: " + what + " is not hex");
    auto nib = [&](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        corrupt("bundle metadata: " + what + " is not hex");
    };
    std::string s(h.size() / 2, '\0');
    for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>(nib(h[2 * i]) * 16 + nib(h[2 * i + 1]));
    return s;
}

// Arbitrary bytes as a JSON value: a string when valid UTF-8, else {"hex": ...}.
json bytes_to_json(const std::string& s) {
    if (valid_utf8(s)) return s;
    return json{{"hex", to_hex(s)}};
}

std::string bytes_from_json(const json& j, const std::string& what) {
    if (j.is_string()) return j.get<std::string>();
    if (j.is_object()) {
        auto h = j.find("hex");
        if (h != j.end() && h->is_string()) return from_hex(h->get<std::string>(), what);
    }
    corrupt("bundle metadata: " + what + " is not a string");
}

const json& need(const json& j, const char* key, const std::string& where) {
    auto it = j.find(key);
    if (it == j.end()) corrupt("bundle metadata: " + where + " has no '" + key + "'");
    return *it;
}

int64_t get_int(const json& j, const char* key, const std::string& where, int64_t lo, int64_t hi) {
    const json& v = need(j, key, where);
    if (!v.is_number_integer()) corrupt("bundle metadata: " + where + "." + key + " is not an integer");
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
        corrupt("bundle metadata: " + where + "." + key + " is out of range");
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi) corrupt("bundle metadata: " + where + "." + key + " = " + std::to_string(x) + " is out of range");
    return x;
}

float to_float(const json& v, const std::string& what) {
    if (!v.is_number()) corrupt("bundle metadata: " + what + " is not a number");
    const double d = v.get<double>();
    if (!std::isfinite(d) || std::fabs(d) > 3.4e38) corrupt("bundle metadata: " + what + " is out of range");
    return static_cast<float>(d);
}

float get_float(const json& j, const char* key, const std::string& where) {
    return to_float(need(j, key, where), where + "." + key);
}

bool get_bool(const json& j, const char* key, const std::string& where) {
    const json& v = need(j, key, where);
    if (!v.is_boolean()) corrupt("bundle metadata: " + where + "." + key + " is not a boolean");
    return v.get<bool>();
}

double finite(float f, const char* what) {
    if (!std::isfinite(f)) fail(STARKV_ERR_UNSUPPORTED, std::string("cannot store non-finite ") + what);
    return static_cast<double>(f);
}

const char* layout_name(RopeLayout l) { return l == RopeLayout::Adjacent ? "adjacent" : "half_split"; }
const char* scaling_name(RopeScaling s) {
    switch (s) {
        case RopeScaling::None: return "none";
        case RopeScaling::Linear: return "linear";
        case RopeScaling::Llama3: return "llama3";
    }
    return "none";
}

}  // namespace

json config_to_json(const ModelConfig& c) {
    json ff = json::array();
    for (float f : c.rope.freq_factors) ff.push_back(finite(f, "rope frequency factors"));
    return json{
        {"architecture", bytes_to_json(c.architecture)},
        {"name", bytes_to_json(c.name)},
        {"n_vocab", c.n_vocab},
        {"n_embd", c.n_embd},
        {"n_ff", c.n_ff},
        {"n_layer", c.n_layer},
        {"n_head", c.n_head},
        {"n_head_kv", c.n_head_kv},
        {"head_dim", c.head_dim},
        {"n_ctx_train", c.n_ctx_train},
        {"rms_eps", finite(c.rms_eps, "rms_eps")},
        {"tied_embeddings", c.tied_embeddings},
        {"rope",
         {{"theta", finite(c.rope.theta, "rope theta")},
          {"n_dims", c.rope.n_dims},
          {"layout", layout_name(c.rope.layout)},
          {"scaling", scaling_name(c.rope.scaling)},
          {"factor", finite(c.rope.factor, "rope factor")},
          {"low_freq_factor", finite(c.rope.low_freq_factor, "rope low_freq_factor")},
          {"high_freq_factor", finite(c.rope.high_freq_factor, "rope high_freq_factor")},
          {"original_max_pos", c.rope.original_max_pos},
          {"freq_factors", ff}}},
    };
}

ModelConfig config_from_json(const json& j) {
    const std::string w = "model";
    if (!j.is_object()) corrupt("bundle metadata: 'model' is not an object");
    ModelConfig c;
    c.architecture = bytes_from_json(need(j, "architecture", w), "model.architecture");
    c.name = bytes_from_json(need(j, "name", w), "model.name");
    constexpr int64_t kMax = int64_t{1} << 30;
    c.n_vocab = static_cast<int>(get_int(j, "n_vocab", w, 0, kMax));
    c.n_embd = static_cast<int>(get_int(j, "n_embd", w, 0, kMax));
    c.n_ff = static_cast<int>(get_int(j, "n_ff", w, 0, kMax));
    c.n_layer = static_cast<int>(get_int(j, "n_layer", w, 0, kMax));
    c.n_head = static_cast<int>(get_int(j, "n_head", w, 0, kMax));
    c.n_head_kv = static_cast<int>(get_int(j, "n_head_kv", w, 0, kMax));
    c.head_dim = static_cast<int>(get_int(j, "head_dim", w, 0, kMax));
    c.n_ctx_train = static_cast<int>(get_int(j, "n_ctx_train", w, 0, kMax));
    c.rms_eps = get_float(j, "rms_eps", w);
    c.tied_embeddings = get_bool(j, "tied_embeddings", w);
    const json& r = need(j, "rope", w);
    if (!r.is_object()) corrupt("bundle metadata: model.rope is not an object");
    const std::string rw = "model.rope";
    c.rope.theta = get_float(r, "theta", rw);
    c.rope.n_dims = static_cast<int>(get_int(r, "n_dims", rw, 0, kMax));
    const json& layout = need(r, "layout", rw);
    if (str_is(layout, "adjacent")) c.rope.layout = RopeLayout::Adjacent;
    else if (str_is(layout, "half_split")) c.rope.layout = RopeLayout::HalfSplit;
    else corrupt("bundle metadata: unknown model.rope.layout " + layout.dump());
    const json& scaling = need(r, "scaling", rw);
    if (str_is(scaling, "none")) c.rope.scaling = RopeScaling::None;
    else if (str_is(scaling, "linear")) c.rope.scaling = RopeScaling::Linear;
    else if (str_is(scaling, "llama3")) c.rope.scaling = RopeScaling::Llama3;
    else unsupported("bundle: rope scaling " + scaling.dump() + " is not supported");
    c.rope.factor = get_float(r, "factor", rw);
    c.rope.low_freq_factor = get_float(r, "low_freq_factor", rw);
    c.rope.high_freq_factor = get_float(r, "high_freq_factor", rw);
    c.rope.original_max_pos = static_cast<int>(get_int(r, "original_max_pos", rw, 0, kMax));
    const json& ff = need(r, "freq_factors", rw);
    if (!ff.is_array() || ff.size() > static_cast<size_t>(kMax)) corrupt("bundle metadata: model.rope.freq_factors is not an array");
    for (const json& f : ff) c.rope.freq_factors.push_back(to_float(f, "model.rope.freq_factors"));
    return c;
}

json vocab_to_json(const Vocab& v) {
    json tokens = json::array(), merges = json::array(), types = json::array();
    for (const std::string& t : v.tokens) tokens.push_back(bytes_to_json(t));
    for (const std::string& m : v.merges) merges.push_back(bytes_to_json(m));
    for (TokenType t : v.types) types.push_back(static_cast<int32_t>(t));
    // Scores as the little-endian bytes of their float32 values: exact, and
    // safe for -inf/NaN which JSON numbers cannot hold.
    std::string score_bytes(v.scores.size() * 4, '\0');
    if (!v.scores.empty()) std::memcpy(score_bytes.data(), v.scores.data(), score_bytes.size());
    return json{{"kind", v.kind == TokenizerKind::Spm ? "spm" : "bpe"},
                {"tokens", tokens},
                {"scores_f32le", to_hex(score_bytes)},
                {"types", types},
                {"merges", merges},
                {"pre", bytes_to_json(v.pre)},
                {"bos", v.bos},
                {"eos", v.eos},
                {"unk", v.unk},
                {"pad", v.pad},
                {"add_bos", v.add_bos},
                {"add_space_prefix", v.add_space_prefix}};
}

Vocab vocab_from_json(const json& j) {
    const std::string w = "tokenizer";
    if (!j.is_object()) corrupt("bundle metadata: 'tokenizer' is not an object");
    Vocab v;
    const json& kind = need(j, "kind", w);
    if (str_is(kind, "spm")) v.kind = TokenizerKind::Spm;
    else if (str_is(kind, "bpe")) v.kind = TokenizerKind::Bpe;
    else unsupported("bundle: tokenizer kind " + kind.dump() + " is not supported");
    const json& tokens = need(j, "tokens", w);
    if (!tokens.is_array()) corrupt("bundle metadata: tokenizer.tokens is not an array");
    v.tokens.reserve(tokens.size());
    for (const json& t : tokens) v.tokens.push_back(bytes_from_json(t, "a token"));
    const json& scores = need(j, "scores_f32le", w);
    if (!scores.is_string()) corrupt("bundle metadata: tokenizer.scores_f32le is not a string");
    const std::string sb = from_hex(scores.get<std::string>(), "tokenizer.scores_f32le");
    if (sb.size() % 4) corrupt("bundle metadata: tokenizer.scores_f32le is not whole floats");
    v.scores.resize(sb.size() / 4);
    if (!sb.empty()) std::memcpy(v.scores.data(), sb.data(), sb.size());
    const json& types = need(j, "types", w);
    if (!types.is_array()) corrupt("bundle metadata: tokenizer.types is not an array");
    v.types.reserve(types.size());
    for (const json& t : types) {
        if (!t.is_number_integer()) corrupt("bundle metadata: tokenizer.types holds a non-integer");
        const int64_t x = t.get<int64_t>();
        if (x < INT32_MIN || x > INT32_MAX) corrupt("bundle metadata: tokenizer.types holds " + std::to_string(x));
        v.types.push_back(static_cast<TokenType>(static_cast<int32_t>(x)));
    }
    const json& merges = need(j, "merges", w);
    if (!merges.is_array()) corrupt("bundle metadata: tokenizer.merges is not an array");
    v.merges.reserve(merges.size());
    for (const json& m : merges) v.merges.push_back(bytes_from_json(m, "a merge"));
    v.pre = bytes_from_json(need(j, "pre", w), "tokenizer.pre");
    v.bos = static_cast<int32_t>(get_int(j, "bos", w, -1, INT32_MAX));
    v.eos = static_cast<int32_t>(get_int(j, "eos", w, -1, INT32_MAX));
    v.unk = static_cast<int32_t>(get_int(j, "unk", w, -1, INT32_MAX));
    v.pad = static_cast<int32_t>(get_int(j, "pad", w, -1, INT32_MAX));
    v.add_bos = get_bool(j, "add_bos", w);
    v.add_space_prefix = get_bool(j, "add_space_prefix", w);
    v.validate();
    return v;
}

}  // namespace starkv::bundle
