/**
 * @file starkv/starkv.h
 * @brief starkv: embeddable LLM inference runtime with a low-rank (STAR-KV) KV cache.
 * Public C ABI (C11). Everything exported starts with starkv_ / STARKV_.
 *
 * Conventions
 *  - Every fallible call returns a starkv_status; on failure starkv_last_error()
 *    returns a one-line message for the calling thread (valid until the next
 *    starkv call on that thread).
 *  - Params structs carry struct_size: fill them with the matching *_default()
 *    function, then change what you need. A library that knows a larger struct
 *    reads only the first struct_size bytes, so old callers keep working.
 *  - Every *_free() accepts NULL and does nothing.
 *  - The library never aborts, exits or writes to stdout/stderr; diagnostics go
 *    to the log callback set with starkv_set_log_callback().
 *
 * Thread safety
 *  - A loaded starkv_model is immutable: share it across any number of threads
 *    and contexts. Free it only after every context created from it is freed.
 *  - A starkv_context or starkv_sampler is used by one thread at a time (it may
 *    move between threads). Different contexts may run concurrently.
 *  - starkv_set_log_callback() is safe to call at any time; the callback may be
 *    invoked from any thread that calls into the library.
 */
#ifndef STARKV_H
#define STARKV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(SWIG)
#define STARKV_API
#elif defined(_WIN32)
#if defined(STARKV_BUILDING)
#define STARKV_API __declspec(dllexport)
#else
#define STARKV_API __declspec(dllimport)
#endif
#else
#define STARKV_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Version ------------------------------------------------------------ */
#define STARKV_VERSION_MAJOR 0
#define STARKV_VERSION_MINOR 1
#define STARKV_VERSION_PATCH 0
#define STARKV_VERSION_NUMBER \
    (STARKV_VERSION_MAJOR * 10000 + STARKV_VERSION_MINOR * 100 + STARKV_VERSION_PATCH)
#define STARKV_VERSION_STRING "0.1.0"

/** Runtime version of the loaded library: compare with STARKV_VERSION_NUMBER
 * to detect a header/library mismatch (the major versions must be equal). */
STARKV_API unsigned starkv_version_number(void);
STARKV_API const char *starkv_version_string(void);

/* ---- Status and errors -------------------------------------------------- */
typedef enum starkv_status {
    STARKV_OK = 0,
    STARKV_ERR_INVALID_ARGUMENT = 1, /**< null pointer, out-of-range value */
    STARKV_ERR_IO = 2,               /**< missing file, unreadable path */
    STARKV_ERR_CORRUPT = 3,          /**< wrong magic, truncated or inconsistent file */
    STARKV_ERR_UNSUPPORTED = 4,      /**< valid file, but a model/feature we do not run */
    STARKV_ERR_OUT_OF_MEMORY = 5,
    STARKV_ERR_CONTEXT_FULL = 6,     /**< the tokens do not fit in the context */
    STARKV_ERR_CANCELLED = 7,        /**< a callback asked to stop */
    STARKV_ERR_BUFFER_TOO_SMALL = 8, /**< output buffer too small; *n_out has the size needed */
    STARKV_ERR_KV_POOL_FULL = 9,     /**< no free KV pages left */
    STARKV_ERR_INTERNAL = 10,
    STARKV_ERR_NO_DEVICE = 11        /**< a GPU backend was asked for: no driver, device or backend library */
} starkv_status;

/** Static name of a status ("STARKV_ERR_IO", ...); never NULL. */
STARKV_API const char *starkv_status_name(starkv_status status);
/** Message of the last failed call on this thread ("" if none); never NULL. */
STARKV_API const char *starkv_last_error(void);

/* ---- Logging ------------------------------------------------------------ */
typedef enum starkv_log_level {
    STARKV_LOG_DEBUG = 0,
    STARKV_LOG_INFO = 1,
    STARKV_LOG_WARN = 2,
    STARKV_LOG_ERROR = 3
} starkv_log_level;
typedef void (*starkv_log_fn)(starkv_log_level level, const char *message, void *user_data);
/** Process-wide. NULL (the default) discards all log messages. */
STARKV_API void starkv_set_log_callback(starkv_log_fn fn, void *user_data);

/* ---- Model -------------------------------------------------------------- */
typedef struct starkv_model starkv_model;
typedef int32_t starkv_token;

/** Called during a load with progress in [0, 1]; return false to cancel the
 * load (it then fails with STARKV_ERR_CANCELLED). */
typedef bool (*starkv_progress_fn)(float progress, void *user_data);

typedef struct starkv_model_params {
    uint32_t struct_size;
    starkv_progress_fn progress; /**< optional */
    void *progress_user_data;
} starkv_model_params;
STARKV_API void starkv_model_params_default(starkv_model_params *params);

/** path: a GGUF file, a starkv bundle (.skv, see starkv_pack) or a Hugging Face
 * model directory (config.json, model.safetensors or
 * model.safetensors.index.json, tokenizer.json); files are told apart by their
 * magic bytes. A bundle whose data fails its checksums is STARKV_ERR_CORRUPT;
 * one from a newer format major version or needing a feature this library
 * lacks is STARKV_ERR_UNSUPPORTED (the message names it).
 * params may be NULL (defaults). On failure *out_model is set to NULL. */
STARKV_API starkv_status starkv_model_load(const char *path, const starkv_model_params *params,
                                           starkv_model **out_model);
STARKV_API void starkv_model_free(starkv_model *model);

typedef enum starkv_tokenizer_kind {
    STARKV_TOKENIZER_SPM = 0, /**< SentencePiece-style BPE with scores and byte fallback */
    STARKV_TOKENIZER_BPE = 1  /* byte-level BPE with merges (GPT-2, Llama 3) */
} starkv_tokenizer_kind;

typedef enum starkv_rope_scaling {
    STARKV_ROPE_SCALING_NONE = 0,
    STARKV_ROPE_SCALING_LINEAR = 1,
    STARKV_ROPE_SCALING_LLAMA3 = 2
} starkv_rope_scaling;

typedef struct starkv_model_info {
    uint32_t struct_size;
    char architecture[32];
    char name[64];
    char format[16]; /**< "gguf", "hf", "bundle" */
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;
    int32_t n_ff;
    int32_t n_ctx_train;
    float rope_theta;
    int32_t rope_scaling; /**< starkv_rope_scaling */
    float rope_scaling_factor;
    float rms_norm_eps;
    bool tied_embeddings;
    int32_t tokenizer; /**< starkv_tokenizer_kind */
    starkv_token bos_token; /**< -1 when the model has none */
    starkv_token eos_token;
    starkv_token unk_token;
    starkv_token pad_token;
    uint64_t n_params;
} starkv_model_info;
STARKV_API void starkv_model_info_default(starkv_model_info *info);
/** info->struct_size must be set (use starkv_model_info_default). */
STARKV_API starkv_status starkv_model_get_info(const starkv_model *model, starkv_model_info *info);

/** The file's tensor table (for inspection tools). */
typedef struct starkv_tensor_info {
    uint32_t struct_size;
    char name[128];
    char dtype[16];  /**< as stored: "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1" */
    int32_t n_dims;
    int64_t shape[4]; /**< outermost first, e.g. {rows, cols} */
    uint64_t offset;  /**< byte offset in its file */
    uint64_t n_bytes; /**< stored bytes */
} starkv_tensor_info;
STARKV_API void starkv_tensor_info_default(starkv_tensor_info *info);
STARKV_API size_t starkv_model_n_tensors(const starkv_model *model);
STARKV_API starkv_status starkv_model_tensor(const starkv_model *model, size_t index,
                                             starkv_tensor_info *info);

/* ---- Bundles ------------------------------------------------------------ */
/** A bundle (.skv) is one self-describing file with everything the runtime needs
 * for a model (docs/bundle-format.md): tensors stored exactly as in the source
 * (so a Q4_1 GGUF stays Q4_1), each an independent zstd frame (or raw at level
 * 0), with checksums, the config, the tokenizer and provenance. */
typedef struct starkv_pack_params {
    uint32_t struct_size;
    int32_t zstd_level;          /**< 0 = uncompressed (64-byte aligned); 1..22; default 3 */
    starkv_progress_fn progress; /**< optional, [0, 1]; return false to cancel */
    void *progress_user_data;
    /* STAR-KV low-rank KV cache (docs/quality.md). kv_compress is the fraction
     * of the KV cache removed in compressed layers (0 = no compression, the
     * default; e.g. 0.5, 0.75); it needs calib_path, a text file whose
     * blank-line-separated paragraphs calibrate the factors (its later
     * paragraphs measure the held-out perplexity stored in the bundle). */
    float kv_compress;
    const char *calib_path;
    const char *rank_strategy; /* "adaptive" (default, NULL), "uniform" or "energy" */
    const char *skip_layers;   /* NULL = first two and last; "none"; or "0,1,29" */
    int32_t calib_tokens;      /* calibration tokens; default 16384 */
    /* Separate key and value targets (fractions removed), both > 0, instead
     * of one budget shared by keys and values; 0 (default) = shared. */
    float kv_compress_k;
    float kv_compress_v;
    /* Quantized latents (docs/kv-layout.md; with kv_compress): average bits
     * per latent channel, scales and padding included (0 = fp32 latents, the
     * default; 2..8, e.g. 8, 4, 3). Each latent gets a Hadamard block size,
     * a split between leading channels at 8 or 4 bits and a tail at 4, 3 or 2
     * bits, and a zero point or not, chosen on the calibration text. */
    float kv_bits;
    int32_t hadamard_block;   /* 0 = auto (default); 8, 16, 32, 64, 128; -1 = no rotation, auto block */
    int32_t kv_bits_uniform;  /* nonzero: one bit width round(kv_bits) everywhere, no split */
    int32_t kv_bits_plain;    /* with kv_bits: layers kept plain (skip layers) store K/V at 8 or 4 bits; 0 = fp32 */
    /* With kv_bits: calibration tokens on which each latent's sensitivity is
     * probed (output KL when only it is quantized), to weigh its error in the
     * plan; default 512; 0 = plan by squared error alone. */
    int32_t kv_bits_probe_tokens;
    /* Threads of the calibration (kv_compress): 0 = every core (default). */
    int32_t n_threads;
} starkv_pack_params;
STARKV_API void starkv_pack_params_default(starkv_pack_params *params);

/** Packs in_path (anything starkv_model_load accepts; it is loaded first, so a
 * model that does not load is not packed) into the bundle out_path. The bundle
 * is written to a temporary file in the same directory and renamed at the end:
 * a failed or cancelled pack leaves no file. params may be NULL. */
STARKV_API starkv_status starkv_pack(const char *in_path, const char *out_path,
                                     const starkv_pack_params *params);

/** Writes a bundle with random weights of a real model's shapes, for speed and
 * memory measurements (its text is noise): shape "llama2-7b" or "llama3-8b";
 * n_layers 0 = all 32; kv_compress as in starkv_pack_params (0 = off; no
 * calibration: the latent factors are random orthonormal of the ranks the
 * rate implies, in every layer but the first two and the last). Matrices F16,
 * stored uncompressed; a byte-fallback tokenizer. */
STARKV_API starkv_status starkv_pack_synthetic(const char *shape, int32_t n_layers, float kv_compress,
                                               const char *out_path);

/** A JSON document describing the bundle at path without loading its weights:
 * format_version, required_features, model (config), tokenizer (summary),
 * compression, provenance, tensors (name, dtype, shape, codec, offset,
 * stored_size, raw_size, xxh64) and totals. Not NUL-terminated; *n_out gets
 * its length (STARKV_ERR_BUFFER_TOO_SMALL when above capacity). */
STARKV_API starkv_status starkv_bundle_describe(const char *path, char *json_buf, size_t capacity,
                                                size_t *n_out);

/* ---- Tokenizer ---------------------------------------------------------- */
/** Tokenize len bytes of text. With parse_special, text like "<s>" that spells a
 * control token becomes that token; otherwise it is plain text. Writes up to
 * capacity tokens; *n_out always receives the number of tokens of the result
 * (STARKV_ERR_BUFFER_TOO_SMALL when it exceeds capacity). */
STARKV_API starkv_status starkv_tokenize(const starkv_model *model, const char *text, size_t len,
                                         bool add_bos, bool parse_special, starkv_token *tokens,
                                         size_t capacity, size_t *n_out);
/** Bytes of one token as it reads inside text (byte-fallback tokens give their
 * byte, SPM's U+2581 gives a space). Control tokens give "" unless
 * render_special. Not NUL-terminated; *n_out as for starkv_tokenize. */
STARKV_API starkv_status starkv_token_to_piece(const starkv_model *model, starkv_token token,
                                               bool render_special, char *buf, size_t capacity,
                                               size_t *n_out);
/** Text of a token sequence: control tokens are dropped and, for SPM, the space
 * the tokenizer put before the first word is removed, so that
 * detokenize(tokenize(s, add_bos)) == s. Not NUL-terminated. */
STARKV_API starkv_status starkv_detokenize(const starkv_model *model, const starkv_token *tokens,
                                           size_t n_tokens, char *buf, size_t capacity,
                                           size_t *n_out);

/* ---- Context ------------------------------------------------------------ */
typedef struct starkv_context starkv_context;

typedef struct starkv_context_params {
    uint32_t struct_size;
    uint32_t n_ctx;     /**< tokens of KV cache; 0 = the model's training context */
    uint32_t n_threads; /**< 0 = all hardware threads */
    uint64_t seed;      /**< seed of the default sampler of starkv_generate (sampler NULL) */
    int32_t backend;    /**< STARKV_BACKEND_*; default CPU */
    int32_t device;     /**< GPU ordinal for the CUDA backend; default 0 */
    /** Bytes a GPU-backed context may hold on its device (weights, KV cache for
     * n_ctx tokens, buffers; starkv_kv_stats.device_bytes); 0 = no limit. Over
     * it, backend CUDA fails with STARKV_ERR_OUT_OF_MEMORY and AUTO uses the
     * CPU, both having freed what they took. Ignored on the CPU. Since 0.2. */
    uint64_t device_memory_limit;
    /** What a GPU-backed context keeps its weights and KV cache in: a
     * STARKV_DEVICE_TYPE_*; default STARKV_DEVICE_TYPE_DEFAULT (bf16 weights and
     * KV). $STARKV_CUDA_DTYPE (f32, bf16, f16), when set, overrides it. Ignored on
     * the CPU. Since 0.2. */
    int32_t device_type;
} starkv_context_params;

/** Where a context runs. CUDA loads libstarkv_cuda.so (beside libstarkv, or the
 * path in $STARKV_CUDA_LIBRARY) and fails with STARKV_ERR_NO_DEVICE when it,
 * the driver or the device is missing; AUTO then uses the CPU and logs why. */
enum { STARKV_BACKEND_CPU = 0, STARKV_BACKEND_CUDA = 1, STARKV_BACKEND_AUTO = 2 };
/** Weights / KV cache of a GPU context: F32 both, BF16 both, F16 weights with an
 * fp32 KV cache; DEFAULT is BF16. Contexts of one model with the same type on
 * one device share one copy of the weights. */
enum {
    STARKV_DEVICE_TYPE_DEFAULT = 0,
    STARKV_DEVICE_TYPE_F32 = 1,
    STARKV_DEVICE_TYPE_BF16 = 2,
    STARKV_DEVICE_TYPE_F16 = 3
};
STARKV_API void starkv_context_params_default(starkv_context_params *params);

STARKV_API starkv_status starkv_context_create(const starkv_model *model,
                                               const starkv_context_params *params,
                                               starkv_context **out_ctx);
STARKV_API void starkv_context_free(starkv_context *ctx);

/** Run n_tokens tokens at positions n_past, n_past+1, ... and append them to the
 * KV cache. Logits are kept for the last token, or for every token when
 * all_logits. STARKV_ERR_CONTEXT_FULL (nothing changed) when they do not fit. */
STARKV_API starkv_status starkv_context_eval(starkv_context *ctx, const starkv_token *tokens,
                                             size_t n_tokens, bool all_logits);
/** One decode step: starkv_context_eval of one token. */
STARKV_API starkv_status starkv_context_decode(starkv_context *ctx, starkv_token token);
/** Logits (n_vocab floats) of the i-th token of the last eval; i = -1 is the
 * last one. Valid until the next eval, reset or rewind. */
STARKV_API starkv_status starkv_context_logits(const starkv_context *ctx, int32_t i,
                                               const float **out_logits);
STARKV_API uint32_t starkv_context_n_past(const starkv_context *ctx);
STARKV_API uint32_t starkv_context_n_ctx(const starkv_context *ctx);
STARKV_API starkv_status starkv_context_reset(starkv_context *ctx);
/** Forget every token at position >= n_past (n_past <= current position). */
STARKV_API starkv_status starkv_context_rewind(starkv_context *ctx, uint32_t n_past);

/** Asked between steps of long work on a context (each micro-batch of a
 * prompt's evaluation, of a starkv_seq_prefill or a starkv_batch_eval, each
 * generated token, each scored chunk); return true to stop it. The stopped call
 * fails with STARKV_ERR_CANCELLED: an eval, a batch or a prompt being evaluated
 * leaves the sequences as they were before the call (a prefilled sequence is
 * left empty; the last logits are dropped); starkv_generate keeps the tokens
 * already generated. */
typedef bool (*starkv_abort_fn)(void *user_data);
/** Sets (fn non-NULL) or clears (fn NULL) the context's abort callback. It runs
 * on the thread using the context; to cancel from another thread, have it read
 * an atomic flag that thread sets. Since 0.2. */
STARKV_API starkv_status starkv_context_set_abort_callback(starkv_context *ctx, starkv_abort_fn fn,
                                                           void *user_data);

/** Scores a text: resets the context, evaluates the tokens and sums, in double,
 * -log p(tokens[i] | tokens[0..i)) for every i >= 1 (*out_n_scored = n - 1).
 * perplexity = exp(nll_sum / n_scored). Needs n_tokens >= 2. */
STARKV_API starkv_status starkv_context_score(starkv_context *ctx, const starkv_token *tokens,
                                              size_t n_tokens, double *out_nll_sum,
                                              size_t *out_n_scored);

typedef struct starkv_kv_stats {
    uint32_t struct_size;
    uint32_t n_tokens;        /**< tokens held */
    uint32_t n_ctx;           /**< capacity in tokens */
    uint64_t bytes_in_use;    /**< bytes holding the n_tokens tokens */
    uint64_t bytes_reserved;  /**< bytes allocated now (grows with use, up to n_ctx tokens) */
    uint64_t bytes_per_token; /**< all layers, keys and values */
    uint64_t device_bytes;    /**< GPU memory of a GPU-backed context (weights, KV, buffers); 0 on the CPU */
    uint64_t bytes_per_token_uncompressed; /**< the same model's cache without STAR-KV */
} starkv_kv_stats;
STARKV_API void starkv_kv_stats_default(starkv_kv_stats *stats);
STARKV_API starkv_status starkv_context_kv_stats(const starkv_context *ctx, starkv_kv_stats *stats);
/** Bytes of weights one decode step of a GPU-backed context reads (its matrices
 * in their device type); 0 on the CPU. With the KV bytes, the numerator of the
 * step's bandwidth floor. */
STARKV_API starkv_status starkv_context_device_weight_bytes(const starkv_context *ctx, uint64_t *out_bytes);
/** Measured device-to-device copy speed of CUDA device `device`, bytes read +
 * written per second (copies 256 MiB ten times); STARKV_ERR_NO_DEVICE without
 * the backend or the device. */
STARKV_API starkv_status starkv_device_copy_bandwidth(int32_t device, double *out_bytes_per_second);

/* ---- Sequences, batches and saved KV state (since 0.2) ------------------ */
/** A context's KV cache is a pool of fixed-size pages of tokens shared by its
 * sequences, each with its own page table (docs/kv-pool.md). Sequence 0 always
 * exists: starkv_context_eval, _rewind, _logits and starkv_generate work on it.
 * Other sequences are created by id (chosen by the caller, >= 0), forked
 * (copy-on-write: no row is copied until one side writes), truncated and
 * removed; starkv_batch_eval runs tokens of many sequences in one forward pass
 * (continuous batching: sequences join and leave between batches).
 * Sequences, batches and saved states run on the CPU backend; on a GPU
 * context they fail with STARKV_ERR_UNSUPPORTED.
 *
 * Thread contract: a starkv_model is shared by any number of threads and
 * contexts; a context (with its sequences) is used by one thread at a time. */
typedef int32_t starkv_seq_id;

typedef struct starkv_pool_params {
    uint32_t struct_size;
    uint32_t page_tokens;       /**< tokens per page; default 16, at most 4096 */
    uint64_t budget_bytes;      /**< page memory of the pool; 0 = n_ctx tokens of one sequence.
                                     Taken lazily, page by page, as sequences grow. */
    uint32_t max_sequences;     /**< default 256 */
    bool prefix_caching;        /**< default true: starkv_seq_prefill reuses cached prompt prefixes */
    bool evict_cached_prefixes; /**< default true: a full pool takes back cached unused prefixes (LRU) */
} starkv_pool_params;
STARKV_API void starkv_pool_params_default(starkv_pool_params *params);

/** starkv_context_create with a KV pool of the given budget (pool NULL =
 * defaults). params->n_ctx bounds each sequence's length. */
STARKV_API starkv_status starkv_context_create_pooled(const starkv_model *model,
                                                      const starkv_context_params *params,
                                                      const starkv_pool_params *pool,
                                                      starkv_context **out_ctx);

/** Creates an empty sequence (INVALID_ARGUMENT if it exists or the context
 * holds max_sequences). */
STARKV_API starkv_status starkv_seq_create(starkv_context *ctx, starkv_seq_id seq);
/** Removes a sequence and releases its pages (sequence 0 cannot be removed:
 * truncate it to 0). */
STARKV_API starkv_status starkv_seq_remove(starkv_context *ctx, starkv_seq_id seq);
/** Forgets every token of seq at position >= n_past. */
STARKV_API starkv_status starkv_seq_truncate(starkv_context *ctx, starkv_seq_id seq, uint32_t n_past);
/** dst (new) starts as a copy of src, sharing its pages; the two diverge as
 * they are extended. */
STARKV_API starkv_status starkv_seq_fork(starkv_context *ctx, starkv_seq_id src, starkv_seq_id dst);
STARKV_API starkv_status starkv_seq_n_past(const starkv_context *ctx, starkv_seq_id seq, uint32_t *out_n_past);
/** The prompt of an empty sequence: its longest prefix (whole pages, all
 * tokens but the last) already cached in the pool is reused, the rest is
 * evaluated. *out_n_reused (may be NULL) receives the tokens reused. The
 * sequence's logits (starkv_seq_logits) are then the last token's. */
STARKV_API starkv_status starkv_seq_prefill(starkv_context *ctx, starkv_seq_id seq,
                                            const starkv_token *tokens, size_t n_tokens,
                                            size_t *out_n_reused);

/** One token of a batch. pos must be the sequence's n_past at its turn: a
 * sequence's items come in order at consecutive positions. */
typedef struct starkv_batch_item {
    starkv_token token;
    starkv_seq_id seq;
    uint32_t pos;
    bool logits; /**< keep this token's logits */
} starkv_batch_item;
/** One forward pass over n items of any sequences (prompt chunks and decode
 * steps mixed). Everything is checked before anything is computed; on an error
 * no sequence changed (STARKV_ERR_KV_POOL_FULL: the pages cannot be had,
 * STARKV_ERR_CONTEXT_FULL: a sequence would exceed n_ctx). */
STARKV_API starkv_status starkv_batch_eval(starkv_context *ctx, const starkv_batch_item *items, size_t n);
/** Logits (n_vocab floats) of item i of the last batch that asked for them;
 * valid until the next batch. */
STARKV_API starkv_status starkv_batch_logits(const starkv_context *ctx, size_t i, const float **out_logits);
/** Logits of the last token of seq evaluated with logits (by a batch, a
 * prefill or, for sequence 0, an eval); INVALID_ARGUMENT when the sequence
 * changed since (truncated) or has none. Valid until the sequence changes. */
STARKV_API starkv_status starkv_seq_logits(const starkv_context *ctx, starkv_seq_id seq,
                                           const float **out_logits);

typedef struct starkv_pool_stats {
    uint32_t struct_size;
    uint32_t page_tokens;
    uint64_t page_bytes;
    uint64_t n_sequences;
    uint64_t pages_total;     /**< what the budget allows */
    uint64_t pages_used;      /**< held by a sequence */
    uint64_t pages_cached;    /**< held by none, kept for prefix reuse (evictable) */
    uint64_t pages_free;      /**< pages_total - used - cached */
    uint64_t bytes_budget;
    uint64_t bytes_allocated; /**< taken from the system so far */
    uint64_t bytes_used;      /**< pages_used * page_bytes */
    uint64_t capacity_tokens; /**< pages_total * page_tokens */
    uint64_t tokens;          /**< sum of the sequences' lengths (shared tokens counted per sequence) */
    double compression_ratio; /**< fp32 cache bytes per token / this cache's */
    uint64_t prefix_queried_tokens; /**< prompt tokens (whole pages) offered for reuse */
    uint64_t prefix_hit_tokens;     /**< of which served from the cache */
    uint64_t evictions;             /**< cached pages taken back for new data */
    uint64_t cow_copies;            /**< shared pages copied before a write */
} starkv_pool_stats;
STARKV_API void starkv_pool_stats_default(starkv_pool_stats *stats);
STARKV_API starkv_status starkv_context_pool_stats(const starkv_context *ctx, starkv_pool_stats *stats);

/** Saves sequences (seqs NULL or n_seqs 0: every sequence) with their tokens
 * and KV rows: a self-checking buffer (format in docs/kv-pool.md) that
 * restores only into a context of the same model (its weights hash, see
 * docs/kv-pool.md). buf NULL or too small: STARKV_ERR_BUFFER_TOO_SMALL with
 * *n_out = the size needed (the state is built each call). */
STARKV_API starkv_status starkv_state_save(const starkv_context *ctx, const starkv_seq_id *seqs, size_t n_seqs,
                                           void *buf, size_t capacity, size_t *n_out);
STARKV_API starkv_status starkv_state_save_file(const starkv_context *ctx, const starkv_seq_id *seqs,
                                                size_t n_seqs, const char *path);
/** Recreates the saved sequences (under their ids; target >= 0: the state must
 * hold one sequence, restored as target). None of them may exist, except an
 * empty sequence 0. Everything is validated first: damaged data is
 * STARKV_ERR_CORRUPT, another model's state INVALID_ARGUMENT, and the context
 * is unchanged on any error. A restored sequence carries no logits: the logits
 * of the next token evaluated on it equal those the saved sequence gives. */
STARKV_API starkv_status starkv_state_restore(starkv_context *ctx, const void *buf, size_t n,
                                              starkv_seq_id target);
STARKV_API starkv_status starkv_state_restore_file(starkv_context *ctx, const char *path,
                                                   starkv_seq_id target);

/* ---- Sampling ----------------------------------------------------------- */
typedef struct starkv_sampler starkv_sampler;

/** Order of application: penalties, top-k, top-p, min-p, temperature, draw.
 * temperature <= 0 is greedy (argmax after penalties). */
typedef struct starkv_sampler_params {
    uint32_t struct_size;
    float temperature;       /**< default 0.8 */
    int32_t top_k;           /**< <= 0 disables; default 40 */
    float top_p;             /**< >= 1 disables; default 0.95 */
    float min_p;             /**< <= 0 disables; default 0.05 */
    float repeat_penalty;    /**< 1 disables; default 1 */
    float presence_penalty;  /**< 0 disables */
    float frequency_penalty; /**< 0 disables */
    int32_t penalty_last_n;  /**< tokens looked back for penalties; default 64 */
    uint64_t seed;           /**< same seed, same draws */
} starkv_sampler_params;
STARKV_API void starkv_sampler_params_default(starkv_sampler_params *params);

STARKV_API starkv_status starkv_sampler_create(const starkv_sampler_params *params,
                                               starkv_sampler **out_sampler);
STARKV_API void starkv_sampler_free(starkv_sampler *sampler);
/** Pick a token from n_vocab logits (not modified). Does not record it: call
 * starkv_sampler_accept for the tokens that enter the sequence. */
STARKV_API starkv_status starkv_sampler_sample(starkv_sampler *sampler, const float *logits,
                                               size_t n_vocab, starkv_token *out_token);
/** Record a token of the sequence (prompt or generated) for the penalties. */
STARKV_API starkv_status starkv_sampler_accept(starkv_sampler *sampler, starkv_token token);
/** Forget accepted tokens and restart the random stream from the seed. */
STARKV_API starkv_status starkv_sampler_reset(starkv_sampler *sampler);

/* ---- Generation --------------------------------------------------------- */
/** Receives each generated piece as soon as it is complete UTF-8 (a token that
 * ends inside a multi-byte character is held back until the character is
 * complete). Return false to stop generation. */
typedef bool (*starkv_piece_fn)(const char *piece, size_t len, starkv_token token,
                                void *user_data);

typedef enum starkv_stop_reason {
    STARKV_STOP_MAX_TOKENS = 0,
    STARKV_STOP_EOS = 1,
    STARKV_STOP_CALLBACK = 2,
    STARKV_STOP_CONTEXT_FULL = 3
} starkv_stop_reason;

typedef struct starkv_generate_params {
    uint32_t struct_size;
    int32_t max_tokens;        /**< default 128 */
    bool stop_at_eos;          /**< default true */
    starkv_piece_fn on_piece;  /**< optional */
    void *user_data;
} starkv_generate_params;
STARKV_API void starkv_generate_params_default(starkv_generate_params *params);

typedef struct starkv_generate_result {
    uint32_t struct_size;
    uint32_t n_prompt_tokens;
    uint32_t n_generated;
    int32_t stop_reason; /**< starkv_stop_reason */
    double prompt_seconds;
    double decode_seconds;
} starkv_generate_result;
STARKV_API void starkv_generate_result_default(starkv_generate_result *result);

/** Evaluate the prompt tokens after what the context already holds, then sample
 * and evaluate up to max_tokens tokens, streaming each piece. The sampler
 * accepts the prompt and every generated token. Afterwards the context holds
 * the prompt and every emitted token (also the one at which the callback
 * stopped; not an EOS, nor a token sampled into a full context), so a call
 * with an empty prompt continues the text. sampler may be NULL: the
 * context's default sampler is used (starkv_sampler_params_default with the
 * context's seed; it persists across calls and is restarted by reset). A context that fills up stops
 * generation with STARKV_STOP_CONTEXT_FULL (not an error); a prompt that does
 * not fit is STARKV_ERR_CONTEXT_FULL. result may be NULL. */
STARKV_API starkv_status starkv_generate(starkv_context *ctx, starkv_sampler *sampler,
                                         const starkv_token *prompt, size_t n_prompt,
                                         const starkv_generate_params *params,
                                         starkv_generate_result *result);

#ifdef __cplusplus
}
#endif
#endif /* STARKV_H */
