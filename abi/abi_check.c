/* ABI check: a program built against the 0.1.0 header (abi/0.1.0/starkv/starkv.h,
 * first on the include path) runs against the CURRENT libstarkv.
 *   abi_check MODEL WORK_DIR
 * 1. Layout: every 0.1.0 struct field keeps its offset and size in the current
 *    header, structs only grow, enum values stay (abi/layout.h, compared with
 *    abi_layout_current.c built against the current header).
 * 2. Symbols: every 0.1.0 function is bound at the version node STARKV_0, as in a
 *    program linked against 0.1.0 (.symver below), and called at least once.
 * 3. struct_size: with 0.1.0-sized structs followed by guard bytes, no call
 *    (the *_default fillers, get_info, kv_stats, generate's result) writes past
 *    the 0.1.0 size. A field appended to a struct that has a *_default filler
 *    makes the current filler write more bytes than an old caller has: such a
 *    change must keep the old filler at STARKV_0 (abi/README.md). */
#include <starkv/starkv.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "abi_layout.h"

#if STARKV_VERSION_NUMBER != 100
#error "abi_check.c must be compiled against the 0.1.0 baseline header (abi/0.1.0)"
#endif

/* Bind like a 0.1.0 binary: name@STARKV_0 (not the newest default version). */
#define FN(f) __asm__(".symver " #f "," #f "@STARKV_0");
#include "functions.h"
#undef FN

static int failures = 0;
#define CHECK(cond, ...)                                         \
    do {                                                         \
        if (!(cond)) {                                           \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                        \
            fputc('\n', stderr);                                 \
            ++failures;                                          \
        }                                                        \
    } while (0)
#define OK(call) CHECK((call) == STARKV_OK, "%s: %s", #call, starkv_last_error())

/* ---- 1. layout ---------------------------------------------------------- */
#define S(s) {#s, 0, sizeof(s), 0},
#define F(s, f) {#s "." #f, offsetof(s, f), sizeof(((s *)0)->f), 0},
#define E(c) {#c, 0, 0, (long long)(c)},
static const abi_entry baseline[] = {
#include "layout.h"
};
#undef S
#undef F
#undef E

static void check_layout(void) {
    size_t n = sizeof(baseline) / sizeof(baseline[0]);
    CHECK(n == abi_current_n_entries, "layout tables differ in length");
    for (size_t i = 0; i < n && i < abi_current_n_entries; ++i) {
        const abi_entry *b = &baseline[i], *c = &abi_current_entries[i];
        CHECK(strcmp(b->name, c->name) == 0, "entry %zu: %s vs %s", i, b->name, c->name);
        CHECK(b->offset == c->offset, "%s: offset %zu in 0.1.0, %zu now", b->name, b->offset, c->offset);
        if (b->value != c->value) CHECK(0, "%s: value %lld in 0.1.0, %lld now", b->name, b->value, c->value);
        if (strchr(b->name, '.') || b->size == 0) {
            CHECK(b->size == c->size, "%s: size %zu in 0.1.0, %zu now", b->name, b->size, c->size);
        } else {
            CHECK(c->size >= b->size, "struct %s shrank: %zu in 0.1.0, %zu now", b->name, b->size, c->size);
            if (c->size != b->size) printf("note: %s grew from %zu to %zu bytes\n", b->name, b->size, c->size);
        }
    }
}

/* ---- 3. guard bytes ----------------------------------------------------- */
#define GUARD 256
#define GUARD_BYTE 0xA5
/* A 0.1.0-sized struct followed by GUARD bytes of GUARD_BYTE. */
#define GUARDED(type, var)                                   \
    union {                                                  \
        type v;                                              \
        unsigned char bytes[sizeof(type) + GUARD];           \
    } var;                                                   \
    memset(&var, GUARD_BYTE, sizeof var)
static int guard_intact(const unsigned char *bytes, size_t size, const char *what) {
    for (size_t i = size; i < size + GUARD; ++i)
        if (bytes[i] != GUARD_BYTE) {
            CHECK(0, "%s wrote past the 0.1.0 struct size %zu (byte %zu)", what, size, i);
            return 0;
        }
    return 1;
}
#define GUARD_OK(var, what) guard_intact((var).bytes, sizeof((var).v), what)

static int log_calls = 0;
static void on_log(starkv_log_level level, const char *msg, void *user) {
    (void)level; (void)msg; (void)user;
    ++log_calls;
}
static bool on_progress(float p, void *user) {
    (void)user;
    return p >= 0.0f && p <= 1.0f;
}
static int pieces = 0;
static bool on_piece(const char *piece, size_t len, starkv_token token, void *user) {
    (void)piece; (void)len; (void)token;
    fwrite(piece, 1, len, (FILE *)user);
    ++pieces;
    return true;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL WORK_DIR\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[1];
    check_layout();

    CHECK(starkv_version_number() / 10000 == STARKV_VERSION_MAJOR, "major version of the library: %u",
          starkv_version_number());
    CHECK(starkv_version_number() >= STARKV_VERSION_NUMBER, "library older than 0.1.0: %u", starkv_version_number());
    CHECK(strlen(starkv_version_string()) > 0, "version string");
    CHECK(strcmp(starkv_status_name(STARKV_ERR_IO), "STARKV_ERR_IO") == 0, "status name");
    starkv_set_log_callback(on_log, NULL);

    /* every *_default filler with 0.1.0-sized structs */
    {
        GUARDED(starkv_model_params, mp);
        starkv_model_params_default(&mp.v);
        GUARD_OK(mp, "starkv_model_params_default");
        GUARDED(starkv_model_info, mi);
        starkv_model_info_default(&mi.v);
        GUARD_OK(mi, "starkv_model_info_default");
        GUARDED(starkv_tensor_info, ti);
        starkv_tensor_info_default(&ti.v);
        GUARD_OK(ti, "starkv_tensor_info_default");
        GUARDED(starkv_pack_params, pp);
        starkv_pack_params_default(&pp.v);
        GUARD_OK(pp, "starkv_pack_params_default");
        GUARDED(starkv_context_params, cp);
        starkv_context_params_default(&cp.v);
        GUARD_OK(cp, "starkv_context_params_default");
        GUARDED(starkv_kv_stats, ks);
        starkv_kv_stats_default(&ks.v);
        GUARD_OK(ks, "starkv_kv_stats_default");
        GUARDED(starkv_sampler_params, sp);
        starkv_sampler_params_default(&sp.v);
        GUARD_OK(sp, "starkv_sampler_params_default");
        GUARDED(starkv_generate_params, gp);
        starkv_generate_params_default(&gp.v);
        GUARD_OK(gp, "starkv_generate_params_default");
        GUARDED(starkv_generate_result, gr);
        starkv_generate_result_default(&gr.v);
        GUARD_OK(gr, "starkv_generate_result_default");
    }

    /* Every struct below is 0.1.0-sized with struct_size = sizeof (0.1.0), set
     * by hand so that the checks hold even if a filler were broken. */
    starkv_model *model = NULL;
    starkv_model_params mp;
    memset(&mp, 0, sizeof mp);
    mp.struct_size = sizeof mp;
    mp.progress = on_progress;
    CHECK(starkv_model_load("/nonexistent/model.gguf", &mp, &model) == STARKV_ERR_IO && model == NULL,
          "missing file is STARKV_ERR_IO");
    CHECK(strlen(starkv_last_error()) > 0, "last_error after a failure");
    OK(starkv_model_load(model_path, &mp, &model));
    if (!model) return 1;

    GUARDED(starkv_model_info, info);
    memset(&info.v, 0, sizeof info.v);
    info.v.struct_size = sizeof info.v;
    OK(starkv_model_get_info(model, &info.v));
    GUARD_OK(info, "starkv_model_get_info");
    CHECK(info.v.struct_size == sizeof info.v, "model_info.struct_size changed to %u", info.v.struct_size);
    CHECK(info.v.n_vocab > 0 && info.v.n_layer > 0 && strcmp(info.v.format, "gguf") == 0, "model info");

    size_t n_tensors = starkv_model_n_tensors(model);
    CHECK(n_tensors > 0, "n_tensors");
    GUARDED(starkv_tensor_info, tinfo);
    memset(&tinfo.v, 0, sizeof tinfo.v);
    tinfo.v.struct_size = sizeof tinfo.v;
    OK(starkv_model_tensor(model, 0, &tinfo.v));
    GUARD_OK(tinfo, "starkv_model_tensor");
    CHECK(tinfo.v.n_dims >= 1 && tinfo.v.n_bytes > 0, "tensor info");

    /* bundles */
    char bundle[4096];
    snprintf(bundle, sizeof bundle, "%s/abi_check.skv", argv[2]);
    starkv_pack_params pp;
    memset(&pp, 0, sizeof pp);
    pp.struct_size = sizeof pp;
    pp.zstd_level = 1;
    OK(starkv_pack(model_path, bundle, &pp));
    char json[1 << 16];
    size_t n_json = 0;
    OK(starkv_bundle_describe(bundle, json, sizeof json, &n_json));
    CHECK(n_json > 0 && memchr(json, '{', n_json) != NULL, "bundle_describe");
    remove(bundle);

    /* tokenizer */
    const char *prompt = "Once upon a time";
    starkv_token tokens[64];
    size_t n_tokens = 0;
    OK(starkv_tokenize(model, prompt, strlen(prompt), true, false, tokens, 64, &n_tokens));
    CHECK(n_tokens >= 2, "tokenize");
    char piece[64];
    size_t n_piece = 0;
    OK(starkv_token_to_piece(model, tokens[1], false, piece, sizeof piece, &n_piece));
    char text[256];
    size_t n_text = 0;
    OK(starkv_detokenize(model, tokens, n_tokens, text, sizeof text, &n_text));
    CHECK(n_text == strlen(prompt) && memcmp(text, prompt, n_text) == 0, "detokenize(tokenize(s)) == s");

    /* context */
    starkv_context *ctx = NULL;
    starkv_context_params cp;
    memset(&cp, 0, sizeof cp);
    cp.struct_size = sizeof cp;
    cp.n_ctx = 128;
    cp.n_threads = 1;
    OK(starkv_context_create(model, &cp, &ctx));
    if (!ctx) return 1;
    CHECK(starkv_context_n_ctx(ctx) == 128, "n_ctx");
    OK(starkv_context_eval(ctx, tokens, n_tokens, false));
    const float *logits = NULL;
    OK(starkv_context_logits(ctx, -1, &logits));
    starkv_sampler *sampler = NULL;
    starkv_sampler_params sp;
    memset(&sp, 0, sizeof sp);
    sp.struct_size = sizeof sp;
    sp.temperature = 0.0f;
    sp.top_p = 1.0f;
    sp.repeat_penalty = 1.0f;
    OK(starkv_sampler_create(&sp, &sampler));
    starkv_token next = -1;
    if (logits) OK(starkv_sampler_sample(sampler, logits, (size_t)info.v.n_vocab, &next));
    OK(starkv_sampler_accept(sampler, next));
    OK(starkv_context_decode(ctx, next));
    CHECK(starkv_context_n_past(ctx) == n_tokens + 1, "n_past");
    GUARDED(starkv_kv_stats, ks);
    memset(&ks.v, 0, sizeof ks.v);
    ks.v.struct_size = sizeof ks.v;
    OK(starkv_context_kv_stats(ctx, &ks.v));
    GUARD_OK(ks, "starkv_context_kv_stats");
    CHECK(ks.v.n_tokens == n_tokens + 1 && ks.v.bytes_in_use > 0, "kv_stats");
    OK(starkv_context_rewind(ctx, 1));
    OK(starkv_context_reset(ctx));
    double nll = 0;
    size_t n_scored = 0;
    OK(starkv_context_score(ctx, tokens, n_tokens, &nll, &n_scored));
    CHECK(n_scored == n_tokens - 1 && nll > 0, "score");
    OK(starkv_sampler_reset(sampler));
    OK(starkv_context_reset(ctx));

    /* generation: prints the story on stdout */
    starkv_generate_params gp;
    memset(&gp, 0, sizeof gp);
    gp.struct_size = sizeof gp;
    gp.max_tokens = 24;
    gp.stop_at_eos = true;
    gp.on_piece = on_piece;
    gp.user_data = stdout;
    GUARDED(starkv_generate_result, res);
    memset(&res.v, 0, sizeof res.v);
    res.v.struct_size = sizeof res.v;
    fputs(prompt, stdout);
    OK(starkv_generate(ctx, sampler, tokens, n_tokens, &gp, &res.v));
    fputc('\n', stdout);
    GUARD_OK(res, "starkv_generate (result)");
    CHECK(res.v.n_generated > 0 && pieces > 0, "generate");
    CHECK(res.v.n_prompt_tokens == n_tokens, "n_prompt_tokens");

    starkv_sampler_free(sampler);
    starkv_context_free(ctx);
    starkv_model_free(model);
    starkv_set_log_callback(NULL, NULL);
    CHECK(log_calls > 0, "the log callback was never called");

    if (failures) {
        printf("0 passed, 1 failed (%d checks failed)\n", failures);
        return 1;
    }
    printf("1 passed, 0 failed (0.1.0 ABI: %zu layout entries, every function called)\n",
           sizeof(baseline) / sizeof(baseline[0]));
    return 0;
}
