/* Minimal embedding of starkv from C: load, generate greedily, print.
 *   sample_c MODEL [PROMPT] [N_TOKENS]                                     */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "starkv/starkv.h"

static bool on_piece(const char *piece, size_t len, starkv_token token, void *user) {
    (void)token;
    (void)user;
    fwrite(piece, 1, len, stdout);
    return true;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [PROMPT] [N_TOKENS]\n", argv[0]);
        return 2;
    }
    if (starkv_version_number() / 10000 != STARKV_VERSION_MAJOR) {
        fprintf(stderr, "starkv library %s does not match header %s\n", starkv_version_string(), STARKV_VERSION_STRING);
        return 1;
    }
    const char *prompt = argc > 2 ? argv[2] : "Once upon a time";
    int n_tokens = argc > 3 ? atoi(argv[3]) : 64;

    starkv_model *model = NULL;
    starkv_context *ctx = NULL;
    starkv_sampler *sampler = NULL;
    starkv_token tokens[1024];
    size_t n = 0;
    int rc = 1;

    if (starkv_model_load(argv[1], NULL, &model) != STARKV_OK) goto fail;
    if (starkv_context_create(model, NULL, &ctx) != STARKV_OK) goto fail;
    starkv_sampler_params sp;
    starkv_sampler_params_default(&sp);
    sp.temperature = 0.0f; /* greedy: the same text every run */
    if (starkv_sampler_create(&sp, &sampler) != STARKV_OK) goto fail;
    if (starkv_tokenize(model, prompt, strlen(prompt), true, false, tokens, 1024, &n) != STARKV_OK) goto fail;

    starkv_generate_params gp;
    starkv_generate_params_default(&gp);
    gp.max_tokens = n_tokens;
    gp.on_piece = on_piece;
    fputs(prompt, stdout);
    if (starkv_generate(ctx, sampler, tokens, n, &gp, NULL) != STARKV_OK) goto fail;
    fputc('\n', stdout);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "error: %s\n", starkv_last_error());
done:
    starkv_sampler_free(sampler);
    starkv_context_free(ctx);
    starkv_model_free(model);
    return rc;
}
