// The sample GGUF model converted back to a Hugging Face checkpoint must give
// the same logits: GGUF runs adjacent-pair RoPE on Q/K rows that llama.cpp's
// converter permuted, HF runs half-split RoPE on the original rows. Agreement
// proves both RoPE layouts and both loaders right.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/context.h"
#include "model/loader.h"
#include "model/model.h"
#include "test_paths.h"

using namespace starkv;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Inverse of llama.cpp's convert permute(w, n_head):
//   w.reshape(n_head, 2, hd/2, n_embd).swapaxes(1, 2).reshape(w.shape)
// i.e. gguf row h*hd + 2*i + j  ==  hf row h*hd + j*hd/2 + i.
Matrix unpermute(const Matrix& g, int n_head) {
    const int hd = g.rows / n_head;
    Matrix hf(g.rows, g.cols);
    for (int h = 0; h < n_head; ++h)
        for (int i = 0; i < hd / 2; ++i)
            for (int j = 0; j < 2; ++j) {
                const float* src = g.row(h * hd + 2 * i + j);
                std::copy(src, src + g.cols, hf.row(h * hd + j * (hd / 2) + i));
            }
    return hf;
}

struct F32Tensor {
    std::vector<int64_t> shape;
    const float* data;
    size_t n;
};

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, F32Tensor>>& ts) {
    json h = json::object();
    uint64_t off = 0;
    for (const auto& [name, t] : ts) {
        h[name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {off, off + 4 * t.n}}};
        off += 4 * t.n;
    }
    const std::string header = h.dump();
    std::ofstream out(path, std::ios::binary);
    const uint64_t len = header.size();  // little-endian host (the reader asserts it)
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << header;
    for (const auto& [name, t] : ts) out.write(reinterpret_cast<const char*>(t.data), 4 * t.n);
}

// Writes an HF directory equivalent to the GGUF model g.
void write_hf_dir(const LoadedModel& g, const std::string& dir, bool unpermute_qk) {
    fs::create_directories(dir);
    const ModelConfig& c = g.config;
    const ModelWeights& w = g.weights;
    json cfg = {{"architectures", {"LlamaForCausalLM"}},
                {"model_type", "llama"},
                {"vocab_size", c.n_vocab},
                {"hidden_size", c.n_embd},
                {"intermediate_size", c.n_ff},
                {"num_hidden_layers", c.n_layer},
                {"num_attention_heads", c.n_head},
                {"num_key_value_heads", c.n_head_kv},
                {"head_dim", c.head_dim},
                {"max_position_embeddings", c.n_ctx_train},
                {"rms_norm_eps", c.rms_eps},
                {"rope_theta", c.rope.theta},
                {"tie_word_embeddings", w.output.empty()}};
    std::ofstream(dir + "/config.json") << cfg.dump(2);

    std::vector<Matrix> keep;  // owns the un-permuted copies until written
    keep.reserve(2 * w.layers.size());
    std::vector<std::pair<std::string, F32Tensor>> ts;
    auto mat = [&](const std::string& name, const Matrix& m) {
        ts.push_back({name, {{m.rows, m.cols}, m.data.data(), m.data.size()}});
    };
    auto vec = [&](const std::string& name, const std::vector<float>& v) {
        ts.push_back({name, {{static_cast<int64_t>(v.size())}, v.data(), v.size()}});
    };
    mat("model.embed_tokens.weight", w.tok_embd);
    for (size_t i = 0; i < w.layers.size(); ++i) {
        const LayerWeights& l = w.layers[i];
        const std::string p = "model.layers." + std::to_string(i) + ".";
        vec(p + "input_layernorm.weight", l.attn_norm);
        vec(p + "post_attention_layernorm.weight", l.ffn_norm);
        if (unpermute_qk) {
            keep.push_back(unpermute(l.wq, c.n_head));
            mat(p + "self_attn.q_proj.weight", keep.back());
            keep.push_back(unpermute(l.wk, c.n_head_kv));
            mat(p + "self_attn.k_proj.weight", keep.back());
        } else {
            mat(p + "self_attn.q_proj.weight", l.wq);
            mat(p + "self_attn.k_proj.weight", l.wk);
        }
        mat(p + "self_attn.v_proj.weight", l.wv);
        mat(p + "self_attn.o_proj.weight", l.wo);
        mat(p + "mlp.gate_proj.weight", l.w_gate);
        mat(p + "mlp.up_proj.weight", l.w_up);
        mat(p + "mlp.down_proj.weight", l.w_down);
    }
    vec("model.norm.weight", w.output_norm);
    if (!w.output.empty()) mat("lm_head.weight", w.output);
    write_safetensors(dir + "/model.safetensors", ts);

    // Tokenization is not under test: a byte-level vocab that fits the
    // embedding (ids below are fed directly to both models).
    json vocab = json::object();
    for (int b = 0; b < 94; ++b) vocab[std::string(1, static_cast<char>('!' + b))] = b;
    std::ofstream(dir + "/tokenizer.json")
        << json({{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}},
                 {"pre_tokenizer", {{"type", "ByteLevel"}}},
                 {"decoder", {{"type", "ByteLevel"}}}})
               .dump();
}

// All-position logits of each prompt.
std::vector<std::vector<float>> run(const std::shared_ptr<const Model>& m,
                                    const std::vector<std::vector<int32_t>>& prompts) {
    ContextOptions opt;
    opt.n_ctx = 128;
    opt.n_threads = 2;
    Context ctx(m, opt);
    std::vector<std::vector<float>> out;
    const size_t V = static_cast<size_t>(m->config().n_vocab);
    for (const auto& p : prompts) {
        ctx.reset();
        ctx.eval(p.data(), p.size(), /*all_logits=*/true);
        out.emplace_back(ctx.logits(0), ctx.logits(0) + p.size() * V);
    }
    return out;
}

double max_abs_diff(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
    double d = 0;
    for (size_t i = 0; i < a.size(); ++i)
        for (size_t j = 0; j < a[i].size(); ++j) d = std::max(d, std::fabs(double(a[i][j]) - b[i][j]));
    return d;
}

}  // namespace

TEST(HfLoader, MatchesGgufLogits) {
    const std::string gguf = starkv_test::stories_model();
    ASSERT_TRUE(fs::exists(gguf)) << gguf << " (set STARKV_SHARED_DIR)";
    LoadedModel g = load_gguf(gguf, nullptr);
    ASSERT_EQ(g.config.rope.layout, RopeLayout::Adjacent);
    ASSERT_EQ(g.config.rope.n_dims, g.config.head_dim);  // the permutation covers whole heads
    const std::string dir = starkv_test::temp_dir() + "/hf_from_gguf";
    const std::string dir_raw = starkv_test::temp_dir() + "/hf_from_gguf_not_unpermuted";
    write_hf_dir(g, dir, /*unpermute_qk=*/true);
    write_hf_dir(g, dir_raw, /*unpermute_qk=*/false);

    LoadedModel h = load_hf_dir(dir, nullptr);
    EXPECT_EQ(h.config.rope.layout, RopeLayout::HalfSplit);
    EXPECT_EQ(h.config.n_head_kv, g.config.n_head_kv);
    EXPECT_EQ(h.config.tied_embeddings, g.config.tied_embeddings);

    // Prompts from the GGUF's own tokenizer, plus arbitrary ids, long enough
    // that RoPE at many positions matters.
    auto gm = std::make_shared<const Model>(std::move(g));
    std::vector<std::vector<int32_t>> prompts = {
        gm->tokenizer().tokenize("Once upon a time, there was a little girl named Lily.", true, false),
        gm->tokenizer().tokenize("The cat sat on the mat and looked at the big red ball.", true, false),
    };
    std::vector<int32_t> ids;
    for (int i = 0; i < 70; ++i) ids.push_back((i * 37 + 11) % gm->config().n_vocab);
    prompts.push_back(ids);
    for (const auto& p : prompts) ASSERT_GE(p.size(), 8u);

    auto hm = std::make_shared<const Model>(std::move(h));
    const auto lg = run(gm, prompts);
    const auto lh = run(hm, prompts);
    const double diff = max_abs_diff(lg, lh);
    EXPECT_LT(diff, 1e-4) << "HF (half-split) and GGUF (adjacent) logits differ";

    // Control: without un-permuting, half-split RoPE on GGUF rows is wrong,
    // so the test can tell.
    auto rm = std::make_shared<const Model>(load_hf_dir(dir_raw, nullptr));
    EXPECT_GT(max_abs_diff(lg, run(rm, prompts)), 1e-2);
    std::cout << "max |logit diff| HF vs GGUF = " << diff << "\n";
}
