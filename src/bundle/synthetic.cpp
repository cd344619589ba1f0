#include "bundle/synthetic.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>

#include "core/error.h"
#include "core/parallel_jobs.h"
#include "model/dequant.h"

namespace starkv {
namespace {

// splitmix64: a fast, seedable stream per tensor (weights need no quality).
struct Rng {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
};

// Random F16 values of magnitude 2^-7 .. 2^-5 with random signs: normal
// halves, so no subnormal or NaN reaches the loader.
void fill_f16(uint16_t* out, size_t n, uint64_t seed) {
    Rng r{seed};
    size_t i = 0;
    while (i < n) {
        uint64_t bits = r.next();
        for (int k = 0; k < 4 && i < n; ++k, ++i, bits >>= 16) {
            const uint16_t b = static_cast<uint16_t>(bits);
            const uint16_t sign = b & 0x8000u, mant = b & 0x03FFu;
            const uint16_t exp = static_cast<uint16_t>(8 + ((b >> 10) & 1u));  // 2^-7, 2^-6
            out[i] = static_cast<uint16_t>(sign | (exp << 10) | mant);
        }
    }
}

bool power_of_two(int n) { return n > 0 && (n & (n - 1)) == 0; }

}  // namespace

std::vector<float> random_orthonormal_rows(int rows, int n, uint64_t seed) {
    if (rows < 0 || rows > n) fail(STARKV_ERR_INVALID_ARGUMENT, "orthonormal rows: rows must be in [0, n]");
    std::vector<float> a(static_cast<size_t>(rows) * n);
    std::mt19937_64 rng(seed);
    if (power_of_two(n)) {
        std::vector<int> pick(static_cast<size_t>(n));
        std::iota(pick.begin(), pick.end(), 0);
        std::shuffle(pick.begin(), pick.end(), rng);
        std::vector<float> sign(static_cast<size_t>(n));
        for (float& s : sign) s = (rng() & 1) ? 1.0f : -1.0f;
        const float scale = 1.0f / std::sqrt(static_cast<float>(n));
        for (int i = 0; i < rows; ++i)
            for (int j = 0; j < n; ++j)
                a[static_cast<size_t>(i) * n + j] =
                    (__builtin_popcount(static_cast<unsigned>(pick[i] & j)) & 1 ? -scale : scale) * sign[j];
        return a;
    }
    std::normal_distribution<double> nd;
    std::vector<double> v(static_cast<size_t>(n));
    for (int i = 0; i < rows; ++i) {
        for (;;) {
            for (double& x : v) x = nd(rng);
            for (int k = 0; k < i; ++k) {
                const float* q = &a[static_cast<size_t>(k) * n];
                double d = 0;
                for (int j = 0; j < n; ++j) d += v[j] * q[j];
                for (int j = 0; j < n; ++j) v[j] -= d * q[j];
            }
            double norm = 0;
            for (double x : v) norm += x * x;
            if (norm > 1e-6) {
                norm = std::sqrt(norm);
                for (int j = 0; j < n; ++j) a[static_cast<size_t>(i) * n + j] = static_cast<float>(v[j] / norm);
                break;
            }
        }
    }
    return a;
}

namespace {

// [n][r] with orthonormal columns.
std::vector<float> orthonormal_columns(int n, int r, uint64_t seed) {
    const std::vector<float> t = random_orthonormal_rows(r, n, seed);
    std::vector<float> u(static_cast<size_t>(n) * r);
    for (int i = 0; i < r; ++i)
        for (int j = 0; j < n; ++j) u[static_cast<size_t>(j) * r + i] = t[static_cast<size_t>(i) * n + j];
    return u;
}

// Byte-fallback SPM vocabulary: <unk> <s> </s>, the 256 byte tokens, then
// placeholders up to n_vocab (any text tokenizes, as bytes).
Vocab synthetic_vocab(int n_vocab) {
    Vocab v;
    v.kind = TokenizerKind::Spm;
    auto add = [&](std::string t, TokenType type) {
        v.tokens.push_back(std::move(t));
        v.types.push_back(type);
        v.scores.push_back(0.0f);
    };
    add("<unk>", TokenType::Unknown);
    add("<s>", TokenType::Control);
    add("</s>", TokenType::Control);
    char buf[16];
    for (int b = 0; b < 256; ++b) {
        std::snprintf(buf, sizeof buf, "<0x%02X>", b);
        add(buf, TokenType::Byte);
    }
    while (static_cast<int>(v.tokens.size()) < n_vocab) add("<unused" + std::to_string(v.tokens.size()) + ">", TokenType::Unused);
    v.unk = 0;
    v.bos = 1;
    v.eos = 2;
    return v;
}

ModelConfig synthetic_config(const std::string& shape) {
    ModelConfig c;
    c.architecture = "llama";
    c.n_embd = 4096;
    c.n_layer = 32;
    c.n_head = 32;
    c.head_dim = 128;
    c.rope.n_dims = 128;
    c.rope.layout = RopeLayout::Adjacent;
    if (shape == "llama2-7b") {
        c.name = "synthetic Llama-2-7B";
        c.n_vocab = 32000;
        c.n_ff = 11008;
        c.n_head_kv = 32;
        c.n_ctx_train = 4096;
        c.rope.theta = 10000.0f;
    } else if (shape == "llama3-8b") {
        c.name = "synthetic Llama-3-8B";
        c.n_vocab = 128256;
        c.n_ff = 14336;
        c.n_head_kv = 8;
        c.n_ctx_train = 8192;
        c.rope.theta = 500000.0f;
    } else {
        fail(STARKV_ERR_INVALID_ARGUMENT, "unknown synthetic shape '" + shape + "' (llama2-7b or llama3-8b)");
    }
    return c;
}

}  // namespace

SyntheticModel make_synthetic_model(const std::string& shape, int n_layers, float kv_compress) {
    if (n_layers < 0 || n_layers > 1024) fail(STARKV_ERR_INVALID_ARGUMENT, "n_layers must be in [0, 1024]");
    if (!(kv_compress >= 0.0f && kv_compress < 1.0f)) fail(STARKV_ERR_INVALID_ARGUMENT, "kv_compress must be in [0, 1)");
    SyntheticModel m;
    ModelSource& src = m.source;
    src.format = "synthetic";
    src.label = "synthetic " + shape;
    src.config = synthetic_config(shape);
    ModelConfig& c = src.config;
    if (n_layers > 0) c.n_layer = n_layers;
    src.vocab = synthetic_vocab(c.n_vocab);

    // Every tensor's bytes in one owned buffer each; matrices filled below on all cores.
    struct Spec {
        std::string name;
        std::vector<int64_t> shape;
        bool f16;
    };
    std::vector<Spec> specs;
    const int64_t E = c.n_embd, F = c.n_ff, qd = int64_t{c.n_head} * c.head_dim, kvd = int64_t{c.n_head_kv} * c.head_dim;
    specs.push_back({"token_embd.weight", {c.n_vocab, E}, true});
    for (int l = 0; l < c.n_layer; ++l) {
        const std::string b = "blk." + std::to_string(l) + ".";
        specs.push_back({b + "attn_norm.weight", {E}, false});
        specs.push_back({b + "attn_q.weight", {qd, E}, true});
        specs.push_back({b + "attn_k.weight", {kvd, E}, true});
        specs.push_back({b + "attn_v.weight", {kvd, E}, true});
        specs.push_back({b + "attn_output.weight", {E, qd}, true});
        specs.push_back({b + "ffn_norm.weight", {E}, false});
        specs.push_back({b + "ffn_gate.weight", {F, E}, true});
        specs.push_back({b + "ffn_up.weight", {F, E}, true});
        specs.push_back({b + "ffn_down.weight", {E, F}, true});
    }
    specs.push_back({"output_norm.weight", {E}, false});
    specs.push_back({"output.weight", {c.n_vocab, E}, true});
    src.tensors.resize(specs.size());
    std::vector<std::shared_ptr<std::vector<uint8_t>>> bufs(specs.size());
    run_jobs(
        specs.size(),
        [&](size_t i) {
            const Spec& s = specs[i];
            size_t n = 1;
            for (int64_t d : s.shape) n *= static_cast<size_t>(d);
            auto buf = std::make_shared<std::vector<uint8_t>>(n * (s.f16 ? 2 : 4));
            if (s.f16) {
                fill_f16(reinterpret_cast<uint16_t*>(buf->data()), n, 0x5EED0000ull + i);
            } else {
                const float one = 1.0f;  // norms: the identity scale
                for (size_t k = 0; k < n; ++k) std::memcpy(buf->data() + 4 * k, &one, 4);
            }
            SourceTensor& t = src.tensors[i];
            t.name = s.name;
            t.dtype = static_cast<uint32_t>(s.f16 ? GgmlType::F16 : GgmlType::F32);
            t.dtype_name = s.f16 ? "F16" : "F32";
            t.shape = s.shape;
            t.data = buf->data();
            t.n_bytes = buf->size();
            bufs[i] = std::move(buf);
        },
        [](size_t) { return true; });
    for (auto& b : bufs) src.owners.push_back(std::move(b));

    m.kv_meta = {{"kv", "none"}};
    if (kv_compress == 0.0f) return m;
    const int rk = std::max(1, static_cast<int>(std::lround(c.head_dim * (1.0 - kv_compress))));
    const int rv = std::max(1, static_cast<int>(std::lround(static_cast<double>(kvd) * (1.0 - kv_compress))));
    nlohmann::json rank_k = nlohmann::json::array(), rank_v = nlohmann::json::array(), skipped = nlohmann::json::array();
    auto add = [&](const std::string& name, std::vector<float> data, int rows, int cols) {
        auto buf = std::make_shared<std::vector<float>>(std::move(data));
        SourceTensor t;
        t.name = name;
        t.dtype = static_cast<uint32_t>(GgmlType::F32);
        t.dtype_name = "F32";
        t.shape = {rows, cols};
        t.data = reinterpret_cast<const uint8_t*>(buf->data());
        t.n_bytes = buf->size() * sizeof(float);
        m.latent.push_back(std::move(t));
        src.owners.push_back(std::move(buf));
    };
    for (int l = 0; l < c.n_layer; ++l) {
        const bool skip = c.n_layer > 3 && (l < 2 || l == c.n_layer - 1);
        if (skip) {
            skipped.push_back(l);
            rank_k.push_back(nlohmann::json::array());  // as calibration writes a skipped layer
            rank_v.push_back(nlohmann::json(nullptr));
            continue;
        }
        const std::string b = "blk." + std::to_string(l) + ".";
        const uint64_t seed = 0xFAC7000000ull + static_cast<uint64_t>(l) * 1000;
        for (int h = 0; h < c.n_head_kv; ++h) {
            add(b + "attn_k_lat_a." + std::to_string(h), random_orthonormal_rows(rk, c.n_embd, seed + 2 * h), rk, c.n_embd);
            add(b + "attn_k_lat_u." + std::to_string(h), orthonormal_columns(c.head_dim, rk, seed + 2 * h + 1),
                c.head_dim, rk);
        }
        add(b + "attn_v_lat_a", random_orthonormal_rows(rv, c.n_embd, seed + 998), rv, c.n_embd);
        add(b + "attn_v_lat_u", orthonormal_columns(static_cast<int>(kvd), rv, seed + 999), static_cast<int>(kvd), rv);
        rank_k.push_back(std::vector<int>(static_cast<size_t>(c.n_head_kv), rk));
        rank_v.push_back(rv);
    }
    m.kv_meta = {{"kv", "star-kv"},
                 {"rate", kv_compress},
                 {"strategy", "synthetic (random orthonormal factors, uniform ranks, no calibration)"},
                 {"skip_layers", skipped},
                 {"ranks", {{"k", rank_k}, {"v", rank_v}}}};
    return m;
}

}  // namespace starkv
