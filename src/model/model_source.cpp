#include "model/model_source.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "bundle/reader.h"
#include "core/error.h"
#include "core/log.h"
#include "core/parallel_jobs.h"
#include "model/dequant.h"

namespace starkv {

const SourceTensor* ModelSource::find(const std::string& name) const {
    for (const SourceTensor& t : tensors)
        if (t.name == name) return &t;
    return nullptr;
}

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

struct Job {
    const SourceTensor* tensor;
    float* dst;
    size_t n;
};

class Planner {
public:
    explicit Planner(const ModelSource& s) : src_(s) {}

    // The tensor, checked: supported dtype, byte size matching its shape.
    const SourceTensor* get(const std::string& name, bool required) {
        const SourceTensor* t = src_.find(name);
        if (!t) {
            if (required) corrupt(src_.label + ": missing tensor '" + src_.shown(name) + "'");
            return nullptr;
        }
        if (!ggml_type_supported(t->dtype) || !t->data)
            unsupported(src_.label + ": tensor '" + src_.shown(name) + "' has unsupported type " + t->dtype_name);
        return t;
    }
    std::vector<float> vector(const std::string& name, int n, bool required = true) {
        std::vector<float> v;
        const SourceTensor* t = get(name, required);
        if (!t) return v;
        if (elems(*t) != static_cast<uint64_t>(n))
            corrupt(src_.label + ": tensor '" + src_.shown(name) + "' has shape " + shape_str(t->shape) +
                    ", expected " + std::to_string(n) + " elements");
        v.resize(static_cast<size_t>(n));
        add(t, v.data(), v.size());
        return v;
    }
    Matrix matrix(const std::string& name, int rows, int cols, bool required = true) {
        Matrix m;
        const SourceTensor* t = get(name, required);
        if (!t) return m;
        const std::vector<int64_t> want{rows, cols};
        if (t->shape != want)
            corrupt(src_.label + ": tensor '" + src_.shown(name) + "' has shape " + shape_str(t->shape) +
                    ", expected " + shape_str(want));
        m = Matrix(rows, cols);
        add(t, m.data.data(), m.data.size());
        return m;
    }
    std::vector<Job>& jobs() { return jobs_; }

private:
    static uint64_t elems(const SourceTensor& t) {
        uint64_t n = 1;
        for (int64_t d : t.shape) {
            if (d <= 0 || static_cast<uint64_t>(d) > (uint64_t{1} << 40) / n) return 0;
            n *= static_cast<uint64_t>(d);
        }
        return n;
    }
    void add(const SourceTensor* t, float* dst, size_t n) {
        const GgmlType type = static_cast<GgmlType>(t->dtype);
        const size_t cols = static_cast<size_t>(t->shape.back());
        if (cols % ggml_block_elems(type) != 0 || t->n_bytes != ggml_row_bytes(type, cols) * (n / cols))
            corrupt(src_.label + ": tensor '" + src_.shown(t->name) + "' holds " + std::to_string(t->n_bytes) +
                    " bytes, which does not match its shape and type " + t->dtype_name);
        jobs_.push_back(Job{t, dst, n});
    }

    const ModelSource& src_;
    std::vector<Job> jobs_;
};

// A factor's rank is its tensor's shape: [rank][n_embd] for the A matrices.
int latent_rank(const ModelSource& src, const std::string& name, int max_rank) {
    const SourceTensor* t = src.find(name);
    if (!t) corrupt(src.label + ": missing tensor '" + name + "'");
    if (t->shape.size() != 2 || t->shape[0] < 1 || t->shape[0] > max_rank)
        corrupt(src.label + ": tensor '" + name + "' has shape " + shape_str(t->shape) + ", expected a rank in [1, " +
                std::to_string(max_rank) + "] rows");
    return static_cast<int>(t->shape[0]);
}

// STAR-KV factors of one layer (blk.N.attn_k_lat_{a,u}.H, blk.N.attn_v_lat_{a,u}).
void load_latent(const ModelSource& src, Planner& p, const ModelConfig& c, const std::string& b, LatentFactors& F) {
    const int kv_dim = c.n_head_kv * c.head_dim;
    const int rv = latent_rank(src, b + "attn_v_lat_a", std::min(kv_dim, c.n_embd));
    F.v_a = p.matrix(b + "attn_v_lat_a", rv, c.n_embd);
    F.v_u = p.matrix(b + "attn_v_lat_u", kv_dim, rv);
    F.k_a.resize(static_cast<size_t>(c.n_head_kv));
    F.k_u.resize(static_cast<size_t>(c.n_head_kv));
    for (int h = 0; h < c.n_head_kv; ++h) {
        const std::string a = b + "attn_k_lat_a." + std::to_string(h), u = b + "attn_k_lat_u." + std::to_string(h);
        const int r = latent_rank(src, a, std::min(c.head_dim, c.n_embd));
        F.k_a[static_cast<size_t>(h)] = p.matrix(a, r, c.n_embd);
        F.k_u[static_cast<size_t>(h)] = p.matrix(u, c.head_dim, r);
    }
}

// The quantization plan of layer l onto its factors: each latent's width must
// be its factor's rank.
void attach_quant(const ModelSource& src, int l, LatentFactors& F, LatentQuant& plain_q) {
    const LatentQuantLayer& q = src.kv_quant[static_cast<size_t>(l)];
    if (q.empty()) return;
    const std::string where = src.label + ": layer " + std::to_string(l);
    if (q.plain.active()) {
        if (F.active()) corrupt(where + " has latent factors and a plain K/V quantization plan");
        plain_q = q.plain;
        return;
    }
    if (!F.active()) corrupt(where + " has a KV quantization plan but no latent factors");
    auto check = [&](const LatentQuant& lq, int rank) {
        if (lq.active() && lq.width != rank)
            corrupt(where + ": KV quantization width " + std::to_string(lq.width) + " != latent rank " + std::to_string(rank));
    };
    for (size_t h = 0; h < F.k_a.size(); ++h) check(q.k[h], F.k_a[h].rows);
    check(q.v, F.v_a.rows);
    F.k_q = q.k;
    F.v_q = q.v;
}

}  // namespace

LoadedModel build_model(const ModelSource& src, const ProgressFn& progress) {
    LoadedModel out;
    out.format = src.format;
    out.config = src.config;
    out.vocab = src.vocab;
    out.tensors = src.infos;
    ModelConfig& c = out.config;
    c.validate();
    out.vocab.validate();
    // Token ids index the embedding rows: more tokens than rows would read past it.
    if (out.vocab.tokens.size() > static_cast<size_t>(c.n_vocab))
        corrupt(src.label + ": the tokenizer has " + std::to_string(out.vocab.tokens.size()) +
                " tokens but the model only " + std::to_string(c.n_vocab) + " embedding rows");

    Planner p(src);
    const int q_dim = c.n_head * c.head_dim, kv_dim = c.n_head_kv * c.head_dim;
    ModelWeights& w = out.weights;
    w.tok_embd = p.matrix("token_embd.weight", c.n_vocab, c.n_embd);
    w.layers.resize(static_cast<size_t>(c.n_layer));
    for (int l = 0; l < c.n_layer; ++l) {
        const std::string b = "blk." + std::to_string(l) + ".";
        LayerWeights& L = w.layers[static_cast<size_t>(l)];
        L.attn_norm = p.vector(b + "attn_norm.weight", c.n_embd);
        L.wq = p.matrix(b + "attn_q.weight", q_dim, c.n_embd);
        L.wk = p.matrix(b + "attn_k.weight", kv_dim, c.n_embd);
        L.wv = p.matrix(b + "attn_v.weight", kv_dim, c.n_embd);
        L.wo = p.matrix(b + "attn_output.weight", c.n_embd, q_dim);
        L.ffn_norm = p.vector(b + "ffn_norm.weight", c.n_embd);
        L.w_gate = p.matrix(b + "ffn_gate.weight", c.n_ff, c.n_embd);
        L.w_up = p.matrix(b + "ffn_up.weight", c.n_ff, c.n_embd);
        L.w_down = p.matrix(b + "ffn_down.weight", c.n_embd, c.n_ff);
        if (src.find(b + "attn_v_lat_a")) load_latent(src, p, c, b, L.lat);
        if (!src.kv_quant.empty()) attach_quant(src, l, L.lat, L.plain_q);
    }
    w.output_norm = p.vector("output_norm.weight", c.n_embd);
    // As transformers does: a tied model uses the embedding (a stray output is ignored).
    if (!c.tied_embeddings) w.output = p.matrix("output.weight", c.n_vocab, c.n_embd);
    if (src.find("rope_freqs.weight")) c.rope.freq_factors = p.vector("rope_freqs.weight", c.rope.n_dims / 2);

    const std::vector<Job>& jobs = p.jobs();
    const size_t total = jobs.size();
    run_jobs(
        total,
        [&](size_t i) {
            const Job& j = jobs[i];
            dequantize(static_cast<GgmlType>(j.tensor->dtype), j.tensor->data, j.dst, j.n);
        },
        [&](size_t done) { return !progress || progress(static_cast<float>(done) / static_cast<float>(total)); });
    return out;
}

ModelSource open_model_source(const std::string& path, const ProgressFn& progress) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::is_directory(path, ec)) return open_hf_source(path);
    if (!fs::exists(path, ec)) fail(STARKV_ERR_IO, "no such file or directory: '" + path + "'");
    char magic[8] = {};
    {
        std::ifstream in(path, std::ios::binary);
        if (!in) fail(STARKV_ERR_IO, "cannot open '" + path + "'");
        in.read(magic, sizeof magic);
    }
    if (std::memcmp(magic, "GGUF", 4) == 0) return open_gguf_source(path);
    if (is_bundle_magic(reinterpret_cast<const uint8_t*>(magic), sizeof magic)) return open_bundle_source(path, progress);
    corrupt("'" + path + "': unknown format (neither GGUF, a starkv bundle nor a Hugging Face directory)");
}

LoadedModel load_model(const std::string& path, const ProgressFn& progress) {
    const auto t0 = std::chrono::steady_clock::now();
    // A bundle reports decompression in [0, 0.5] and the build in [0.5, 1].
    ProgressFn first, second = progress;
    if (progress) first = [&progress](float f) { return progress(0.5f * f); };
    ModelSource src = open_model_source(path, first);
    if (progress && src.format == "bundle") second = [&progress](float f) { return progress(0.5f + 0.5f * f); };
    LoadedModel m = build_model(src, second);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f ms", ms);
    log(STARKV_LOG_INFO, "loaded " + src.format + " model '" + path + "' (" + std::to_string(src.tensors.size()) +
                             " tensors) in " + buf);
    return m;
}

LoadedModel load_gguf(const std::string& path, const ProgressFn& progress) {
    return build_model(open_gguf_source(path), progress);
}

LoadedModel load_hf_dir(const std::string& dir, const ProgressFn& progress) {
    return build_model(open_hf_source(dir), progress);
}

}  // namespace starkv
