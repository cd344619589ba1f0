// The starkv command line: run, perplexity, info, pack, inspect. A client of the public C
// API only (it links libstarkv like any user program).
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "starkv/starkv.h"

namespace {

// Failure with a one-line message; main() prints it and exits non-zero.
struct CliError {
    std::string message;
};

void check(starkv_status st, const std::string& what) {
    if (st != STARKV_OK) throw CliError{what + ": " + starkv_last_error() + " (" + starkv_status_name(st) + ")"};
}

struct ModelDeleter {
    void operator()(starkv_model* m) const { starkv_model_free(m); }
};
struct ContextDeleter {
    void operator()(starkv_context* c) const { starkv_context_free(c); }
};
struct SamplerDeleter {
    void operator()(starkv_sampler* s) const { starkv_sampler_free(s); }
};
using ModelPtr = std::unique_ptr<starkv_model, ModelDeleter>;
using ContextPtr = std::unique_ptr<starkv_context, ContextDeleter>;
using SamplerPtr = std::unique_ptr<starkv_sampler, SamplerDeleter>;

ModelPtr load(const std::string& path) {
    starkv_model_params mp;
    starkv_model_params_default(&mp);
    starkv_model* m = nullptr;
    check(starkv_model_load(path.c_str(), &mp, &m), "cannot load model '" + path + "'");
    return ModelPtr(m);
}

ContextPtr make_context(starkv_model* model, unsigned n_ctx, unsigned threads, uint64_t seed,
                        int backend = STARKV_BACKEND_CPU) {
    starkv_context_params cp;
    starkv_context_params_default(&cp);
    cp.backend = backend;
    cp.n_ctx = n_ctx;
    cp.n_threads = threads;
    cp.seed = seed;
    starkv_context* c = nullptr;
    check(starkv_context_create(model, &cp, &c), "cannot create context");
    return ContextPtr(c);
}

std::vector<starkv_token> tokenize(starkv_model* model, const std::string& text, bool add_bos) {
    size_t n = 0;
    std::vector<starkv_token> tokens(text.size() + 2);
    starkv_status st = starkv_tokenize(model, text.data(), text.size(), add_bos, false, tokens.data(), tokens.size(), &n);
    if (st == STARKV_ERR_BUFFER_TOO_SMALL) {
        tokens.resize(n);
        st = starkv_tokenize(model, text.data(), text.size(), add_bos, false, tokens.data(), tokens.size(), &n);
    }
    check(st, "cannot tokenize");
    tokens.resize(n);
    return tokens;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw CliError{"cannot read '" + path + "'"};
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

struct RunArgs {
    std::string model, prompt;
    int n = 128;
    float temp = 0.8f, top_p = 0.95f, min_p = 0.05f, repeat_penalty = 1.0f;
    int top_k = 40;
    uint64_t seed = 0;
    unsigned ctx = 0, threads = 0;
    bool ignore_eos = false;
    std::string backend = "cpu", cuda_dtype;
};

// --cuda-dtype: the weights' type on the GPU, read by the backend from
// $STARKV_CUDA_DTYPE when a context is created.
void set_cuda_dtype(const std::string& dtype) {
    if (!dtype.empty()) setenv("STARKV_CUDA_DTYPE", dtype.c_str(), 1);
}

// Warnings (e.g. why --backend auto runs on the CPU) go to stderr.
void log_to_stderr(starkv_log_level level, const char* msg, void*) {
    if (level >= STARKV_LOG_WARN) std::fprintf(stderr, "starkv: %s\n", msg);
}

bool print_piece(const char* piece, size_t len, starkv_token, void*) {
    std::fwrite(piece, 1, len, stdout);
    std::fflush(stdout);
    return true;
}

int cmd_run(const RunArgs& a) {
    set_cuda_dtype(a.cuda_dtype);
    ModelPtr model = load(a.model);
    starkv_set_log_callback(log_to_stderr, nullptr);
    const int backend = a.backend == "cuda" ? STARKV_BACKEND_CUDA : a.backend == "auto" ? STARKV_BACKEND_AUTO
                                                                                       : STARKV_BACKEND_CPU;
    ContextPtr ctx = make_context(model.get(), a.ctx, a.threads, a.seed, backend);
    starkv_sampler_params sp;
    starkv_sampler_params_default(&sp);
    sp.temperature = a.temp;
    sp.top_k = a.top_k;
    sp.top_p = a.top_p;
    sp.min_p = a.min_p;
    sp.repeat_penalty = a.repeat_penalty;
    sp.seed = a.seed;
    starkv_sampler* s = nullptr;
    check(starkv_sampler_create(&sp, &s), "cannot create sampler");
    SamplerPtr sampler(s);

    std::vector<starkv_token> prompt = tokenize(model.get(), a.prompt, true);
    std::fwrite(a.prompt.data(), 1, a.prompt.size(), stdout);
    std::fflush(stdout);
    starkv_generate_params gp;
    starkv_generate_params_default(&gp);
    gp.max_tokens = a.n;
    gp.stop_at_eos = !a.ignore_eos;
    gp.on_piece = print_piece;
    starkv_generate_result r;
    starkv_generate_result_default(&r);
    check(starkv_generate(ctx.get(), sampler.get(), prompt.data(), prompt.size(), &gp, &r), "generation failed");
    std::fputc('\n', stdout);
    std::fflush(stdout);

    starkv_kv_stats kv;
    starkv_kv_stats_default(&kv);
    check(starkv_context_kv_stats(ctx.get(), &kv), "kv stats");
    static const char* reasons[] = {"max tokens", "end of sequence", "callback", "context full"};
    std::fprintf(stderr,
                 "prompt: %u tokens, %.1f tokens/s | decode: %u tokens, %.1f tokens/s | stop: %s\n"
                 "kv cache: %u/%u tokens, %llu bytes in use, %llu bytes/token, %llu bytes reserved\n"
                 "kv memory per token: %llu bytes vs %llu uncompressed (%.1f%%)\n",
                 r.n_prompt_tokens, r.prompt_seconds > 0 ? r.n_prompt_tokens / r.prompt_seconds : 0.0, r.n_generated,
                 r.decode_seconds > 0 ? r.n_generated / r.decode_seconds : 0.0,
                 reasons[r.stop_reason >= 0 && r.stop_reason < 4 ? r.stop_reason : 0], kv.n_tokens, kv.n_ctx,
                 static_cast<unsigned long long>(kv.bytes_in_use), static_cast<unsigned long long>(kv.bytes_per_token),
                 static_cast<unsigned long long>(kv.bytes_reserved), static_cast<unsigned long long>(kv.bytes_per_token),
                 static_cast<unsigned long long>(kv.bytes_per_token_uncompressed),
                 kv.bytes_per_token_uncompressed ? 100.0 * kv.bytes_per_token / kv.bytes_per_token_uncompressed : 0.0);
    // The reference of the papers: every layer's K and V in fp16 (the plain
    // cache here holds fp32, half of bytes_per_token_uncompressed would be fp16).
    const double fp16 = static_cast<double>(kv.bytes_per_token_uncompressed) / 2.0;
    // Below 1x the cache keeps fp32 rows (fp32 latents compete with fp16 K/V):
    // say so, rather than let a compressed bundle look larger.
    const double vs_fp16 = kv.bytes_per_token ? fp16 / static_cast<double>(kv.bytes_per_token) : 0.0;
    std::fprintf(stderr, "kv bytes per token (codes, scales, padding): %llu; fp16 uncompressed %.0f; reduction %.2fx%s\n",
                 static_cast<unsigned long long>(kv.bytes_per_token), fp16, vs_fp16,
                 vs_fp16 > 0 && vs_fp16 < 1 ? " (this cache holds fp32 rows; pack --kv-bits quantizes the latents)" : "");
    if (kv.device_bytes) std::fprintf(stderr, "device memory: %llu bytes\n", static_cast<unsigned long long>(kv.device_bytes));
    return 0;
}

// Paragraphs separated by blank lines (lines of only whitespace count as blank).
std::vector<std::string> split_documents(const std::string& text) {
    std::vector<std::string> docs;
    std::string cur;
    std::istringstream in(text);
    std::string line;
    auto flush = [&] {
        if (!cur.empty()) docs.push_back(cur);
        cur.clear();
    };
    while (std::getline(in, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) {
            flush();
            continue;
        }
        if (!cur.empty()) cur += '\n';
        cur += line;
    }
    flush();
    return docs;
}

int cmd_perplexity(const std::string& model_path, const std::string& text_path, int docs_limit, unsigned n_ctx,
                   const std::string& backend_name, const std::string& cuda_dtype, unsigned threads) {
    set_cuda_dtype(cuda_dtype);
    ModelPtr model = load(model_path);
    if (n_ctx == 0) n_ctx = 512;
    starkv_set_log_callback(log_to_stderr, nullptr);
    const int backend = backend_name == "cuda" ? STARKV_BACKEND_CUDA : backend_name == "auto" ? STARKV_BACKEND_AUTO
                                                                                           : STARKV_BACKEND_CPU;
    ContextPtr ctx = make_context(model.get(), n_ctx, threads, 0, backend);
    std::vector<std::string> docs = split_documents(read_text(text_path));
    if (docs_limit > 0 && static_cast<size_t>(docs_limit) < docs.size()) docs.resize(static_cast<size_t>(docs_limit));
    double nll = 0;
    size_t count = 0, used = 0;
    for (const std::string& d : docs) {
        std::vector<starkv_token> t = tokenize(model.get(), d, true);
        if (t.size() > n_ctx) t.resize(n_ctx);
        if (t.size() < 2) continue;
        double s = 0;
        size_t k = 0;
        check(starkv_context_score(ctx.get(), t.data(), t.size(), &s, &k), "scoring failed");
        nll += s;
        count += k;
        ++used;
    }
    if (count == 0) throw CliError{"no document in '" + text_path + "' has 2 or more tokens"};
    std::printf("documents: %zu\nmean nll: %.6f\nperplexity: %.6f over %zu tokens\n", used, nll / count,
                std::exp(nll / count), count);
    return 0;
}

int cmd_info(const std::string& model_path) {
    ModelPtr model = load(model_path);
    starkv_model_info info;
    starkv_model_info_default(&info);
    check(starkv_model_get_info(model.get(), &info), "model info");
    static const char* scaling[] = {"none", "linear", "llama3"};
    std::printf("file: %s\nformat: %s\narchitecture: %s\nname: %s\nparameters: %llu\n", model_path.c_str(), info.format,
                info.architecture, info.name, static_cast<unsigned long long>(info.n_params));
    std::printf("n_vocab: %d\nn_embd: %d\nn_layer: %d\nn_head: %d\nn_head_kv: %d\nhead_dim: %d\nn_ff: %d\n"
                "n_ctx_train: %d\nrope_theta: %g\nrope_scaling: %s (factor %g)\nrms_norm_eps: %g\ntied_embeddings: %s\n",
                info.n_vocab, info.n_embd, info.n_layer, info.n_head, info.n_head_kv, info.head_dim, info.n_ff,
                info.n_ctx_train, info.rope_theta, scaling[info.rope_scaling >= 0 && info.rope_scaling < 3 ? info.rope_scaling : 0],
                info.rope_scaling_factor, info.rms_norm_eps, info.tied_embeddings ? "yes" : "no");
    std::printf("tokenizer: %s\nbos: %d\neos: %d\nunk: %d\npad: %d\n",
                info.tokenizer == STARKV_TOKENIZER_SPM ? "spm (sentencepiece-style bpe)" : "bpe (byte-level)",
                info.bos_token, info.eos_token, info.unk_token, info.pad_token);
    size_t n = starkv_model_n_tensors(model.get());
    std::printf("tensors: %zu\n%-40s %-6s %-20s %12s\n", n, "name", "dtype", "shape", "bytes");
    for (size_t i = 0; i < n; ++i) {
        starkv_tensor_info t;
        starkv_tensor_info_default(&t);
        check(starkv_model_tensor(model.get(), i, &t), "tensor info");
        std::string shape;
        for (int d = 0; d < t.n_dims; ++d) shape += (d ? " x " : "") + std::to_string(t.shape[d]);
        std::printf("%-40s %-6s %-20s %12llu\n", t.name, t.dtype, shape.c_str(), static_cast<unsigned long long>(t.n_bytes));
    }
    return 0;
}

// "\rpacking  42%" on stderr, only when it is a terminal.
bool print_progress(float f, void* label) {
    static int last = -1;
    const int pct = static_cast<int>(f * 100.0f + 0.5f);
    if (pct != last) {
        last = pct;
        std::fprintf(stderr, "\r%s %3d%%", static_cast<const char*>(label), pct);
        if (pct >= 100) std::fputc('\n', stderr);
        std::fflush(stderr);
    }
    return true;
}

std::string human(double bytes) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
    return buf;
}

nlohmann::json describe(const std::string& path) {
    size_t n = 0;
    std::string doc;
    starkv_status st = starkv_bundle_describe(path.c_str(), nullptr, 0, &n);
    if (st == STARKV_ERR_BUFFER_TOO_SMALL) {
        doc.resize(n);
        st = starkv_bundle_describe(path.c_str(), doc.data(), doc.size(), &n);
    }
    check(st, "cannot read bundle '" + path + "'");
    doc.resize(n);
    return nlohmann::json::parse(doc);
}

// The library's defaults (starkv_pack_params_default), so the CLI cannot drift from them.
starkv_pack_params default_pack_params() {
    starkv_pack_params p;
    starkv_pack_params_default(&p);
    return p;
}

struct KvPackArgs {
    float rate = 0.0f, rate_k = 0.0f, rate_v = 0.0f;
    std::string calib, strategy = "adaptive", skip;
    int calib_tokens = default_pack_params().calib_tokens;
    float bits = 0.0f;
    std::string hadamard = "auto";
    bool uniform = false;
    int plain_bits = 0;
    int probe_tokens = default_pack_params().kv_bits_probe_tokens;
    unsigned threads = 0;
};

int cmd_pack(const std::string& in, const std::string& out, int level, const KvPackArgs& kv) {
    starkv_pack_params pp;
    starkv_pack_params_default(&pp);
    pp.zstd_level = level;
    if (kv.rate > 0.0f) {
        if (kv.calib.empty()) throw CliError{"--kv-compress needs --calib FILE"};
        pp.kv_compress = kv.rate;
        pp.calib_path = kv.calib.c_str();
        pp.rank_strategy = kv.strategy.c_str();
        pp.skip_layers = kv.skip.empty() ? nullptr : kv.skip.c_str();
        pp.calib_tokens = kv.calib_tokens;
        pp.kv_compress_k = kv.rate_k;
        pp.kv_compress_v = kv.rate_v;
        pp.kv_bits = kv.bits;
        pp.kv_bits_uniform = kv.uniform ? 1 : 0;
        pp.kv_bits_plain = kv.plain_bits;
        pp.kv_bits_probe_tokens = kv.probe_tokens;
        pp.n_threads = static_cast<int32_t>(kv.threads);
        if (kv.hadamard == "auto") pp.hadamard_block = 0;
        else if (kv.hadamard == "none") pp.hadamard_block = -1;
        else pp.hadamard_block = std::stoi(kv.hadamard);
    } else if (kv.bits > 0.0f) {
        throw CliError{"--kv-bits quantizes STAR-KV latents: it needs --kv-compress"};
    }
    static char label[] = "packing";
    if (isatty(STDERR_FILENO)) {
        pp.progress = print_progress;
        pp.progress_user_data = label;
    }
    check(starkv_pack(in.c_str(), out.c_str(), &pp), "cannot pack '" + in + "'");
    const nlohmann::json d = describe(out);
    const double src = d["provenance"].value("source_size", 0.0), dst = d.value("file_size", 0.0);
    std::printf("wrote %s: %zu tensors, %s (source %s, %.1f%%)\n", out.c_str(), d["tensors"].size(),
                human(dst).c_str(), human(src).c_str(), src > 0 ? 100.0 * dst / src : 0.0);
    const auto& c = d["compression"];
    if (c.value("kv", "none") != "none") {
        const auto& b = c["budget"];
        const auto& h = c["held_out"];
        std::printf("STAR-KV %s: KV cache removed in compressed layers %.1f%%, K/V parameters removed %.1f%%, "
                    "held-out perplexity %.4f (uncompressed %.4f, %llu tokens)\n",
                    c["strategy"].get<std::string>().c_str(), 100.0 * b["kv_removed"].get<double>(),
                    100.0 * b["kv_params_removed"].get<double>(), h["perplexity"].get<double>(),
                    h["perplexity_uncompressed"].get<double>(), h["tokens"].get<unsigned long long>());
    }
    return 0;
}

int cmd_pack_synthetic(const std::string& shape, int layers, float rate, const std::string& out) {
    check(starkv_pack_synthetic(shape.c_str(), layers, rate, out.c_str()), "cannot write synthetic " + shape);
    const nlohmann::json d = describe(out);
    std::printf("wrote %s: synthetic %s, %d layers, %zu tensors, %s, STAR-KV %s\n", out.c_str(), shape.c_str(),
                d["model"].value("n_layer", 0), d["tensors"].size(), human(d.value("file_size", 0.0)).c_str(),
                rate > 0 ? ("rate " + std::to_string(rate)).c_str() : "off");
    return 0;
}

struct BenchArgs {
    std::string model, backend = "cuda", json, cuda_dtype;
    int batch = 1, gen = 128;
    unsigned ctx = 512, threads = 0;
};

// Prefill and decode speed of a model beside the bandwidth floor of a decode
// step: (weight bytes + KV bytes read) / measured device copy bandwidth.
int cmd_bench(const BenchArgs& a) {
    set_cuda_dtype(a.cuda_dtype);
    ModelPtr model = load(a.model);
    starkv_set_log_callback(log_to_stderr, nullptr);
    const int backend = a.backend == "cuda" ? STARKV_BACKEND_CUDA : a.backend == "auto" ? STARKV_BACKEND_AUTO
                                                                                       : STARKV_BACKEND_CPU;
    starkv_model_info info;
    starkv_model_info_default(&info);
    check(starkv_model_get_info(model.get(), &info), "model info");
    // B sequences of ctx prompt tokens then gen decode steps. The API decodes one
    // sequence per call: the B contexts take turns (B x the KV memory, no batched kernel).
    std::vector<ContextPtr> ctxs;
    for (int b = 0; b < a.batch; ++b) ctxs.push_back(make_context(model.get(), a.ctx + a.gen, a.threads, 0, backend));
    std::vector<starkv_token> prompt(a.ctx);
    for (unsigned i = 0; i < a.ctx; ++i) prompt[i] = static_cast<starkv_token>(3 + (i * 7919u) % (info.n_vocab - 3));
    using clock = std::chrono::steady_clock;
    auto t0 = clock::now();
    for (auto& c : ctxs) check(starkv_context_eval(c.get(), prompt.data(), prompt.size(), false), "prefill");
    auto t1 = clock::now();
    std::vector<starkv_token> next(ctxs.size());
    auto argmax = [&](starkv_context* c) {
        const float* l = nullptr;
        check(starkv_context_logits(c, -1, &l), "logits");
        return static_cast<starkv_token>(std::max_element(l, l + info.n_vocab) - l);
    };
    for (size_t b = 0; b < ctxs.size(); ++b) next[b] = argmax(ctxs[b].get());
    auto t2 = clock::now();
    for (int s = 0; s < a.gen; ++s)
        for (size_t b = 0; b < ctxs.size(); ++b) {
            check(starkv_context_decode(ctxs[b].get(), next[b]), "decode");
            next[b] = argmax(ctxs[b].get());
        }
    auto t3 = clock::now();
    const double prefill_s = std::chrono::duration<double>(t1 - t0).count();
    const double decode_s = std::chrono::duration<double>(t3 - t2).count();
    const double prefill_tps = a.batch * static_cast<double>(a.ctx) / prefill_s;
    const double decode_tps = a.batch * static_cast<double>(a.gen) / decode_s;

    starkv_kv_stats kv;
    starkv_kv_stats_default(&kv);
    check(starkv_context_kv_stats(ctxs[0].get(), &kv), "kv stats");
    uint64_t weight_bytes = 0;
    check(starkv_context_device_weight_bytes(ctxs[0].get(), &weight_bytes), "weight bytes");
    double bw = 0;
    if (kv.device_bytes) check(starkv_device_copy_bandwidth(0, &bw), "bandwidth");
    // A decode step reads every weight matrix and the cache of its sequence
    // (mean length over the steps); copy bandwidth counts read + write bytes.
    const double kv_read = static_cast<double>(kv.bytes_per_token) * (a.ctx + a.gen / 2.0);
    const double floor_s = bw > 0 ? (weight_bytes + kv_read) / bw : 0.0;
    const double step_s = decode_s / (static_cast<double>(a.gen) * a.batch);

    std::printf("%-28s %s\n", "model", a.model.c_str());
    std::printf("%-28s %s, batch %d (contexts in turn), ctx %u, gen %d\n", "backend", a.backend.c_str(), a.batch, a.ctx, a.gen);
    std::printf("%-28s %.1f\n", "prefill tokens/s", prefill_tps);
    std::printf("%-28s %.1f (%.3f ms/token)\n", "decode tokens/s", decode_tps, 1e3 * step_s);
    std::printf("%-28s %.1f MB per context\n", "device memory", kv.device_bytes / 1e6);
    std::printf("%-28s %llu per token (%llu uncompressed); %.1f MB at %u tokens\n", "KV bytes",
                static_cast<unsigned long long>(kv.bytes_per_token),
                static_cast<unsigned long long>(kv.bytes_per_token_uncompressed), kv.bytes_in_use / 1e6, kv.n_tokens);
    if (floor_s > 0) {
        std::printf("%-28s %.1f MB weights + %.1f MB KV per step\n", "bytes read per decode step", weight_bytes / 1e6, kv_read / 1e6);
        std::printf("%-28s %.0f GB/s (device-to-device copy, read + write)\n", "device bandwidth", bw / 1e9);
        std::printf("%-28s %.3f ms/token (%.1f tokens/s); measured %.0f%% of the floor's speed\n", "floor", 1e3 * floor_s,
                    1.0 / floor_s, 100.0 * floor_s / step_s);
    }
    if (!a.json.empty()) {
        nlohmann::json j = {{"model", a.model}, {"backend", a.backend}, {"batch", a.batch}, {"ctx", a.ctx}, {"gen", a.gen},
                            {"prefill_tokens_per_s", prefill_tps}, {"decode_tokens_per_s", decode_tps},
                            {"decode_ms_per_token", 1e3 * step_s}, {"device_bytes_per_context", kv.device_bytes},
                            {"kv_bytes_per_token", kv.bytes_per_token},
                            {"kv_bytes_per_token_uncompressed", kv.bytes_per_token_uncompressed},
                            {"kv_bytes_in_use", kv.bytes_in_use}, {"weight_bytes_per_step", weight_bytes},
                            {"kv_bytes_read_per_step", kv_read}, {"copy_bandwidth_bytes_per_s", bw},
                            {"floor_ms_per_token", 1e3 * floor_s},
                            {"fraction_of_floor_speed", floor_s > 0 ? floor_s / step_s : 0.0}};
        std::ofstream out(a.json);
        out << j.dump(2) << "\n";
        if (!out) throw CliError{"cannot write '" + a.json + "'"};
    }
    return 0;
}

// The rank map as an SVG heat map (rows: layers; columns: key heads, then the
// value latent), shade = rank / full rank, like the paper's rank figures.
void write_rank_svg(const nlohmann::json& d, const std::string& out) {
    const auto& c = d["compression"];
    const auto& m = d["model"];
    const int n_layer = m["n_layer"].get<int>(), n_kv = m["n_head_kv"].get<int>(), hd = m["head_dim"].get<int>();
    const int full_v = std::min(n_kv * hd, m["n_embd"].get<int>());
    const int cell = 28, left = 70, top = 40, cols = n_kv + 1;
    std::ostringstream svg;
    svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << left + cols * cell + 20 << "\" height=\""
        << top + n_layer * cell + 20 << "\" font-family=\"sans-serif\" font-size=\"10\">\n";
    svg << "<text x=\"" << left << "\" y=\"14\">STAR-KV ranks (" << c["strategy"].get<std::string>() << ", rate "
        << c["rate"].get<double>() << "): key heads | value</text>\n";
    for (int l = 0; l < n_layer; ++l) {
        const int y = top + l * cell;
        svg << "<text x=\"4\" y=\"" << y + cell / 2 + 4 << "\">layer " << l << "</text>\n";
        const auto& rk = c["ranks"]["k"][static_cast<size_t>(l)];
        for (int j = 0; j < cols; ++j) {
            const bool skipped = rk.empty();
            const int r = skipped ? 0 : (j < n_kv ? rk[static_cast<size_t>(j)].get<int>() : c["ranks"]["v"][static_cast<size_t>(l)].get<int>());
            const double f = skipped ? 1.0 : static_cast<double>(r) / (j < n_kv ? hd : full_v);
            const int shade = static_cast<int>(255 - 200 * f);
            svg << "<rect x=\"" << left + j * cell << "\" y=\"" << y << "\" width=\"" << cell - 2 << "\" height=\"" << cell - 2
                << "\" fill=\"" << (skipped ? "rgb(200,200,200)" : "rgb(" + std::to_string(shade) + "," + std::to_string(shade) + ",255)")
                << "\"/><text x=\"" << left + j * cell + 4 << "\" y=\"" << y + cell / 2 + 4 << "\">" << (skipped ? "-" : std::to_string(r))
                << "</text>\n";
        }
    }
    svg << "</svg>\n";
    std::ofstream f(out, std::ios::binary);
    f << svg.str();
    if (!f) throw CliError{"cannot write '" + out + "'"};
}

int cmd_inspect(const std::string& path, const std::string& svg) {
    const nlohmann::json d = describe(path);
    if (!svg.empty()) {
        if (d["compression"].value("kv", "none") != "star-kv") throw CliError{"'" + path + "' has no STAR-KV rank map"};
        write_rank_svg(d, svg);
    }
    std::printf("file: %s\nformat version: %s\nsize: %s (%llu bytes)\n", path.c_str(),
                d["format_version"].get<std::string>().c_str(), human(d["file_size"].get<double>()).c_str(),
                d["file_size"].get<unsigned long long>());
    std::printf("required features: %s\ncompression: %s\n", d["required_features"].dump().c_str(),
                d["compression"].dump().c_str());
    if (const auto& c = d["compression"]; c.value("kv", "none") == "star-kv" && c.contains("ranks")) {
        std::printf("STAR-KV rank map (%s, rate %.2f):\n", c["strategy"].get<std::string>().c_str(), c["rate"].get<double>());
        const auto& rk = c["ranks"]["k"];
        const auto& rv = c["ranks"]["v"];
        for (size_t l = 0; l < rk.size(); ++l) {
            if (rk[l].empty()) {
                std::printf("  layer %2zu: skipped (full K/V)\n", l);
                continue;
            }
            std::string ks;
            for (const auto& r : rk[l]) ks += (ks.empty() ? "" : " ") + std::to_string(r.get<int>());
            std::printf("  layer %2zu: k [%s] v %d\n", l, ks.c_str(), rv[l].get<int>());
        }
    }
    if (const auto& c = d["compression"]; c.contains("kv_quant")) {
        const auto& q = c["kv_quant"];
        std::printf("KV quantization plan (avg %.2f bits, block %s, hadamard %s, %s); per latent: width/block "
                    "leading@bits+tail@bits, sym = no zero point, log8 / log8-row = 1-byte scale code per group / per row\n",
                    q["avg_bits"].get<double>(), q["block"].dump().c_str(), q["hadamard"].get<bool>() ? "on" : "off",
                    q["mixed"].get<bool>() ? "mixed" : "uniform");
        auto one = [](const nlohmann::json& p) {
            const int w = p["width"].get<int>();
            if (w == 0) return std::string("fp32");
            const int sp = p["split"].get<int>();
            std::string out = std::to_string(w) + "/" + std::to_string(p["block"].get<int>()) + " ";
            if (sp > 0) out += std::to_string(sp) + "@" + std::to_string(p["hi_bits"].get<int>());
            if (sp > 0 && sp < w) out += "+";
            if (sp < w) out += std::to_string(w - sp) + "@" + std::to_string(p["lo_bits"].get<int>());
            if (p.value("scale", std::string()) == "log8") out += p.value("row_scale", false) ? " log8-row" : " log8";
            else if (!p.value("zero_point", true)) out += " sym";
            return out;
        };
        const auto& layers = q["layers"];
        for (size_t l = 0; l < layers.size(); ++l) {
            if (layers[l].is_null()) continue;
            if (layers[l].contains("plain")) {
                std::printf("  layer %2zu: plain K/V %s per head\n", l, one(layers[l]["plain"]).c_str());
                continue;
            }
            std::string ks;
            for (const auto& k : layers[l]["k"]) ks += (ks.empty() ? "" : ", ") + one(k);
            std::printf("  layer %2zu: k [%s] v %s\n", l, ks.c_str(), one(layers[l]["v"]).c_str());
        }
    }
    std::printf("model: %s\n", d["model"].dump().c_str());
    std::printf("tokenizer: %s\n", d["tokenizer"].dump().c_str());
    std::printf("provenance:\n");
    for (const auto& [k, v] : d["provenance"].items())
        std::printf("  %s: %s\n", k.c_str(), v.is_string() ? v.get<std::string>().c_str() : v.dump().c_str());
    const auto& ts = d["tensors"];
    std::printf("tensors: %zu\n%-32s %-5s %-16s %-5s %12s %12s %7s\n", ts.size(), "name", "dtype", "shape", "codec",
                "stored", "raw", "ratio");
    for (const auto& t : ts) {
        std::string shape;
        for (const auto& dim : t["shape"]) shape += (shape.empty() ? "" : "x") + std::to_string(dim.get<int64_t>());
        const double stored = t["stored_size"].get<double>(), raw = t["raw_size"].get<double>();
        std::printf("%-32s %-5s %-16s %-5s %12llu %12llu %7.2f\n", t["name"].get<std::string>().c_str(),
                    t["dtype"].get<std::string>().c_str(), shape.c_str(), t["codec"].get<std::string>().c_str(),
                    t["stored_size"].get<unsigned long long>(), t["raw_size"].get<unsigned long long>(),
                    stored > 0 ? raw / stored : 0.0);
    }
    const double stored = d["totals"]["stored_size"].get<double>(), raw = d["totals"]["raw_size"].get<double>();
    std::printf("total: stored %s, raw %s, ratio %.2f\n", human(stored).c_str(), human(raw).c_str(),
                stored > 0 ? raw / stored : 0.0);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"starkv: LLM inference with a low-rank KV cache"};
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string(starkv_version_string()));

    RunArgs ra;
    auto* run = app.add_subcommand("run", "generate text from a prompt (stdout: prompt + generated text)");
    run->add_option("--model,-m", ra.model, "GGUF file, bundle or Hugging Face directory")->required();
    run->add_option("--prompt,-p", ra.prompt, "prompt text");
    run->add_option("-n,--n-predict", ra.n, "tokens to generate")->check(CLI::Range(0, 1 << 24));
    run->add_option("--temp", ra.temp, "temperature (0 = greedy)")->check(CLI::Range(0.0, 100.0));
    run->add_option("--top-k", ra.top_k, "top-k (0 = off)")->check(CLI::Range(0, 1 << 24));
    run->add_option("--top-p", ra.top_p, "top-p (1 = off)")->check(CLI::Range(0.0, 1.0));
    run->add_option("--min-p", ra.min_p, "min-p (0 = off)")->check(CLI::Range(0.0, 1.0));
    run->add_option("--repeat-penalty", ra.repeat_penalty, "repetition penalty (1 = off)")->check(CLI::Range(0.01, 100.0));
    run->add_option("--seed,-s", ra.seed, "random seed");
    run->add_option("--ctx,-c", ra.ctx, "context length (0 = model's)")->check(CLI::Range(0u, 1u << 24));
    run->add_option("--threads,-t", ra.threads, "threads (0 = all)")->check(CLI::Range(0u, 1024u));
    run->add_flag("--ignore-eos", ra.ignore_eos, "keep generating after end of sequence");
    run->add_option("--backend", ra.backend, "cpu, cuda or auto (cuda when a GPU is there, else cpu)")
        ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
    run->add_option("--cuda-dtype", ra.cuda_dtype, "GPU weights: bf16 (default, and bf16 KV), f32 or f16 (fp32 KV)")
        ->check(CLI::IsMember({"f32", "bf16", "f16"}));

    std::string pmodel, ptext;
    int pdocs = 0;
    unsigned pctx = 512, pthreads = 0;
    auto* ppl = app.add_subcommand("perplexity", "perplexity over blank-line-separated documents");
    ppl->add_option("--model,-m", pmodel, "GGUF file, bundle or Hugging Face directory")->required();
    ppl->add_option("--text,-f", ptext, "text file")->required();
    ppl->add_option("--docs", pdocs, "use the first N documents (0 = all)")->check(CLI::Range(0, 1 << 30));
    ppl->add_option("--ctx,-c", pctx, "context length; documents are cut to it")->check(CLI::Range(2u, 1u << 24));
    ppl->add_option("--threads,-t", pthreads, "threads (0 = all)")->check(CLI::Range(0u, 1024u));
    std::string pbackend = "cpu";
    ppl->add_option("--backend", pbackend, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
    std::string pdtype;
    ppl->add_option("--cuda-dtype", pdtype, "GPU weights: bf16 (default, and bf16 KV), f32 or f16 (fp32 KV)")->check(CLI::IsMember({"f32", "bf16", "f16"}));

    std::string imodel;
    auto* info = app.add_subcommand("info", "what a model file holds");
    info->add_option("--model,-m", imodel, "GGUF file, bundle or Hugging Face directory")->required();

    std::string pack_in, pack_out;
    int pack_level = 3;
    auto* pack = app.add_subcommand("pack", "write a model as a starkv bundle (.skv)");
    pack->add_option("--model,-m", pack_in, "GGUF file, Hugging Face directory or bundle");
    std::string synthetic;
    int synthetic_layers = 0;
    pack->add_option("--synthetic", synthetic, "instead of --model: random weights of a real shape (speed tests)")
        ->check(CLI::IsMember({"llama2-7b", "llama3-8b"}));
    pack->add_option("--layers", synthetic_layers, "with --synthetic: layers (0 = all)")->check(CLI::Range(0, 1024));
    pack->add_option("--out,-o", pack_out, "bundle to write")->required();
    pack->add_option("--zstd-level", pack_level, "0 = uncompressed, 1..22 (default 3)")->check(CLI::Range(0, 22));
    KvPackArgs kvp;
    pack->add_option("--kv-compress", kvp.rate, "STAR-KV: fraction of the KV cache removed in compressed layers (0 = off)")
        ->check(CLI::Range(0.0, 0.99));
    pack->add_option("--kv-compress-k", kvp.rate_k, "separate key target (with --kv-compress-v) instead of one shared budget")
        ->check(CLI::Range(0.0, 0.99));
    pack->add_option("--kv-compress-v", kvp.rate_v, "separate value target (with --kv-compress-k)")->check(CLI::Range(0.0, 0.99));
    pack->add_option("--calib", kvp.calib, "calibration text (blank-line-separated paragraphs)");
    pack->add_option("--rank-strategy", kvp.strategy, "adaptive (default), uniform or energy")
        ->check(CLI::IsMember({"adaptive", "uniform", "energy"}));
    pack->add_option("--skip-layers", kvp.skip, "layers kept uncompressed: 'none' or e.g. 0,1,29 (default first two and last)");
    pack->add_option("--calib-tokens", kvp.calib_tokens, "calibration tokens (default " + std::to_string(kvp.calib_tokens) + ")")
        ->check(CLI::Range(1, 1 << 26));
    pack->add_option("--kv-bits", kvp.bits, "quantize the latents: average bits per channel, scales included, e.g. 8, 4, 3 (default fp32)")
        ->check(CLI::Range(2.0, 8.0));
    pack->add_option("--hadamard-block", kvp.hadamard, "Hadamard block of the quantized latents: auto (default), 8..128, none")
        ->check(CLI::IsMember({"auto", "none", "8", "16", "32", "64", "128"}));
    pack->add_option("--kv-bits-plain", kvp.plain_bits, "with --kv-bits: K/V of the layers kept plain at 8 or 4 bits (default fp32)")
        ->check(CLI::IsMember({0, 8, 4}));
    pack->add_flag("--kv-bits-uniform", kvp.uniform, "one bit width everywhere (no leading/tail split; ablation)");
    pack->add_option("--kv-bits-probe-tokens", kvp.probe_tokens,
                     "with --kv-bits: tokens to probe each latent's sensitivity on (default " + std::to_string(kvp.probe_tokens) +
                         "; 0 = squared error only)")
        ->check(CLI::Range(0, 1 << 20));
    pack->add_option("--threads,-t", kvp.threads, "threads of the STAR-KV calibration (0 = all)")->check(CLI::Range(0u, 1024u));

    BenchArgs ba;
    auto* bench = app.add_subcommand("bench", "prefill and decode speed beside the memory-bandwidth floor");
    bench->add_option("--model,-m", ba.model, "GGUF file, bundle or Hugging Face directory")->required();
    bench->add_option("--backend", ba.backend, "cpu, cuda or auto (default cuda)")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
    bench->add_option("--batch", ba.batch, "sequences (contexts decoded in turn)")->check(CLI::Range(1, 1024));
    bench->add_option("--ctx", ba.ctx, "prompt tokens per sequence")->check(CLI::Range(1u, 1u << 20));
    bench->add_option("--gen", ba.gen, "decode steps per sequence")->check(CLI::Range(1, 1 << 20));
    bench->add_option("--threads,-t", ba.threads, "CPU threads (0 = all)")->check(CLI::Range(0u, 1024u));
    bench->add_option("--json", ba.json, "also write the results as JSON to this file");
    bench->add_option("--cuda-dtype", ba.cuda_dtype, "GPU weights: bf16 (default, and bf16 KV), f32 or f16 (fp32 KV)")->check(CLI::IsMember({"f32", "bf16", "f16"}));

    std::string inspect_path;
    auto* inspect = app.add_subcommand("inspect", "a bundle's metadata, tensor table and provenance");
    inspect->add_option("bundle", inspect_path, "bundle file (.skv)")->required();
    std::string inspect_svg;
    inspect->add_option("--svg", inspect_svg, "write the STAR-KV rank map as an SVG heat map");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
        // Usage errors: one line on stderr (CLI11's own message adds a second).
        std::fprintf(stderr, "starkv: error: %s (see --help)\n", e.what());
        return e.get_exit_code();
    }
    try {
        if (*run) return cmd_run(ra);
        if (*ppl) return cmd_perplexity(pmodel, ptext, pdocs, pctx, pbackend, pdtype, pthreads);
        if (*info) return cmd_info(imodel);
        if (*pack && !synthetic.empty()) {
            if (!pack_in.empty()) throw CliError{"--synthetic and --model exclude each other"};
            return cmd_pack_synthetic(synthetic, synthetic_layers, kvp.rate, pack_out);
        }
        if (*pack && pack_in.empty()) throw CliError{"pack needs --model (or --synthetic)"};
        if (*pack) return cmd_pack(pack_in, pack_out, pack_level, kvp);
        if (*bench) return cmd_bench(ba);
        if (*inspect) return cmd_inspect(inspect_path, inspect_svg);
    } catch (const CliError& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "starkv: error: %s\n", e.message.c_str());
        return 1;
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "starkv: error: %s\n", e.what());
        return 1;
    }
    return 1;
}
