// Loader for a Hugging Face Llama checkpoint directory:
// config.json + model.safetensors (or sharded) + tokenizer.json.
#include <climits>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"
#include "model/loader.h"
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
    if (const json* act = field(cfg, "hidden_act"); act && act->is_string() && *act != "silu")
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

// Reads tensors by name, checking shapes and reporting progress.
class TensorLoader {
public:
    TensorLoader(const SafetensorsSet& st, const ProgressFn& progress, size_t total)
        : st_(st), progress_(progress), total_(total) {}

    const SafetensorsTensor& get(const std::string& name, std::vector<int64_t> want) {
        const SafetensorsTensor* t = st_.find(name);
        if (!t) corrupt("missing tensor '" + name + "'");
        if (t->shape != want)
            corrupt("tensor '" + name + "' has shape " + shape_str(t->shape) + ", expected " +
                    shape_str(want));
        return *t;
    }
    Matrix matrix(const std::string& name, int rows, int cols) {
        const auto& t = get(name, {rows, cols});
        Matrix m(rows, cols);
        st_.read_f32(t, m.data.data());
        tick();
        return m;
    }
    std::vector<float> vector(const std::string& name, int n) {
        const auto& t = get(name, {n});
        std::vector<float> v(static_cast<size_t>(n));
        st_.read_f32(t, v.data());
        tick();
        return v;
    }

private:
    static std::string shape_str(const std::vector<int64_t>& s) {
        std::string r = "[";
        for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
        return r + "]";
    }
    void tick() {
        ++done_;
        if (progress_ && !progress_(static_cast<float>(done_) / static_cast<float>(total_)))
            fail(STARKV_ERR_CANCELLED, "model load cancelled");
    }

    const SafetensorsSet& st_;
    const ProgressFn& progress_;
    size_t total_;
    size_t done_ = 0;
};

LoadedModel load_hf_dir_impl(const std::string& dir, const ProgressFn& progress) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) fail(STARKV_ERR_IO, "'" + dir + "' is not a directory");
    const std::string config_path = (fs::path(dir) / "config.json").string();
    if (!fs::exists(config_path, ec)) fail(STARKV_ERR_IO, dir + ": no config.json");

    LoadedModel m;
    m.format = "hf";
    m.config = parse_config(read_json_file(config_path), dir);
    const ModelConfig& c = m.config;

    SafetensorsSet st = SafetensorsSet::open_dir(dir);
    m.tensors = st.tensor_infos();

    // As transformers does: tied models use the embedding (a stray lm_head is
    // ignored); untied ones must carry lm_head.weight.
    const bool has_head = !c.tied_embeddings;

    const size_t total = 2 + (has_head ? 1 : 0) + 9 * static_cast<size_t>(c.n_layer);
    TensorLoader tl(st, progress, total);
    const int q_dim = c.n_head * c.head_dim;
    const int kv_dim = c.n_head_kv * c.head_dim;

    ModelWeights& w = m.weights;
    w.tok_embd = tl.matrix("model.embed_tokens.weight", c.n_vocab, c.n_embd);
    w.layers.resize(static_cast<size_t>(c.n_layer));
    for (int i = 0; i < c.n_layer; ++i) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        LayerWeights& l = w.layers[static_cast<size_t>(i)];
        l.attn_norm = tl.vector(p + "input_layernorm.weight", c.n_embd);
        l.wq = tl.matrix(p + "self_attn.q_proj.weight", q_dim, c.n_embd);
        l.wk = tl.matrix(p + "self_attn.k_proj.weight", kv_dim, c.n_embd);
        l.wv = tl.matrix(p + "self_attn.v_proj.weight", kv_dim, c.n_embd);
        l.wo = tl.matrix(p + "self_attn.o_proj.weight", c.n_embd, q_dim);
        l.ffn_norm = tl.vector(p + "post_attention_layernorm.weight", c.n_embd);
        l.w_gate = tl.matrix(p + "mlp.gate_proj.weight", c.n_ff, c.n_embd);
        l.w_up = tl.matrix(p + "mlp.up_proj.weight", c.n_ff, c.n_embd);
        l.w_down = tl.matrix(p + "mlp.down_proj.weight", c.n_embd, c.n_ff);
    }
    w.output_norm = tl.vector("model.norm.weight", c.n_embd);
    if (has_head) w.output = tl.matrix("lm_head.weight", c.n_vocab, c.n_embd);

    m.vocab = load_tokenizer_json(dir);
    // Token ids index the embedding rows: more tokens than rows would read
    // past tok_embd.
    if (m.vocab.tokens.size() > static_cast<size_t>(c.n_vocab))
        corrupt(dir + ": tokenizer has " + std::to_string(m.vocab.tokens.size()) +
                " tokens but the model only " + std::to_string(c.n_vocab));
    return m;
}

}  // namespace

LoadedModel load_hf_dir(const std::string& dir, const ProgressFn& progress) {
    try {
        return load_hf_dir_impl(dir, progress);
    } catch (const nlohmann::json::exception& e) {
        // Type errors from an unexpected config layout: a corrupt file, one line.
        std::string msg = e.what();
        for (char& ch : msg)
            if (ch == '\n') ch = ' ';
        corrupt(dir + ": malformed JSON (" + msg + ")");
    }
}

}  // namespace starkv
