// A tiny synthetic Hugging Face Llama checkpoint written by tests:
// config.json, model.safetensors (F32/F16/BF16 tensors with known values) and a
// minimal byte-level tokenizer.json. Header-only; shared by unit and API tests.
#pragma once

#include "byte_level.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace starkv_test {

struct HfTensor {
    std::string dtype;  // "F32", "F16", "BF16"
    std::vector<int64_t> shape;
    std::string bytes;
};

inline uint16_t hf_f32_to_f16(float f) {  // round-to-nearest-even, finite inputs of moderate range
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = static_cast<int32_t>((x >> 23) & 0xFF) - 127 + 15;
    uint32_t mant = x & 0x7FFFFF;
    if (exp <= 0) return static_cast<uint16_t>(sign);  // flush tiny values to zero
    if (exp >= 31) return static_cast<uint16_t>(sign | 0x7C00);
    uint32_t h = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
    const uint32_t rest = mant & 0x1FFF;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;
    return static_cast<uint16_t>(h);
}

class HfCheckpoint {
public:
    int n_vocab = 260, n_embd = 16, n_ff = 40, n_layer = 2, n_head = 4, n_head_kv = 2;
    bool tied = false;
    std::map<std::string, HfTensor> tensors;

    // Fills the tensors with seeded normal values, cycling F32, F16, BF16.
    explicit HfCheckpoint(uint32_t seed = 1234) {
        std::mt19937 rng(seed);
        const int hd = n_embd / n_head, q = n_head * hd, kv = n_head_kv * hd;
        add("model.embed_tokens.weight", {n_vocab, n_embd}, rng);
        for (int i = 0; i < n_layer; ++i) {
            const std::string p = "model.layers." + std::to_string(i) + ".";
            add(p + "input_layernorm.weight", {n_embd}, rng);
            add(p + "post_attention_layernorm.weight", {n_embd}, rng);
            add(p + "self_attn.q_proj.weight", {q, n_embd}, rng);
            add(p + "self_attn.k_proj.weight", {kv, n_embd}, rng);
            add(p + "self_attn.v_proj.weight", {kv, n_embd}, rng);
            add(p + "self_attn.o_proj.weight", {n_embd, q}, rng);
            add(p + "mlp.gate_proj.weight", {n_ff, n_embd}, rng);
            add(p + "mlp.up_proj.weight", {n_ff, n_embd}, rng);
            add(p + "mlp.down_proj.weight", {n_embd, n_ff}, rng);
        }
        add("model.norm.weight", {n_embd}, rng);
        add("lm_head.weight", {n_vocab, n_embd}, rng);
    }

    void write(const std::string& dir) const {
        namespace fs = std::filesystem;
        using json = nlohmann::json;
        fs::remove_all(dir);
        fs::create_directories(dir);
        const json config = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                             {"hidden_size", n_embd}, {"intermediate_size", n_ff},
                             {"num_hidden_layers", n_layer}, {"num_attention_heads", n_head},
                             {"num_key_value_heads", n_head_kv}, {"max_position_embeddings", 256},
                             {"rms_norm_eps", 1e-5}, {"rope_theta", 500000.0},
                             {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                               {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}}},
                             {"hidden_act", "silu"}, {"tie_word_embeddings", tied}, {"vocab_size", n_vocab}};
        std::ofstream(dir + "/config.json") << config.dump(2);
        json vocab = json::object();
        for (int b = 0; b < 256; ++b) vocab[hf_byte_token(b)] = b;
        vocab["<s>"] = 256;
        vocab["</s>"] = 257;
        const json tok = {{"version", "1.0"},
                          {"added_tokens",
                           {{{"id", 256}, {"content", "<s>"}, {"special", true}},
                            {{"id", 257}, {"content", "</s>"}, {"special", true}}}},
                          {"normalizer", nullptr},
                          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
                          {"post_processor", nullptr},
                          {"decoder", {{"type", "ByteLevel"}}},
                          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}};
        std::ofstream(dir + "/tokenizer.json") << tok.dump();
        json h = json::object();
        std::string data;
        for (const auto& [name, t] : tensors) {
            h[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
            data += t.bytes;
        }
        const std::string header = h.dump();
        std::string len(8, '\0');
        for (int i = 0; i < 8; ++i) len[static_cast<size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
        std::ofstream(dir + "/model.safetensors", std::ios::binary) << len << header << data;
    }

private:
    void add(const std::string& name, std::vector<int64_t> shape, std::mt19937& rng) {
        std::normal_distribution<float> nd(0.0f, 0.5f);
        size_t n = 1;
        for (auto d : shape) n *= static_cast<size_t>(d);
        HfTensor t;
        t.shape = std::move(shape);
        static const char* kinds[] = {"F32", "F16", "BF16"};
        t.dtype = kinds[counter_++ % 3];
        for (size_t i = 0; i < n; ++i) {
            const float x = nd(rng);
            uint32_t u;
            std::memcpy(&u, &x, 4);
            if (t.dtype == "F32") {
                t.bytes.append(reinterpret_cast<const char*>(&x), 4);
            } else {
                const uint16_t h = t.dtype == "F16" ? hf_f32_to_f16(x) : static_cast<uint16_t>(u >> 16);
                t.bytes.append(reinterpret_cast<const char*>(&h), 2);
            }
        }
        tensors[name] = std::move(t);
    }
    int counter_ = 0;
};

}  // namespace starkv_test
