// Hugging Face checkpoint directories built here: config.json, safetensors
// (single or sharded, tied or untied) and a minimal byte-level tokenizer.json.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/dequant.h"
#include "model/loader.h"
#include "hf_checkpoint.h"
#include "test_paths.h"

using namespace starkv;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct Spec {
    int n_vocab = 260, n_embd = 16, n_ff = 40, n_layer = 2, n_head = 4, n_head_kv = 2;
    int head_dim = 4;  // n_embd / n_head
    bool tied = false;
    bool sharded = false;
};

struct Blob {
    std::string dtype;
    std::vector<int64_t> shape;
    std::string bytes;
    std::vector<float> values;  // what the loader must produce
};

std::string u64le(uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
}

std::string st_serialize(const std::map<std::string, Blob>& ts) {
    json h = json::object();
    std::string data;
    for (const auto& [name, t] : ts) {
        h[name] = {{"dtype", t.dtype}, {"shape", t.shape},
                   {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
        data += t.bytes;
    }
    const std::string header = h.dump();
    return u64le(header.size()) + header + data;
}

// GPT-2's byte-to-unicode map, so the byte tokens look like a real byte-level BPE.
std::string byte_token(int b) { return starkv_test::hf_byte_token(b); }

// 256 byte tokens + <s> + </s>: the smallest byte-level BPE tokenizer.json.
json minimal_tokenizer_json() {
    json vocab = json::object();
    for (int b = 0; b < 256; ++b) vocab[byte_token(b)] = b;
    vocab["<s>"] = 256;
    vocab["</s>"] = 257;
    return {{"version", "1.0"},
            {"added_tokens",
             {{{"id", 256}, {"content", "<s>"}, {"special", true}},
              {{"id", 257}, {"content", "</s>"}, {"special", true}}}},
            {"normalizer", nullptr},
            {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
            {"post_processor", nullptr},
            {"decoder", {{"type", "ByteLevel"}}},
            {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}};
}

json make_config(const Spec& s) {
    return {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"hidden_size", s.n_embd},
            {"intermediate_size", s.n_ff},
            {"num_hidden_layers", s.n_layer},
            {"num_attention_heads", s.n_head},
            {"num_key_value_heads", s.n_head_kv},
            {"max_position_embeddings", 256},
            {"rms_norm_eps", 1e-5},
            {"rope_theta", 500000.0},
            {"rope_scaling", nullptr},
            {"hidden_act", "silu"},
            {"tie_word_embeddings", s.tied},
            {"torch_dtype", "float32"},
            {"vocab_size", s.n_vocab}};
}

class Checkpoint {
public:
    Checkpoint(const std::string& name, const Spec& s) : spec(s) {
        dir = starkv_test::temp_dir() + "/hf_" + name;
        fs::remove_all(dir);
        fs::create_directories(dir);
        std::mt19937 rng(1234);
        const int q = s.n_head * s.head_dim, kv = s.n_head_kv * s.head_dim;
        // Cycle dtypes so that all three decoders are exercised.
        add("model.embed_tokens.weight", {s.n_vocab, s.n_embd}, rng);
        for (int i = 0; i < s.n_layer; ++i) {
            const std::string p = "model.layers." + std::to_string(i) + ".";
            add(p + "input_layernorm.weight", {s.n_embd}, rng);
            add(p + "post_attention_layernorm.weight", {s.n_embd}, rng);
            add(p + "self_attn.q_proj.weight", {q, s.n_embd}, rng);
            add(p + "self_attn.k_proj.weight", {kv, s.n_embd}, rng);
            add(p + "self_attn.v_proj.weight", {kv, s.n_embd}, rng);
            add(p + "self_attn.o_proj.weight", {s.n_embd, q}, rng);
            add(p + "mlp.gate_proj.weight", {s.n_ff, s.n_embd}, rng);
            add(p + "mlp.up_proj.weight", {s.n_ff, s.n_embd}, rng);
            add(p + "mlp.down_proj.weight", {s.n_embd, s.n_ff}, rng);
        }
        add("model.norm.weight", {s.n_embd}, rng);
        if (!s.tied) add("lm_head.weight", {s.n_vocab, s.n_embd}, rng);
        config = make_config(s);
        tokenizer = minimal_tokenizer_json();
    }

    // Writes everything; call again after editing config/tensors.
    void write() const {
        std::ofstream(dir + "/config.json", std::ios::trunc) << config.dump(2);
        std::ofstream(dir + "/tokenizer.json", std::ios::trunc) << tokenizer.dump();
        fs::remove(dir + "/model.safetensors");
        fs::remove(dir + "/model.safetensors.index.json");
        if (!spec.sharded) {
            std::ofstream(dir + "/model.safetensors", std::ios::binary | std::ios::trunc)
                << st_serialize(tensors);
            return;
        }
        // Split tensors over three shards by name order.
        std::map<std::string, Blob> shards[3];
        json wm = json::object();
        int i = 0;
        for (const auto& [name, t] : tensors) {
            const int k = i++ % 3;
            shards[k][name] = t;
            wm[name] = shard_name(k);
        }
        for (int k = 0; k < 3; ++k)
            std::ofstream(dir + "/" + shard_name(k), std::ios::binary | std::ios::trunc)
                << st_serialize(shards[k]);
        std::ofstream(dir + "/model.safetensors.index.json", std::ios::trunc)
            << json({{"metadata", {{"total_size", 0}}}, {"weight_map", wm}}).dump();
    }

    const std::vector<float>& values(const std::string& name) const { return tensors.at(name).values; }

    Spec spec;
    std::string dir;
    json config;
    json tokenizer;
    std::map<std::string, Blob> tensors;

private:
    static std::string shard_name(int k) {
        return "model-0000" + std::to_string(k + 1) + "-of-00003.safetensors";
    }

    void add(const std::string& name, std::vector<int64_t> shape, std::mt19937& rng) {
        std::normal_distribution<float> nd(0.0f, 0.5f);
        size_t n = 1;
        for (auto d : shape) n *= static_cast<size_t>(d);
        Blob b;
        b.shape = std::move(shape);
        static const char* kinds[] = {"F32", "F16", "BF16"};
        b.dtype = kinds[counter_++ % 3];
        for (size_t i = 0; i < n; ++i) {
            const float x = nd(rng);
            if (b.dtype == std::string("F32")) {
                b.values.push_back(x);
                b.bytes.append(reinterpret_cast<const char*>(&x), 4);
            } else if (b.dtype == std::string("F16")) {
                const uint16_t h = fp32_to_fp16(x);
                b.values.push_back(fp16_to_fp32(h));
                b.bytes.append(reinterpret_cast<const char*>(&h), 2);
            } else {
                uint32_t u;
                std::memcpy(&u, &x, 4);
                const uint16_t h = static_cast<uint16_t>(u >> 16);
                b.values.push_back(bf16_to_fp32(h));
                b.bytes.append(reinterpret_cast<const char*>(&h), 2);
            }
        }
        tensors[name] = std::move(b);
    }
    int counter_ = 0;
};

starkv_status load_status(const std::string& dir, std::string* msg = nullptr) {
    try {
        load_hf_dir(dir, nullptr);
        return STARKV_OK;
    } catch (const Error& e) {
        if (msg) *msg = e.what();
        return e.status();
    }
}

void check_model(const Checkpoint& ck, const LoadedModel& m) {
    const Spec& s = ck.spec;
    const ModelConfig& c = m.config;
    EXPECT_EQ(m.format, "hf");
    EXPECT_EQ(c.n_vocab, s.n_vocab);
    EXPECT_EQ(c.n_embd, s.n_embd);
    EXPECT_EQ(c.n_ff, s.n_ff);
    EXPECT_EQ(c.n_layer, s.n_layer);
    EXPECT_EQ(c.n_head, s.n_head);
    EXPECT_EQ(c.n_head_kv, s.n_head_kv);
    EXPECT_EQ(c.head_dim, s.head_dim);
    EXPECT_EQ(c.n_ctx_train, 256);
    EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
    EXPECT_FLOAT_EQ(c.rope.theta, 500000.0f);
    EXPECT_EQ(c.rope.n_dims, s.head_dim);
    EXPECT_EQ(c.rope.layout, RopeLayout::HalfSplit);
    EXPECT_EQ(c.rope.scaling, RopeScaling::None);
    EXPECT_EQ(c.tied_embeddings, s.tied);

    const ModelWeights& w = m.weights;
    auto eq = [&](const std::vector<float>& got, const std::string& name) {
        EXPECT_EQ(got, ck.values(name)) << name;
    };
    EXPECT_EQ(w.tok_embd.rows, s.n_vocab);
    EXPECT_EQ(w.tok_embd.cols, s.n_embd);
    eq(w.tok_embd.data, "model.embed_tokens.weight");
    eq(w.output_norm, "model.norm.weight");
    if (s.tied) {
        EXPECT_TRUE(w.output.empty());
        EXPECT_EQ(&w.lm_head(), &w.tok_embd);
    } else {
        EXPECT_EQ(w.output.rows, s.n_vocab);
        eq(w.output.data, "lm_head.weight");
    }
    ASSERT_EQ(w.layers.size(), static_cast<size_t>(s.n_layer));
    for (int i = 0; i < s.n_layer; ++i) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        const LayerWeights& l = w.layers[static_cast<size_t>(i)];
        eq(l.attn_norm, p + "input_layernorm.weight");
        eq(l.ffn_norm, p + "post_attention_layernorm.weight");
        // Stored as in the file: no Q/K permutation for half-split RoPE.
        eq(l.wq.data, p + "self_attn.q_proj.weight");
        eq(l.wk.data, p + "self_attn.k_proj.weight");
        eq(l.wv.data, p + "self_attn.v_proj.weight");
        eq(l.wo.data, p + "self_attn.o_proj.weight");
        eq(l.w_gate.data, p + "mlp.gate_proj.weight");
        eq(l.w_up.data, p + "mlp.up_proj.weight");
        eq(l.w_down.data, p + "mlp.down_proj.weight");
        EXPECT_EQ(l.wq.rows, s.n_head * s.head_dim);
        EXPECT_EQ(l.wk.rows, s.n_head_kv * s.head_dim);
        EXPECT_EQ(l.wo.cols, s.n_head * s.head_dim);
        EXPECT_EQ(l.w_down.cols, s.n_ff);
    }
    EXPECT_EQ(m.tensors.size(), ck.tensors.size());
    for (const TensorInfo& t : m.tensors) {
        ASSERT_TRUE(ck.tensors.count(t.name)) << t.name;
        EXPECT_EQ(t.dtype, ck.tensors.at(t.name).dtype);
        EXPECT_EQ(t.shape, ck.tensors.at(t.name).shape);
        EXPECT_EQ(t.n_bytes, ck.tensors.at(t.name).bytes.size());
    }
    EXPECT_EQ(m.vocab.tokens.size(), 258u);
}

}  // namespace

TEST(HfLoader, UntiedSingleFile) {
    Checkpoint ck("untied", Spec{});
    ck.write();
    const LoadedModel m = load_hf_dir(ck.dir, nullptr);
    check_model(ck, m);
}

TEST(HfLoader, Tied) {
    Spec s;
    s.tied = true;
    Checkpoint ck("tied", s);
    ck.write();
    check_model(ck, load_hf_dir(ck.dir, nullptr));

    // A stray lm_head in a tied checkpoint is ignored, as transformers does.
    Checkpoint ck2("tied_stray", Spec{});
    ck2.config["tie_word_embeddings"] = true;
    ck2.write();
    const LoadedModel m = load_hf_dir(ck2.dir, nullptr);
    EXPECT_TRUE(m.config.tied_embeddings);
    EXPECT_TRUE(m.weights.output.empty());
}

TEST(HfLoader, Sharded) {
    Spec s;
    s.sharded = true;
    Checkpoint ck("sharded", s);
    ck.write();
    ASSERT_TRUE(fs::exists(ck.dir + "/model.safetensors.index.json"));
    ASSERT_FALSE(fs::exists(ck.dir + "/model.safetensors"));
    check_model(ck, load_hf_dir(ck.dir, nullptr));
}

TEST(HfLoader, ConfigDefaultsAndVariants) {
    Checkpoint ck("defaults", Spec{});
    ck.config.erase("num_key_value_heads");   // -> n_head
    ck.config.erase("rope_theta");            // -> 10000
    ck.config.erase("tie_word_embeddings");   // -> false
    ck.config["head_dim"] = nullptr;          // null = absent -> hidden / heads
    ck.config["architectures"] = {"MistralForCausalLM"};
    ck.config["model_type"] = "mistral";
    ck.config["sliding_window"] = 128;
    // With n_head_kv = n_head the k/v projections are wider.
    Spec s = ck.spec;
    s.n_head_kv = s.n_head;
    Checkpoint ck2("defaults", s);  // rebuild tensors for the new shapes
    ck2.config = ck.config;
    ck2.write();
    const LoadedModel m = load_hf_dir(ck2.dir, nullptr);
    EXPECT_EQ(m.config.n_head_kv, 4);
    EXPECT_EQ(m.config.head_dim, 4);
    EXPECT_FLOAT_EQ(m.config.rope.theta, 10000.0f);
    EXPECT_FALSE(m.config.tied_embeddings);
    EXPECT_EQ(m.config.n_ctx_train, 128);  // limited to the sliding window

    // Explicit head_dim different from hidden / heads.
    Spec s3;
    s3.head_dim = 8;
    Checkpoint ck3("head_dim", s3);
    ck3.config["head_dim"] = 8;
    ck3.write();
    const LoadedModel m3 = load_hf_dir(ck3.dir, nullptr);
    EXPECT_EQ(m3.config.head_dim, 8);
    EXPECT_EQ(m3.weights.layers[0].wq.rows, 32);
    EXPECT_EQ(m3.weights.layers[0].wo.cols, 32);
}

TEST(HfLoader, RopeScaling) {
    Checkpoint ck("rope", Spec{});
    ck.config["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
    ck.write();
    LoadedModel m = load_hf_dir(ck.dir, nullptr);
    EXPECT_EQ(m.config.rope.scaling, RopeScaling::Linear);
    EXPECT_FLOAT_EQ(m.config.rope.factor, 4.0f);

    ck.config["rope_scaling"] = {{"rope_type", "llama3"},
                                 {"factor", 32.0},
                                 {"low_freq_factor", 1.0},
                                 {"high_freq_factor", 4.0},
                                 {"original_max_position_embeddings", 8192}};
    ck.write();
    m = load_hf_dir(ck.dir, nullptr);
    EXPECT_EQ(m.config.rope.scaling, RopeScaling::Llama3);
    EXPECT_FLOAT_EQ(m.config.rope.factor, 32.0f);
    EXPECT_FLOAT_EQ(m.config.rope.low_freq_factor, 1.0f);
    EXPECT_FLOAT_EQ(m.config.rope.high_freq_factor, 4.0f);
    EXPECT_EQ(m.config.rope.original_max_pos, 8192);

    ck.config["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
    ck.write();
    std::string msg;
    EXPECT_EQ(load_status(ck.dir, &msg), STARKV_ERR_UNSUPPORTED);
    EXPECT_NE(msg.find("yarn"), std::string::npos) << msg;
}

TEST(HfLoader, BadConfig) {
    Checkpoint ck("badcfg", Spec{});
    ck.write();
    const json good = ck.config;
    struct Case {
        std::function<void(json&)> edit;
        starkv_status want;
        const char* mention;
    };
    const std::vector<Case> cases = {
        {[](json& c) { c.erase("hidden_size"); }, STARKV_ERR_CORRUPT, "hidden_size"},
        {[](json& c) { c.erase("vocab_size"); }, STARKV_ERR_CORRUPT, "vocab_size"},
        {[](json& c) { c["num_key_value_heads"] = 3; }, STARKV_ERR_CORRUPT, "n_head_kv"},
        {[](json& c) { c["num_attention_heads"] = 0; }, STARKV_ERR_CORRUPT, "num_attention_heads"},
        {[](json& c) { c["num_hidden_layers"] = 100000; }, STARKV_ERR_CORRUPT, "n_layer"},
        {[](json& c) { c["vocab_size"] = 1 << 30; }, STARKV_ERR_CORRUPT, "n_vocab"},
        {[](json& c) { c["intermediate_size"] = -5; }, STARKV_ERR_CORRUPT, "n_ff"},
        {[](json& c) { c["hidden_size"] = 1LL << 40; }, STARKV_ERR_CORRUPT, "hidden_size"},
        {[](json& c) { c["hidden_size"] = "16"; }, STARKV_ERR_CORRUPT, "hidden_size"},
        {[](json& c) { c["hidden_size"] = 16.5; }, STARKV_ERR_CORRUPT, "hidden_size"},
        {[](json& c) { c["head_dim"] = 5; }, STARKV_ERR_UNSUPPORTED, "head_dim"},
        {[](json& c) { c["hidden_size"] = 18; }, STARKV_ERR_CORRUPT, "num_attention_heads"},
        {[](json& c) { c["max_position_embeddings"] = 1 << 30; }, STARKV_ERR_CORRUPT, "n_ctx_train"},
        {[](json& c) { c["rms_norm_eps"] = "x"; }, STARKV_ERR_CORRUPT, "rms_norm_eps"},
        {[](json& c) { c["rope_scaling"] = 3; }, STARKV_ERR_CORRUPT, "rope_scaling"},
        {[](json& c) { c["tie_word_embeddings"] = "yes"; }, STARKV_ERR_CORRUPT, "tie_word_embeddings"},
        {[](json& c) {
             c["architectures"] = {"GPT2LMHeadModel"};
             c["model_type"] = "gpt2";
         },
         STARKV_ERR_UNSUPPORTED, "GPT2LMHeadModel"},
        {[](json& c) { c["attention_bias"] = true; }, STARKV_ERR_UNSUPPORTED, "bias"},
        {[](json& c) { c["hidden_act"] = "gelu"; }, STARKV_ERR_UNSUPPORTED, "gelu"},
        // Config larger than the tensors: the shape check names the tensor.
        {[](json& c) { c["vocab_size"] = 300; }, STARKV_ERR_CORRUPT, "model.embed_tokens.weight"},
        {[](json& c) { c["intermediate_size"] = 48; }, STARKV_ERR_CORRUPT, "expected [48, 16]"},
        {[](json& c) { c["num_hidden_layers"] = 3; }, STARKV_ERR_CORRUPT, "model.layers.2."},
        // The unedited config loads (the cases above fail for their own reason).
        {[](json& c) {}, STARKV_OK, ""},
    };
    for (size_t i = 0; i < cases.size(); ++i) {
        ck.config = good;
        cases[i].edit(ck.config);
        ck.write();
        std::string msg;
        EXPECT_EQ(load_status(ck.dir, &msg), cases[i].want) << "case " << i << ": " << msg;
        EXPECT_NE(msg.find(cases[i].mention), std::string::npos) << "case " << i << ": " << msg;
        EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }

    // Not JSON / not an object.
    std::ofstream(ck.dir + "/config.json", std::ios::trunc) << "{\"hidden_size\": ";
    EXPECT_EQ(load_status(ck.dir), STARKV_ERR_CORRUPT);
    std::ofstream(ck.dir + "/config.json", std::ios::trunc) << "[]";
    EXPECT_EQ(load_status(ck.dir), STARKV_ERR_CORRUPT);
}

TEST(HfLoader, BadFiles) {
    Checkpoint ck("badfiles", Spec{});
    ck.write();
    ASSERT_EQ(load_status(ck.dir), STARKV_OK);

    // Untied but lm_head missing.
    Checkpoint ck2("nohead", Spec{});
    ck2.tensors.erase("lm_head.weight");
    ck2.write();
    std::string msg;
    EXPECT_EQ(load_status(ck2.dir, &msg), STARKV_ERR_CORRUPT);
    EXPECT_NE(msg.find("lm_head.weight"), std::string::npos) << msg;

    // Transposed tensor.
    Checkpoint ck3("transposed", Spec{});
    std::swap(ck3.tensors["model.layers.1.mlp.down_proj.weight"].shape[0],
              ck3.tensors["model.layers.1.mlp.down_proj.weight"].shape[1]);
    ck3.write();
    EXPECT_EQ(load_status(ck3.dir, &msg), STARKV_ERR_CORRUPT);
    EXPECT_NE(msg.find("model.layers.1.mlp.down_proj.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[16, 40]"), std::string::npos) << msg;

    // Unsupported dtype for a weight.
    Checkpoint ck4("i32", Spec{});
    Blob& norm = ck4.tensors["model.norm.weight"];
    const std::string int_type = norm.bytes.size() == 4 * norm.values.size() ? "I32" : "I16";
    norm.dtype = int_type;
    ck4.write();
    EXPECT_EQ(load_status(ck4.dir, &msg), STARKV_ERR_UNSUPPORTED);
    EXPECT_NE(msg.find(int_type), std::string::npos) << msg;

    // Missing pieces.
    fs::remove(ck.dir + "/tokenizer.json");
    EXPECT_EQ(load_status(ck.dir), STARKV_ERR_IO);
    fs::remove(ck.dir + "/model.safetensors");
    EXPECT_EQ(load_status(ck.dir), STARKV_ERR_IO);
    fs::remove(ck.dir + "/config.json");
    EXPECT_EQ(load_status(ck.dir), STARKV_ERR_IO);
    EXPECT_EQ(load_status(starkv_test::temp_dir() + "/no_such_dir"), STARKV_ERR_IO);

    // Tokenizer with more tokens than embedding rows.
    Spec small;
    small.n_vocab = 200;
    Checkpoint ck5("smallvocab", small);
    ck5.write();
    EXPECT_EQ(load_status(ck5.dir, &msg), STARKV_ERR_CORRUPT);
    EXPECT_NE(msg.find("tokenizer"), std::string::npos) << msg;

    // Truncated safetensors.
    Checkpoint ck6("trunc", Spec{});
    ck6.write();
    fs::resize_file(ck6.dir + "/model.safetensors", fs::file_size(ck6.dir + "/model.safetensors") - 3);
    EXPECT_EQ(load_status(ck6.dir), STARKV_ERR_CORRUPT);
}

TEST(HfLoader, ProgressAndCancel) {
    Checkpoint ck("progress", Spec{});
    ck.write();
    std::vector<float> seen;
    load_hf_dir(ck.dir, [&](float p) {
        seen.push_back(p);
        return true;
    });
    // One call per weight tensor, increasing, ending at 1.
    ASSERT_EQ(seen.size(), ck.tensors.size());
    for (size_t i = 1; i < seen.size(); ++i) EXPECT_GT(seen[i], seen[i - 1]);
    EXPECT_FLOAT_EQ(seen.back(), 1.0f);

    int calls = 0;
    try {
        load_hf_dir(ck.dir, [&](float) { return ++calls < 5; });
        FAIL() << "expected cancel";
    } catch (const Error& e) {
        EXPECT_EQ(e.status(), STARKV_ERR_CANCELLED);
    }
    EXPECT_EQ(calls, 5);
}

TEST(HfLoader, ValidateBounds) {
    ModelConfig c;
    c.n_vocab = 32000;
    c.n_embd = 4096;
    c.n_ff = 11008;
    c.n_layer = 32;
    c.n_head = 32;
    c.n_head_kv = 8;
    c.head_dim = 128;
    c.n_ctx_train = 4096;
    c.rope.n_dims = 128;
    EXPECT_NO_THROW(c.validate());
    auto status = [](ModelConfig m) {
        try {
            m.validate();
            return STARKV_OK;
        } catch (const Error& e) {
            return e.status();
        }
    };
    ModelConfig b = c;
    b.rope.n_dims = 256;
    EXPECT_NE(status(b), STARKV_OK);
    b = c;
    b.n_head_kv = 0;
    EXPECT_EQ(status(b), STARKV_ERR_CORRUPT);  // never a division by zero
    b = c;
    b.n_embd = 65537;
    EXPECT_EQ(status(b), STARKV_ERR_CORRUPT);
    b = c;
    b.head_dim = 2048;
    EXPECT_EQ(status(b), STARKV_ERR_CORRUPT);
    b = c;
    b.rms_eps = 0.0f;
    EXPECT_EQ(status(b), STARKV_ERR_CORRUPT);
}
