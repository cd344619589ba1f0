// Loader for a Hugging Face Llama checkpoint directory:
// config.json + model.safetensors (or sharded) + tokenizer.json.
#include <climits>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"
#include "model/dequant.h"
#include "model/model_source.h"
#include "model/safetensors.h"

namespace starkv {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr size_t kMaxConfigBytes = 16u << 20;  // config.json is a few KB

json read_json_file(const std::string& path) {
    MappedFile f(path);
    if (f.size() > kMaxConfigBytes) corrupt(path + ": too large for a config file");
    const auto* p = reinterpret_cast<const char*>(f.data());
    json j = json::parse(p, p + f.size(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) corrupt(path + ": not valid JSON");
    if (!j.is_object()) corrupt(path + ": not a JSON object");
    return j;
}

// config.json fields; null counts as absent (HF writes "head_dim": null).
const json* field(const json& cfg, const char* key) {
    auto it = cfg.find(key);
    return it == cfg.end() || it->is_null() ? nullptr : &*it;
}

int get_int(const json& cfg, const char* key) {
    const json* v = field(cfg, key);
    if (!v) corrupt(std::string("config.json: missing '") + key + "'");
    if (!v->is_number_integer())
        corrupt(std::string("config.json: '") + key + "' is not an integer");
    // Ranges beyond int are absurd; validate() enforces the real bounds.
    const int64_t x = v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX)
                          ? INT64_MAX
                          : v->get<int64_t>();
    if (x < INT_MIN || x > INT_MAX)
        corrupt(std::string("config.json: '") + key + "' = " + v->dump() + " is out of range");
    return static_cast<int>(x);
}

int get_int_or(const json& cfg, const char* key, int dflt) {
    return field(cfg, key) ? get_int(cfg, key) : dflt;
}

float get_float_or(const json& cfg, const char* key, float dflt) {
    const json* v = field(cfg, key);
    if (!v) return dflt;
    if (!v->is_number()) corrupt(std::string("config.json: '") + key + "' is not a number");
    const double d = v->get<double>();
    if (!std::isfinite(d) || std::fabs(d) > 3.0e38)
        corrupt(std::string("config.json: '") + key + "' is out of range");
    return static_cast<float>(d);
}

bool get_bool_or(const json& cfg, const char* key, bool dflt) {
    const json* v = field(cfg, key);
    if (!v) return dflt;
    if (!v->is_boolean()) corrupt(std::string("config.json: '") + key + "' is not a boolean");
    return v->get<bool>();
}

void check_architecture(const json& cfg) {
    bool ok = false;
    std::string seen;
    if (const json* a = field(cfg, "architectures"); a && a->is_array()) {
        for (const json& x : *a) {
            if (!x.is_string()) continue;
            const auto s = x.get<std::string>();
            seen += (seen.empty() ? "" : ", ") + s;
            ok |= s == "LlamaForCausalLM" || s == "MistralForCausalLM";
        }
    }
    if (const json* m = field(cfg, "model_type"); m && m->is_string()) {
        const auto s = m->get<std::string>();
        if (seen.empty()) seen = s;
        ok |= s == "llama" || s == "mistral";
    }
    if (!ok)
        unsupported("config.json: architecture '" + (seen.empty() ? "unknown" : seen) +
                    "' is not supported (Llama and Mistral are)");
}

void parse_rope_scaling(const json& cfg, RopeConfig& rope) {
    const json* rs = field(cfg, "rope_scaling");
    if (!rs) return;
    if (!rs->is_object()) corrupt("config.json: 'rope_scaling' is not an object");
    std::string type;
    if (const json* t = field(*rs, "rope_type"); t && t->is_string()) type = t->get<std::string>();
    else if (const json* t2 = field(*rs, "type"); t2 && t2->is_string()) type = t2->get<std::string>();
    if (type.empty() || type == "default") return;
    if (type == "linear") {
        rope.scaling = RopeScaling::Linear;
        rope.factor = get_float_or(*rs, "factor", 1.0f);
    } else if (type == "llama3") {
        rope.scaling = RopeScaling::Llama3;
        rope.factor = get_float_or(*rs, "factor", 8.0f);
        rope.low_freq_factor = get_float_or(*rs, "low_freq_factor", 1.0f);
        rope.high_freq_factor = get_float_or(*rs, "high_freq_factor", 4.0f);
        rope.original_max_pos = get_int_or(*rs, "original_max_position_embeddings", 8192);
    } else {
        unsupported("config.json: rope_scaling type '" + type + "' is not supported");
    }
}

ModelConfig parse_config(const json& cfg, const std::string& dir) {
    check_architecture(cfg);
    // Features Llama-style weights here cannot express.
    if (get_bool_or(cfg, "attention_bias", false) || get_bool_or(cfg, "mlp_bias", false))
        unsupported("config.json: attention/mlp biases are not supported");
    // (not *act != "silu": nlohmann's json-vs-literal comparison is noexcept and allocates)
    if (const json* act = field(cfg, "hidden_act"); act && act->is_string() && act->get_ref<const std::string&>() != "silu")
        unsupported("config.json: hidden_act '" + act->get<std::string>() + "' is not supported");

    ModelConfig c;
    c.architecture = "llama";
    if (const json* n = field(cfg, "_name_or_path"); n && n->is_string() && !n->get<std::string>().empty())
        c.name = n->get<std::string>();
    else
        c.name = fs::path(dir).filename().string();
    c.n_vocab = get_int(cfg, "vocab_size");
    c.n_embd = get_int(cfg, "hidden_size");
    c.n_ff = get_int(cfg, "intermediate_size");
    c.n_layer = get_int(cfg, "num_hidden_layers");
    c.n_head = get_int(cfg, "num_attention_heads");
    c.n_head_kv = get_int_or(cfg, "num_key_value_heads", c.n_head);
    if (field(cfg, "head_dim")) {
        c.head_dim = get_int(cfg, "head_dim");
    } else {
        if (c.n_head <= 0 || c.n_embd % c.n_head != 0)
            corrupt("config.json: hidden_size is not a multiple of num_attention_heads "
                    "and there is no head_dim");
        c.head_dim = c.n_embd / c.n_head;
    }
    c.n_ctx_train = get_int(cfg, "max_position_embeddings");
    // Mistral's sliding window: full attention equals windowed attention as
    // long as the context stays within the window, so advertise only that.
    if (field(cfg, "sliding_window")) {
        const int w = get_int(cfg, "sliding_window");
        if (w > 0 && w < c.n_ctx_train) c.n_ctx_train = w;
    }
    c.rms_eps = get_float_or(cfg, "rms_norm_eps", 1e-6f);
    c.rope.theta = get_float_or(cfg, "rope_theta", 10000.0f);
    c.rope.n_dims = c.head_dim;
    c.rope.layout = RopeLayout::HalfSplit;  // HF uses rotate_half; weights stay as stored
    parse_rope_scaling(cfg, c.rope);
    c.tied_embeddings = get_bool_or(cfg, "tie_word_embeddings", false);
    c.validate();
    return c;
}

// Hugging Face tensor names <-> canonical (GGUF-style) names.
struct NamePair {
    const char* hf;
    const char* canonical;
};
constexpr NamePair kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};
constexpr NamePair kGlobalNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

// "<prefix><digits>.<rest>" -> (digits, rest); false when name does not match.
bool split_layer(const std::string& name, const std::string& prefix, std::string& idx, std::string& rest) {
    if (name.compare(0, prefix.size(), prefix) != 0) return false;
    const size_t dot = name.find('.', prefix.size());
    if (dot == std::string::npos || dot == prefix.size() || dot - prefix.size() > 6) return false;
    idx = name.substr(prefix.size(), dot - prefix.size());
    for (char ch : idx)
        if (ch < '0' || ch > '9') return false;
    rest = name.substr(dot + 1);
    return true;
}

std::string map_name(const std::string& name, bool to_canonical) {
    for (const NamePair& p : kGlobalNames)
        if (name == (to_canonical ? p.hf : p.canonical)) return to_canonical ? p.canonical : p.hf;
    std::string idx, rest;
    if (split_layer(name, to_canonical ? "model.layers." : "blk.", idx, rest))
        for (const NamePair& p : kLayerNames)
            if (rest == (to_canonical ? p.hf : p.canonical))
                return (to_canonical ? "blk." : "model.layers.") + idx + "." + (to_canonical ? p.canonical : p.hf);
    return name;  // not a weight we know: kept as is
}

std::string hf_name(const std::string& canonical) { return map_name(canonical, false); }

uint32_t ggml_dtype(const std::string& st_dtype) {
    if (st_dtype == "F32") return static_cast<uint32_t>(GgmlType::F32);
    if (st_dtype == "F16") return static_cast<uint32_t>(GgmlType::F16);
    if (st_dtype == "BF16") return static_cast<uint32_t>(GgmlType::BF16);
    return kUnknownDtype;
}

ModelSource open_hf_source_impl(const std::string& dir) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) fail(STARKV_ERR_IO, "'" + dir + "' is not a directory");
    const std::string config_path = (fs::path(dir) / "config.json").string();
    if (!fs::exists(config_path, ec)) fail(STARKV_ERR_IO, dir + ": no config.json");

    ModelSource m;
    m.format = "hf";
    m.label = dir;
    m.source_name = hf_name;
    m.config = parse_config(read_json_file(config_path), dir);

    auto st = std::make_shared<SafetensorsSet>(SafetensorsSet::open_dir(dir));
    m.infos = st->tensor_infos();
    for (const auto& [t, bytes] : st->entries()) {
        SourceTensor s;
        s.name = map_name(t->name, true);
        s.dtype = ggml_dtype(t->dtype);
        s.dtype_name = t->dtype;
        s.shape = t->shape;
        if (s.dtype != kUnknownDtype) {
            s.data = bytes;
            s.n_bytes = static_cast<size_t>(t->n_bytes);
        }
        if (m.find(s.name)) corrupt(dir + ": two tensors are named '" + s.name + "'");
        m.tensors.push_back(std::move(s));
    }
    m.owners.push_back(std::move(st));
    m.vocab = load_tokenizer_json(dir);
    return m;
}

}  // namespace

ModelSource open_hf_source(const std::string& dir) {
    try {
        return open_hf_source_impl(dir);
    } catch (const nlohmann::json::exception& e) {
        // Type errors from an unexpected config layout: a corrupt file, one line.
        std::string msg = e.what();
        for (char& ch : msg)
            if (ch == '\n') ch = ' ';
        corrupt(dir + ": malformed JSON (" + msg + ")");
    }
}

}  // namespace starkv
