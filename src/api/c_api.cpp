// The C ABI: argument checks, struct_size handling, and the one place where
// C++ exceptions become status codes and the thread's last-error message.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "backend/cuda_loader.h"
#include "bundle/reader.h"
#include "bundle/writer.h"
#include "core/error.h"
#include "core/log.h"
#include "kv/kv_state.h"
#include "model/context.h"
#include "model/model.h"
#include "model/score.h"
#include "sampling/generate.h"
#include "sampling/sampler.h"
#include "starkv/starkv.h"

struct starkv_model {
    std::shared_ptr<const starkv::Model> model;
};
struct starkv_context {
    std::unique_ptr<starkv::Context> ctx;
    uint64_t seed = 0;
    std::unique_ptr<starkv::Sampler> default_sampler;  // for starkv_generate(ctx, NULL, ...)
};
struct starkv_sampler {
    std::unique_ptr<starkv::Sampler> sampler;
};

namespace {

thread_local std::string t_last_error;

// The message is one line: control characters (a path or a name read from a
// file may hold '\n') are written as \n, \r, \xHH.
starkv_status set_error(starkv_status status, const std::string& message) {
    static const char hex[] = "0123456789abcdef";
    t_last_error.clear();
    for (char ch : message) {
        const auto c = static_cast<unsigned char>(ch);
        if (c >= 0x20 && c != 0x7f) t_last_error += ch;
        else if (c == '\n') t_last_error += "\\n";
        else if (c == '\r') t_last_error += "\\r";
        else if (c == '\t') t_last_error += "\\t";
        else t_last_error += std::string("\\x") + hex[c >> 4] + hex[c & 15];
    }
    return status;
}

// Runs fn, mapping every exception to a status; nothing escapes to C.
template <typename Fn>
starkv_status guarded(Fn&& fn) noexcept {
    try {
        t_last_error.clear();
        fn();
        return STARKV_OK;
    } catch (const starkv::Error& e) {
        return set_error(e.status(), e.what());
    } catch (const std::bad_alloc&) {
        return set_error(STARKV_ERR_OUT_OF_MEMORY, "out of memory");
    } catch (const std::exception& e) {
        return set_error(STARKV_ERR_INTERNAL, std::string("internal error: ") + e.what());
    } catch (...) {
        return set_error(STARKV_ERR_INTERNAL, "internal error");
    }
}

#define STARKV_REQUIRE(cond, what) \
    do {                           \
        if (!(cond)) return set_error(STARKV_ERR_INVALID_ARGUMENT, what); \
    } while (0)

// Copies the caller's params struct (first struct_size bytes) over defaults,
// so older callers with a smaller struct keep working.
template <typename T>
bool read_params(const T* in, T& out) {
    if (!in) return true;
    if (in->struct_size < sizeof(uint32_t) || in->struct_size > 65536) return false;
    std::memcpy(&out, in, std::min<size_t>(in->struct_size, sizeof(T)));
    out.struct_size = sizeof(T);
    return true;
}

// Writes as much of a result struct as the caller's struct_size allows.
template <typename T>
void write_result(const T& full, T* out) {
    const uint32_t n = out->struct_size;
    std::memcpy(out, &full, std::min<size_t>(n, sizeof(T)));
    out->struct_size = n;
}

void copy_cstr(char* dst, size_t cap, const std::string& src) {
    size_t n = std::min(cap - 1, src.size());
    std::memcpy(dst, src.data(), n);
    dst[n] = '\0';
}

starkv_status copy_out(const std::string& bytes, char* buf, size_t capacity, size_t* n_out) {
    *n_out = bytes.size();
    if (bytes.size() > capacity)
        return set_error(STARKV_ERR_BUFFER_TOO_SMALL,
                         "buffer of " + std::to_string(capacity) + " bytes, need " + std::to_string(bytes.size()));
    if (!bytes.empty()) std::memcpy(buf, bytes.data(), bytes.size());
    return STARKV_OK;
}

}  // namespace

extern "C" {

unsigned starkv_version_number(void) { return STARKV_VERSION_NUMBER; }
const char* starkv_version_string(void) { return STARKV_VERSION_STRING; }

const char* starkv_status_name(starkv_status status) {
    switch (status) {
        case STARKV_OK: return "STARKV_OK";
        case STARKV_ERR_INVALID_ARGUMENT: return "STARKV_ERR_INVALID_ARGUMENT";
        case STARKV_ERR_IO: return "STARKV_ERR_IO";
        case STARKV_ERR_CORRUPT: return "STARKV_ERR_CORRUPT";
        case STARKV_ERR_UNSUPPORTED: return "STARKV_ERR_UNSUPPORTED";
        case STARKV_ERR_OUT_OF_MEMORY: return "STARKV_ERR_OUT_OF_MEMORY";
        case STARKV_ERR_CONTEXT_FULL: return "STARKV_ERR_CONTEXT_FULL";
        case STARKV_ERR_CANCELLED: return "STARKV_ERR_CANCELLED";
        case STARKV_ERR_BUFFER_TOO_SMALL: return "STARKV_ERR_BUFFER_TOO_SMALL";
        case STARKV_ERR_KV_POOL_FULL: return "STARKV_ERR_KV_POOL_FULL";
        case STARKV_ERR_INTERNAL: return "STARKV_ERR_INTERNAL";
        case STARKV_ERR_NO_DEVICE: return "STARKV_ERR_NO_DEVICE";
    }
    return "STARKV_ERR_UNKNOWN";
}

const char* starkv_last_error(void) { return t_last_error.c_str(); }

void starkv_set_log_callback(starkv_log_fn fn, void* user_data) { starkv::set_log_callback(fn, user_data); }

/* ---- model ---- */

void starkv_model_params_default(starkv_model_params* p) {
    if (!p) return;
    *p = starkv_model_params{};
    p->struct_size = sizeof(*p);
}

starkv_status starkv_model_load(const char* path, const starkv_model_params* params, starkv_model** out_model) {
    STARKV_REQUIRE(out_model, "out_model is NULL");
    *out_model = nullptr;
    STARKV_REQUIRE(path, "path is NULL");
    starkv_model_params p;
    starkv_model_params_default(&p);
    STARKV_REQUIRE(read_params(params, p), "params->struct_size is invalid (use starkv_model_params_default)");
    return guarded([&] {
        starkv::ProgressFn progress;
        if (p.progress) progress = [&p](float f) { return p.progress(f, p.progress_user_data); };
        auto loaded = starkv::load_model(path, progress);
        auto model = std::make_unique<starkv_model>();
        model->model = std::make_shared<const starkv::Model>(std::move(loaded));
        starkv::log(STARKV_LOG_INFO, std::string("loaded '") + path + "'");
        *out_model = model.release();
    });
}

void starkv_model_free(starkv_model* model) { delete model; }

void starkv_model_info_default(starkv_model_info* info) {
    if (!info) return;
    *info = starkv_model_info{};
    info->struct_size = sizeof(*info);
}

starkv_status starkv_model_get_info(const starkv_model* model, starkv_model_info* info) {
    STARKV_REQUIRE(model, "model is NULL");
    STARKV_REQUIRE(info, "info is NULL");
    STARKV_REQUIRE(info->struct_size >= sizeof(uint32_t), "info->struct_size is not set (use starkv_model_info_default)");
    return guarded([&] {
        const starkv::ModelConfig& c = model->model->config();
        const starkv::Vocab& v = model->model->tokenizer().vocab();
        starkv_model_info r;
        starkv_model_info_default(&r);
        copy_cstr(r.architecture, sizeof r.architecture, c.architecture);
        copy_cstr(r.name, sizeof r.name, c.name);
        copy_cstr(r.format, sizeof r.format, model->model->format());
        r.n_vocab = c.n_vocab;
        r.n_embd = c.n_embd;
        r.n_layer = c.n_layer;
        r.n_head = c.n_head;
        r.n_head_kv = c.n_head_kv;
        r.head_dim = c.head_dim;
        r.n_ff = c.n_ff;
        r.n_ctx_train = c.n_ctx_train;
        r.rope_theta = c.rope.theta;
        r.rope_scaling = static_cast<int32_t>(c.rope.scaling);
        r.rope_scaling_factor = c.rope.factor;
        r.rms_norm_eps = c.rms_eps;
        r.tied_embeddings = c.tied_embeddings;
        r.tokenizer = v.kind == starkv::TokenizerKind::Spm ? STARKV_TOKENIZER_SPM : STARKV_TOKENIZER_BPE;
        r.bos_token = v.bos;
        r.eos_token = v.eos;
        r.unk_token = v.unk;
        r.pad_token = v.pad;
        r.n_params = model->model->n_params();
        write_result(r, info);
    });
}

void starkv_tensor_info_default(starkv_tensor_info* info) {
    if (!info) return;
    *info = starkv_tensor_info{};
    info->struct_size = sizeof(*info);
}

size_t starkv_model_n_tensors(const starkv_model* model) { return model ? model->model->tensors().size() : 0; }

starkv_status starkv_model_tensor(const starkv_model* model, size_t index, starkv_tensor_info* info) {
    STARKV_REQUIRE(model, "model is NULL");
    STARKV_REQUIRE(info, "info is NULL");
    STARKV_REQUIRE(info->struct_size >= sizeof(uint32_t), "info->struct_size is not set (use starkv_tensor_info_default)");
    const auto& tensors = model->model->tensors();
    STARKV_REQUIRE(index < tensors.size(), "tensor index out of range");
    return guarded([&] {
        const starkv::TensorInfo& t = tensors[index];
        starkv_tensor_info r;
        starkv_tensor_info_default(&r);
        copy_cstr(r.name, sizeof r.name, t.name);
        copy_cstr(r.dtype, sizeof r.dtype, t.dtype);
        r.n_dims = static_cast<int32_t>(std::min<size_t>(t.shape.size(), 4));
        for (int32_t d = 0; d < r.n_dims; ++d) r.shape[d] = t.shape[static_cast<size_t>(d)];
        r.offset = t.offset;
        r.n_bytes = t.n_bytes;
        write_result(r, info);
    });
}

/* ---- bundles ---- */

void starkv_pack_params_default(starkv_pack_params* p) {
    if (!p) return;
    *p = starkv_pack_params{};
    p->struct_size = sizeof(*p);
    p->zstd_level = 3;
    p->calib_tokens = 16384;
    p->kv_bits_probe_tokens = 512;
}

// 0.1.0 binaries call the filler on the 0.1.0 struct (up to kv_compress_v):
// it writes that much and no more (abi/README.md).
extern "C" __attribute__((visibility("default"))) void pack_params_default_v0(starkv_pack_params* p) {
    if (!p) return;
    starkv_pack_params full;
    starkv_pack_params_default(&full);
    full.struct_size = static_cast<uint32_t>(offsetof(starkv_pack_params, kv_bits));
    std::memcpy(p, &full, offsetof(starkv_pack_params, kv_bits));
}
__asm__(".symver pack_params_default_v0,starkv_pack_params_default@STARKV_0");
__asm__(".symver starkv_pack_params_default,starkv_pack_params_default@@@STARKV_0.2");

starkv_status starkv_pack(const char* in_path, const char* out_path, const starkv_pack_params* params) {
    STARKV_REQUIRE(in_path, "in_path is NULL");
    STARKV_REQUIRE(out_path, "out_path is NULL");
    starkv_pack_params p;
    starkv_pack_params_default(&p);
    STARKV_REQUIRE(read_params(params, p), "params->struct_size is invalid (use starkv_pack_params_default)");
    return guarded([&] {
        if (p.kv_bits_plain != 0 && p.kv_bits == 0.0f)
            starkv::fail(STARKV_ERR_INVALID_ARGUMENT, "kv_bits_plain needs kv_bits");
        if (p.kv_bits != 0.0f && p.kv_compress == 0.0f)
            starkv::fail(STARKV_ERR_INVALID_ARGUMENT, "kv_bits quantizes STAR-KV latents: it needs kv_compress");
        starkv::PackOptions opt;
        opt.zstd_level = p.zstd_level;
        if (p.progress) opt.progress = [&p](float f) { return p.progress(f, p.progress_user_data); };
        if (p.kv_compress != 0.0f) {
            if (!(p.kv_compress > 0.0f && p.kv_compress < 1.0f))
                starkv::fail(STARKV_ERR_INVALID_ARGUMENT, "kv_compress must be in [0, 1)");
            if (!p.calib_path) starkv::fail(STARKV_ERR_INVALID_ARGUMENT, "kv_compress needs calib_path");
            starkv::lowrank::Options kv;
            kv.rate = p.kv_compress;
            if (p.rank_strategy) kv.strategy = starkv::lowrank::parse_strategy(p.rank_strategy);
            if (p.calib_tokens < 1) starkv::fail(STARKV_ERR_INVALID_ARGUMENT, "calib_tokens must be positive");
            if (p.n_threads < 0 || p.n_threads > 1024) starkv::fail(STARKV_ERR_INVALID_ARGUMENT, "n_threads must be in [0, 1024]");
            kv.n_threads = p.n_threads;
            kv.calib_tokens = p.calib_tokens;
            if (p.kv_compress_k != 0.0f || p.kv_compress_v != 0.0f) {
                if (!(p.kv_compress_k > 0.0f && p.kv_compress_k < 1.0f && p.kv_compress_v > 0.0f && p.kv_compress_v < 1.0f))
                    starkv::fail(STARKV_ERR_INVALID_ARGUMENT, "kv_compress_k and kv_compress_v must both be in (0, 1)");
                kv.key_rate = p.kv_compress_k;
                kv.value_rate = p.kv_compress_v;
            }
            if (p.skip_layers) {
                kv.default_skip = false;
                const std::string list = p.skip_layers;
                if (list != "none") {
                    size_t i = 0;
                    while (i <= list.size()) {
                        const size_t j = std::min(list.find(',', i), list.size());
                        const std::string item = list.substr(i, j - i);
                        if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos || item.size() > 6)
                            starkv::fail(STARKV_ERR_INVALID_ARGUMENT, "skip_layers '" + list + "' is not 'none' or a comma-separated list of layers");
                        kv.skip_layers.push_back(std::stoi(item));
                        i = j + 1;
                    }
                }
            }
            if (p.kv_bits != 0.0f) {
                if (!(p.kv_bits >= 2.0f && p.kv_bits <= 8.0f)) starkv::fail(STARKV_ERR_INVALID_ARGUMENT, "kv_bits must be in [2, 8]");
                kv.quant.avg_bits = p.kv_bits;
                kv.quant.hadamard = p.hadamard_block >= 0;
                kv.quant.block = std::max(p.hadamard_block, 0);
                kv.quant.mixed = p.kv_bits_uniform == 0;
                if (p.kv_bits_plain != 0 && p.kv_bits_plain != 8 && p.kv_bits_plain != 4)
                    starkv::fail(STARKV_ERR_INVALID_ARGUMENT, "kv_bits_plain must be 0, 8 or 4");
                kv.quant.plain_bits = p.kv_bits_plain;
                if (p.kv_bits_probe_tokens < 0) starkv::fail(STARKV_ERR_INVALID_ARGUMENT, "kv_bits_probe_tokens must be >= 0");
                kv.quant.probe_tokens = p.kv_bits_probe_tokens;
            }
            opt.kv = kv;
            opt.calib_path = p.calib_path;
        }
        starkv::pack_bundle(in_path, out_path, opt);
    });
}

starkv_status starkv_pack_synthetic(const char* shape, int32_t n_layers, float kv_compress, const char* out_path) {
    STARKV_REQUIRE(shape, "shape is NULL");
    STARKV_REQUIRE(out_path, "out_path is NULL");
    return guarded([&] {
        starkv::PackOptions opt;
        opt.zstd_level = 0;  // random weights do not compress
        starkv::pack_synthetic(shape, n_layers, kv_compress, out_path, opt);
    });
}

starkv_status starkv_bundle_describe(const char* path, char* json_buf, size_t capacity, size_t* n_out) {
    STARKV_REQUIRE(n_out, "n_out is NULL");
    *n_out = 0;
    STARKV_REQUIRE(path, "path is NULL");
    STARKV_REQUIRE(json_buf || capacity == 0, "json_buf is NULL");
    std::string doc;
    starkv_status g = guarded([&] { doc = starkv::describe_bundle(path); });
    return g != STARKV_OK ? g : copy_out(doc, json_buf, capacity, n_out);
}

/* ---- tokenizer ---- */

starkv_status starkv_tokenize(const starkv_model* model, const char* text, size_t len, bool add_bos,
                              bool parse_special, starkv_token* tokens, size_t capacity, size_t* n_out) {
    STARKV_REQUIRE(model, "model is NULL");
    STARKV_REQUIRE(n_out, "n_out is NULL");
    *n_out = 0;
    STARKV_REQUIRE(text || len == 0, "text is NULL");
    STARKV_REQUIRE(tokens || capacity == 0, "tokens is NULL");
    starkv_status st = STARKV_OK;
    starkv_status g = guarded([&] {
        std::vector<int32_t> ids =
            model->model->tokenizer().tokenize(std::string_view(text ? text : "", len), add_bos, parse_special);
        *n_out = ids.size();
        if (ids.size() > capacity) {
            st = set_error(STARKV_ERR_BUFFER_TOO_SMALL, "token buffer of " + std::to_string(capacity) +
                                                            ", need " + std::to_string(ids.size()));
            return;
        }
        std::copy(ids.begin(), ids.end(), tokens);
    });
    return g != STARKV_OK ? g : st;
}

starkv_status starkv_token_to_piece(const starkv_model* model, starkv_token token, bool render_special, char* buf,
                                    size_t capacity, size_t* n_out) {
    STARKV_REQUIRE(model, "model is NULL");
    STARKV_REQUIRE(n_out, "n_out is NULL");
    *n_out = 0;
    STARKV_REQUIRE(buf || capacity == 0, "buf is NULL");
    STARKV_REQUIRE(token >= 0 && token < model->model->tokenizer().n_vocab(), "token id out of range");
    std::string piece;
    starkv_status g = guarded([&] { piece = model->model->tokenizer().token_to_piece(token, render_special); });
    return g != STARKV_OK ? g : copy_out(piece, buf, capacity, n_out);
}

starkv_status starkv_detokenize(const starkv_model* model, const starkv_token* tokens, size_t n_tokens, char* buf,
                                size_t capacity, size_t* n_out) {
    STARKV_REQUIRE(model, "model is NULL");
    STARKV_REQUIRE(n_out, "n_out is NULL");
    *n_out = 0;
    STARKV_REQUIRE(tokens || n_tokens == 0, "tokens is NULL");
    STARKV_REQUIRE(buf || capacity == 0, "buf is NULL");
    const int32_t n_vocab = model->model->tokenizer().n_vocab();
    for (size_t i = 0; i < n_tokens; ++i)
        STARKV_REQUIRE(tokens[i] >= 0 && tokens[i] < n_vocab, "token id out of range");
    std::string text;
    starkv_status g = guarded([&] {
        text = model->model->tokenizer().detokenize(std::vector<int32_t>(tokens, tokens + n_tokens));
    });
    return g != STARKV_OK ? g : copy_out(text, buf, capacity, n_out);
}

/* ---- context ---- */

void starkv_context_params_default(starkv_context_params* p) {
    if (!p) return;
    *p = starkv_context_params{};
    p->struct_size = sizeof(*p);
    p->n_ctx = 0;
    p->n_threads = 0;
    p->seed = 0;
}

// 0.1.0 binaries call the filler on the 0.1.0 struct (up to device): it
// writes that much and no more (abi/README.md).
extern "C" __attribute__((visibility("default"))) void context_params_default_v0(starkv_context_params* p) {
    if (!p) return;
    starkv_context_params full;
    starkv_context_params_default(&full);
    full.struct_size = static_cast<uint32_t>(offsetof(starkv_context_params, device_memory_limit));
    std::memcpy(p, &full, offsetof(starkv_context_params, device_memory_limit));
}
__asm__(".symver context_params_default_v0,starkv_context_params_default@STARKV_0");
__asm__(".symver starkv_context_params_default,starkv_context_params_default@@@STARKV_0.2");

starkv_status starkv_context_create(const starkv_model* model, const starkv_context_params* params,
                                    starkv_context** out_ctx) {
    // The default pool: n_ctx tokens of one sequence (what a context always held).
    return starkv_context_create_pooled(model, params, nullptr, out_ctx);
}

void starkv_context_free(starkv_context* ctx) { delete ctx; }

starkv_status starkv_context_eval(starkv_context* ctx, const starkv_token* tokens, size_t n_tokens, bool all_logits) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    STARKV_REQUIRE(tokens, "tokens is NULL");
    return guarded([&] { ctx->ctx->eval(tokens, n_tokens, all_logits); });
}

starkv_status starkv_context_set_abort_callback(starkv_context* ctx, starkv_abort_fn fn, void* user_data) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    return guarded([&] {
        if (fn) ctx->ctx->set_abort([fn, user_data] { return fn(user_data); });
        else ctx->ctx->set_abort(nullptr);
    });
}

starkv_status starkv_context_decode(starkv_context* ctx, starkv_token token) {
    return starkv_context_eval(ctx, &token, 1, false);
}

starkv_status starkv_context_logits(const starkv_context* ctx, int32_t i, const float** out_logits) {
    STARKV_REQUIRE(out_logits, "out_logits is NULL");
    *out_logits = nullptr;
    STARKV_REQUIRE(ctx, "ctx is NULL");
    const float* l = ctx->ctx->logits(i);
    if (!l) return set_error(STARKV_ERR_INVALID_ARGUMENT, "no logits for index " + std::to_string(i) + " of the last eval");
    *out_logits = l;
    return STARKV_OK;
}

uint32_t starkv_context_n_past(const starkv_context* ctx) { return ctx ? static_cast<uint32_t>(ctx->ctx->n_past()) : 0; }
uint32_t starkv_context_n_ctx(const starkv_context* ctx) { return ctx ? static_cast<uint32_t>(ctx->ctx->n_ctx()) : 0; }

starkv_status starkv_context_reset(starkv_context* ctx) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    return guarded([&] {
        ctx->ctx->reset();
        if (ctx->default_sampler) ctx->default_sampler->reset();
    });
}

starkv_status starkv_context_rewind(starkv_context* ctx, uint32_t n_past) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    STARKV_REQUIRE(n_past <= static_cast<uint32_t>(ctx->ctx->n_past()), "cannot rewind past the current position");
    return guarded([&] { ctx->ctx->rewind(static_cast<int>(n_past)); });
}

starkv_status starkv_context_score(starkv_context* ctx, const starkv_token* tokens, size_t n_tokens,
                                   double* out_nll_sum, size_t* out_n_scored) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    STARKV_REQUIRE(tokens, "tokens is NULL");
    STARKV_REQUIRE(out_nll_sum && out_n_scored, "output pointer is NULL");
    return guarded([&] {
        starkv::ScoreResult r = starkv::score_tokens(*ctx->ctx, tokens, n_tokens);
        *out_nll_sum = r.nll_sum;
        *out_n_scored = r.n_scored;
    });
}

void starkv_kv_stats_default(starkv_kv_stats* s) {
    if (!s) return;
    *s = starkv_kv_stats{};
    s->struct_size = sizeof(*s);
}

starkv_status starkv_context_kv_stats(const starkv_context* ctx, starkv_kv_stats* stats) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    STARKV_REQUIRE(stats, "stats is NULL");
    STARKV_REQUIRE(stats->struct_size >= sizeof(uint32_t), "stats->struct_size is not set (use starkv_kv_stats_default)");
    starkv_kv_stats r;
    starkv_kv_stats_default(&r);
    const starkv::Context& c = *ctx->ctx;
    r.n_tokens = static_cast<uint32_t>(c.n_past());
    r.n_ctx = static_cast<uint32_t>(c.n_ctx());
    r.bytes_per_token = c.kv_bytes_per_token();
    r.bytes_in_use = r.bytes_per_token * r.n_tokens;
    r.bytes_reserved = c.kv_bytes_reserved();
    r.device_bytes = c.device_bytes();
    r.bytes_per_token_uncompressed = c.kv_bytes_per_token_uncompressed();
    write_result(r, stats);
    return STARKV_OK;
}

starkv_status starkv_context_device_weight_bytes(const starkv_context* ctx, uint64_t* out_bytes) {
    STARKV_REQUIRE(out_bytes, "out_bytes is NULL");
    *out_bytes = 0;
    STARKV_REQUIRE(ctx, "ctx is NULL");
    *out_bytes = ctx->ctx->device_weight_bytes();
    return STARKV_OK;
}

starkv_status starkv_device_copy_bandwidth(int32_t device, double* out_bytes_per_second) {
    STARKV_REQUIRE(out_bytes_per_second, "out_bytes_per_second is NULL");
    *out_bytes_per_second = 0;
    return guarded([&] { *out_bytes_per_second = starkv::backend::copy_bandwidth(device); });
}

/* ---- sequences, batches, saved state ---- */

void starkv_pool_params_default(starkv_pool_params* p) {
    if (!p) return;
    *p = starkv_pool_params{};
    p->struct_size = sizeof(*p);
    starkv::ContextOptions d;
    p->page_tokens = static_cast<uint32_t>(d.page_tokens);
    p->budget_bytes = d.kv_budget_bytes;
    p->max_sequences = static_cast<uint32_t>(d.max_sequences);
    p->prefix_caching = d.prefix_caching;
    p->evict_cached_prefixes = d.evict_cached_prefixes;
}

starkv_status starkv_context_create_pooled(const starkv_model* model, const starkv_context_params* params,
                                           const starkv_pool_params* pool, starkv_context** out_ctx) {
    STARKV_REQUIRE(out_ctx, "out_ctx is NULL");
    *out_ctx = nullptr;
    STARKV_REQUIRE(model, "model is NULL");
    starkv_context_params p;
    starkv_context_params_default(&p);
    STARKV_REQUIRE(read_params(params, p), "params->struct_size is invalid (use starkv_context_params_default)");
    starkv_pool_params q;
    starkv_pool_params_default(&q);
    STARKV_REQUIRE(read_params(pool, q), "pool->struct_size is invalid (use starkv_pool_params_default)");
    STARKV_REQUIRE(p.n_ctx <= (1u << 24), "n_ctx is too large");
    STARKV_REQUIRE(p.n_threads <= 1024, "n_threads is too large");
    STARKV_REQUIRE(p.backend >= STARKV_BACKEND_CPU && p.backend <= STARKV_BACKEND_AUTO, "backend is not a STARKV_BACKEND_*");
    STARKV_REQUIRE(p.device >= 0, "device must not be negative");
    STARKV_REQUIRE(p.device_type >= STARKV_DEVICE_TYPE_DEFAULT && p.device_type <= STARKV_DEVICE_TYPE_F16,
                   "device_type is not a STARKV_DEVICE_TYPE_*");
    STARKV_REQUIRE(q.page_tokens >= 1 && q.page_tokens <= 4096, "pool->page_tokens is not in [1, 4096]");
    STARKV_REQUIRE(q.max_sequences >= 1 && q.max_sequences <= (1u << 20), "pool->max_sequences is not in [1, 2^20]");
    return guarded([&] {
        starkv::ContextOptions o;
        o.n_ctx = static_cast<int>(p.n_ctx);
        o.n_threads = static_cast<int>(p.n_threads);
        o.backend = p.backend;
        o.device = p.device;
        o.device_memory_limit = p.device_memory_limit;
        o.device_type = p.device_type;
        o.page_tokens = static_cast<int>(q.page_tokens);
        o.kv_budget_bytes = q.budget_bytes;
        o.max_sequences = static_cast<int>(q.max_sequences);
        o.prefix_caching = q.prefix_caching;
        o.evict_cached_prefixes = q.evict_cached_prefixes;
        auto ctx = std::make_unique<starkv_context>();
        ctx->ctx = std::make_unique<starkv::Context>(model->model, o);
        ctx->seed = p.seed;
        *out_ctx = ctx.release();
    });
}

starkv_status starkv_seq_create(starkv_context* ctx, starkv_seq_id seq) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    return guarded([&] { ctx->ctx->seq_create(seq); });
}

starkv_status starkv_seq_remove(starkv_context* ctx, starkv_seq_id seq) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    return guarded([&] { ctx->ctx->seq_remove(seq); });
}

starkv_status starkv_seq_truncate(starkv_context* ctx, starkv_seq_id seq, uint32_t n_past) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    STARKV_REQUIRE(n_past <= (1u << 24), "n_past is too large");
    return guarded([&] { ctx->ctx->seq_truncate(seq, static_cast<int>(n_past)); });
}

starkv_status starkv_seq_fork(starkv_context* ctx, starkv_seq_id src, starkv_seq_id dst) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    return guarded([&] { ctx->ctx->seq_fork(src, dst); });
}

starkv_status starkv_seq_n_past(const starkv_context* ctx, starkv_seq_id seq, uint32_t* out_n_past) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    STARKV_REQUIRE(out_n_past, "out_n_past is NULL");
    return guarded([&] { *out_n_past = static_cast<uint32_t>(ctx->ctx->seq_n_past(seq)); });
}

starkv_status starkv_seq_prefill(starkv_context* ctx, starkv_seq_id seq, const starkv_token* tokens, size_t n_tokens,
                                 size_t* out_n_reused) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    STARKV_REQUIRE(tokens, "tokens is NULL");
    return guarded([&] {
        const int reused = ctx->ctx->seq_prefill(seq, tokens, n_tokens);
        if (out_n_reused) *out_n_reused = static_cast<size_t>(reused);
    });
}

starkv_status starkv_batch_eval(starkv_context* ctx, const starkv_batch_item* items, size_t n) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    STARKV_REQUIRE(items || n == 0, "items is NULL");
    STARKV_REQUIRE(n <= (1u << 24), "too many batch items");
    return guarded([&] {
        std::vector<starkv::BatchItem> v(n);
        for (size_t i = 0; i < n; ++i) {
            if (items[i].pos > (1u << 24)) starkv::fail(STARKV_ERR_INVALID_ARGUMENT, "item " + std::to_string(i) + ": pos is too large");
            v[i] = {items[i].token, items[i].seq, static_cast<int32_t>(items[i].pos), items[i].logits};
        }
        ctx->ctx->eval_batch(v);
    });
}

starkv_status starkv_batch_logits(const starkv_context* ctx, size_t i, const float** out_logits) {
    STARKV_REQUIRE(out_logits, "out_logits is NULL");
    *out_logits = nullptr;
    STARKV_REQUIRE(ctx, "ctx is NULL");
    const float* l = ctx->ctx->batch_logits(i);
    if (!l) return set_error(STARKV_ERR_INVALID_ARGUMENT, "no logits for item " + std::to_string(i) + " of the last batch");
    *out_logits = l;
    return STARKV_OK;
}

starkv_status starkv_seq_logits(const starkv_context* ctx, starkv_seq_id seq, const float** out_logits) {
    STARKV_REQUIRE(out_logits, "out_logits is NULL");
    *out_logits = nullptr;
    STARKV_REQUIRE(ctx, "ctx is NULL");
    const float* l = ctx->ctx->seq_logits(seq);
    if (!l) return set_error(STARKV_ERR_INVALID_ARGUMENT, "no logits for sequence " + std::to_string(seq));
    *out_logits = l;
    return STARKV_OK;
}

void starkv_pool_stats_default(starkv_pool_stats* s) {
    if (!s) return;
    *s = starkv_pool_stats{};
    s->struct_size = sizeof(*s);
}

starkv_status starkv_context_pool_stats(const starkv_context* ctx, starkv_pool_stats* stats) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    STARKV_REQUIRE(stats, "stats is NULL");
    STARKV_REQUIRE(stats->struct_size >= sizeof(uint32_t), "stats->struct_size is not set (use starkv_pool_stats_default)");
    return guarded([&] {
        const starkv::Context& c = *ctx->ctx;
        const starkv::PagePoolStats p = c.pool_stats();
        starkv_pool_stats r;
        starkv_pool_stats_default(&r);
        r.page_tokens = p.page_tokens;
        r.page_bytes = p.page_bytes;
        r.n_sequences = p.n_sequences;
        r.pages_total = p.pages_total;
        r.pages_used = p.pages_used;
        r.pages_cached = p.pages_cached;
        r.pages_free = p.pages_free;
        r.bytes_budget = p.bytes_budget;
        r.bytes_allocated = p.bytes_allocated;
        r.bytes_used = p.bytes_used;
        r.capacity_tokens = p.capacity_tokens;
        r.tokens = p.tokens;
        r.compression_ratio = static_cast<double>(c.kv_bytes_per_token_uncompressed()) /
                              static_cast<double>(c.kv_bytes_per_token());
        r.prefix_queried_tokens = p.prefix_queried_tokens;
        r.prefix_hit_tokens = p.prefix_hit_tokens;
        r.evictions = p.evictions;
        r.cow_copies = p.cow_copies;
        write_result(r, stats);
    });
}

starkv_status starkv_state_save(const starkv_context* ctx, const starkv_seq_id* seqs, size_t n_seqs, void* buf,
                                size_t capacity, size_t* n_out) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    STARKV_REQUIRE(n_out, "n_out is NULL");
    STARKV_REQUIRE(seqs || n_seqs == 0, "seqs is NULL");
    *n_out = 0;
    std::vector<uint8_t> state;
    const starkv_status st = guarded([&] {
        state = ctx->ctx->save_state(std::span<const starkv::SeqId>(seqs, seqs ? n_seqs : 0));
    });
    if (st != STARKV_OK) return st;
    *n_out = state.size();
    if (!buf || capacity < state.size())
        return set_error(STARKV_ERR_BUFFER_TOO_SMALL, "the state needs " + std::to_string(state.size()) + " bytes");
    std::memcpy(buf, state.data(), state.size());
    return STARKV_OK;
}

starkv_status starkv_state_save_file(const starkv_context* ctx, const starkv_seq_id* seqs, size_t n_seqs,
                                     const char* path) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    STARKV_REQUIRE(path, "path is NULL");
    STARKV_REQUIRE(seqs || n_seqs == 0, "seqs is NULL");
    return guarded([&] {
        const std::vector<uint8_t> state =
            ctx->ctx->save_state(std::span<const starkv::SeqId>(seqs, seqs ? n_seqs : 0));
        starkv::write_kv_state_file(path, state);
    });
}

starkv_status starkv_state_restore(starkv_context* ctx, const void* buf, size_t n, starkv_seq_id target) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    STARKV_REQUIRE(buf || n == 0, "buf is NULL");
    return guarded([&] {
        ctx->ctx->restore_state(std::span<const uint8_t>(static_cast<const uint8_t*>(buf), n), target);
    });
}

starkv_status starkv_state_restore_file(starkv_context* ctx, const char* path, starkv_seq_id target) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    STARKV_REQUIRE(path, "path is NULL");
    return guarded([&] {
        const starkv::PagePoolStats st = ctx->ctx->pool_stats();
        // No valid state is larger than its rows uncompressed plus headers.
        const uint64_t limit = st.capacity_tokens * (ctx->ctx->kv_bytes_per_token() + 64) + (64u << 20);
        const std::vector<uint8_t> state = starkv::read_kv_state_file(path, limit);
        ctx->ctx->restore_state(state, target);
    });
}

/* ---- sampler ---- */

void starkv_sampler_params_default(starkv_sampler_params* p) {
    if (!p) return;
    *p = starkv_sampler_params{};
    p->struct_size = sizeof(*p);
    starkv::SamplerOptions d;
    p->temperature = d.temperature;
    p->top_k = d.top_k;
    p->top_p = d.top_p;
    p->min_p = d.min_p;
    p->repeat_penalty = d.repeat_penalty;
    p->presence_penalty = d.presence_penalty;
    p->frequency_penalty = d.frequency_penalty;
    p->penalty_last_n = d.penalty_last_n;
    p->seed = d.seed;
}

starkv_status starkv_sampler_create(const starkv_sampler_params* params, starkv_sampler** out_sampler) {
    STARKV_REQUIRE(out_sampler, "out_sampler is NULL");
    *out_sampler = nullptr;
    starkv_sampler_params p;
    starkv_sampler_params_default(&p);
    STARKV_REQUIRE(read_params(params, p), "params->struct_size is invalid (use starkv_sampler_params_default)");
    STARKV_REQUIRE(p.temperature == p.temperature && p.top_p == p.top_p && p.min_p == p.min_p, "NaN sampler parameter");
    STARKV_REQUIRE(p.repeat_penalty > 0.0f, "repeat_penalty must be positive");
    return guarded([&] {
        starkv::SamplerOptions o;
        o.temperature = p.temperature;
        o.top_k = p.top_k;
        o.top_p = p.top_p;
        o.min_p = p.min_p;
        o.repeat_penalty = p.repeat_penalty;
        o.presence_penalty = p.presence_penalty;
        o.frequency_penalty = p.frequency_penalty;
        o.penalty_last_n = p.penalty_last_n;
        o.seed = p.seed;
        auto s = std::make_unique<starkv_sampler>();
        s->sampler = std::make_unique<starkv::Sampler>(o);
        *out_sampler = s.release();
    });
}

void starkv_sampler_free(starkv_sampler* sampler) { delete sampler; }

starkv_status starkv_sampler_sample(starkv_sampler* sampler, const float* logits, size_t n_vocab,
                                    starkv_token* out_token) {
    STARKV_REQUIRE(sampler, "sampler is NULL");
    STARKV_REQUIRE(logits, "logits is NULL");
    STARKV_REQUIRE(out_token, "out_token is NULL");
    STARKV_REQUIRE(n_vocab > 0 && n_vocab <= (1u << 24), "n_vocab out of range");
    return guarded([&] { *out_token = sampler->sampler->sample(logits, static_cast<int>(n_vocab)); });
}

starkv_status starkv_sampler_accept(starkv_sampler* sampler, starkv_token token) {
    STARKV_REQUIRE(sampler, "sampler is NULL");
    return guarded([&] { sampler->sampler->accept(token); });
}

starkv_status starkv_sampler_reset(starkv_sampler* sampler) {
    STARKV_REQUIRE(sampler, "sampler is NULL");
    return guarded([&] { sampler->sampler->reset(); });
}

/* ---- generation ---- */

void starkv_generate_params_default(starkv_generate_params* p) {
    if (!p) return;
    *p = starkv_generate_params{};
    p->struct_size = sizeof(*p);
    p->max_tokens = 128;
    p->stop_at_eos = true;
}

void starkv_generate_result_default(starkv_generate_result* r) {
    if (!r) return;
    *r = starkv_generate_result{};
    r->struct_size = sizeof(*r);
}

starkv_status starkv_generate(starkv_context* ctx, starkv_sampler* sampler, const starkv_token* prompt,
                              size_t n_prompt, const starkv_generate_params* params, starkv_generate_result* result) {
    STARKV_REQUIRE(ctx, "ctx is NULL");
    STARKV_REQUIRE(prompt || n_prompt == 0, "prompt is NULL");
    STARKV_REQUIRE(!result || result->struct_size >= sizeof(uint32_t), "result->struct_size is not set");
    starkv_generate_params p;
    starkv_generate_params_default(&p);
    STARKV_REQUIRE(read_params(params, p), "params->struct_size is invalid (use starkv_generate_params_default)");
    STARKV_REQUIRE(p.max_tokens >= 0, "max_tokens must not be negative");
    return guarded([&] {
        starkv::PieceFn fn;
        if (p.on_piece)
            fn = [&p](const std::string& piece, int32_t token) {
                return p.on_piece(piece.data(), piece.size(), token, p.user_data);
            };
        if (!sampler && !ctx->default_sampler) {
            starkv::SamplerOptions o;
            o.seed = ctx->seed;
            ctx->default_sampler = std::make_unique<starkv::Sampler>(o);
        }
        starkv::Sampler& chosen = sampler ? *sampler->sampler : *ctx->default_sampler;
        starkv::GenerateResult g = starkv::generate(*ctx->ctx, chosen,
                                                    std::vector<int32_t>(prompt, prompt + n_prompt), p.max_tokens,
                                                    p.stop_at_eos, fn);
        if (result) {
            starkv_generate_result r;
            starkv_generate_result_default(&r);
            r.n_prompt_tokens = static_cast<uint32_t>(g.n_prompt);
            r.n_generated = static_cast<uint32_t>(g.n_generated);
            r.stop_reason = static_cast<int32_t>(g.stop);
            r.prompt_seconds = g.prompt_seconds;
            r.decode_seconds = g.decode_seconds;
            write_result(r, result);
        }
    });
}

}  // extern "C"
