/* Decode throughput of batched sequences vs one sequence at a time, and how
 * many sequences of a given length fit in a KV budget (docs/perf/kv-pool.md).
 *   sample_batch_throughput MODEL [N_SEQS] [PROMPT_TOKENS] [DECODE_STEPS] [N_THREADS] [BUDGET_MIB] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "starkv/starkv.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define CHECK(call)                                                              \
    do {                                                                         \
        if ((call) != STARKV_OK) {                                               \
            fprintf(stderr, "%s: %s\n", #call, starkv_last_error());             \
            return 1;                                                            \
        }                                                                        \
    } while (0)

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [N_SEQS] [PROMPT_TOKENS] [DECODE_STEPS] [N_THREADS] [BUDGET_MIB]\n", argv[0]);
        return 2;
    }
    const int n_seqs = argc > 2 ? atoi(argv[2]) : 16;
    const int n_prompt = argc > 3 ? atoi(argv[3]) : 64;
    const int n_steps = argc > 4 ? atoi(argv[4]) : 64;
    const int n_threads = argc > 5 ? atoi(argv[5]) : 2;
    const double budget_mib = argc > 6 ? atof(argv[6]) : 64;
    if (n_seqs < 1 || n_seqs > 1024 || n_prompt < 1 || n_steps < 1 || n_threads < 1) return 2;
    starkv_model *model = NULL;
    CHECK(starkv_model_load(argv[1], NULL, &model));
    starkv_model_info info;
    starkv_model_info_default(&info);
    CHECK(starkv_model_get_info(model, &info));
    starkv_context_params cp;
    starkv_context_params_default(&cp);
    cp.n_ctx = (uint32_t)(n_prompt + n_steps + 1);
    cp.n_threads = (uint32_t)n_threads;
    starkv_pool_params pp;
    starkv_pool_params_default(&pp);
    pp.budget_bytes = (uint64_t)(budget_mib * 1048576.0);
    starkv_context *ctx = NULL;
    CHECK(starkv_context_create_pooled(model, &cp, &pp, &ctx));
    starkv_batch_item *items = calloc((size_t)n_seqs, sizeof *items);
    starkv_token *prompt = calloc((size_t)n_prompt, sizeof *prompt);

    /* Prompts (distinct per sequence: no prefix reuse) */
    for (int s = 0; s < n_seqs; ++s) {
        for (int i = 0; i < n_prompt; ++i) prompt[i] = (starkv_token)(1 + (i * 37 + s * 101) % (int)(info.n_vocab - 1));
        CHECK(starkv_seq_create(ctx, s + 1));
        CHECK(starkv_seq_prefill(ctx, s + 1, prompt, (size_t)n_prompt, NULL));
    }
    /* Batched: one forward pass per step over all sequences. */
    double t0 = now();
    for (int step = 0; step < n_steps; ++step) {
        for (int s = 0; s < n_seqs; ++s)
            items[s] = (starkv_batch_item){(starkv_token)(1 + (step * 7 + s) % 100), s + 1, (uint32_t)(n_prompt + step), true};
        CHECK(starkv_batch_eval(ctx, items, (size_t)n_seqs));
    }
    const double batched = (double)n_seqs * n_steps / (now() - t0);
    /* Sequential: the same tokens, one sequence per forward pass. */
    for (int s = 0; s < n_seqs; ++s) CHECK(starkv_seq_truncate(ctx, s + 1, (uint32_t)n_prompt));
    t0 = now();
    for (int step = 0; step < n_steps; ++step)
        for (int s = 0; s < n_seqs; ++s) {
            starkv_batch_item it = {(starkv_token)(1 + (step * 7 + s) % 100), s + 1, (uint32_t)(n_prompt + step), true};
            CHECK(starkv_batch_eval(ctx, &it, 1));
        }
    const double sequential = (double)n_seqs * n_steps / (now() - t0);

    starkv_pool_stats st;
    starkv_pool_stats_default(&st);
    CHECK(starkv_context_pool_stats(ctx, &st));
    const uint64_t seq_len = (uint64_t)(n_prompt + n_steps);
    const uint64_t pages_per_seq = (seq_len + st.page_tokens - 1) / st.page_tokens;
    starkv_kv_stats kv;
    starkv_kv_stats_default(&kv);
    CHECK(starkv_context_kv_stats(ctx, &kv));
    const uint64_t fp16_per_token = kv.bytes_per_token_uncompressed / 2;
    printf("model %s: %u layers, %u KV heads x %u, KV %llu B/token (fp32 %llu, fp16 %llu, ratio vs fp32 %.2fx)\n",
           argv[1], info.n_layer, info.n_head_kv, info.head_dim, (unsigned long long)kv.bytes_per_token,
           (unsigned long long)kv.bytes_per_token_uncompressed, (unsigned long long)fp16_per_token, st.compression_ratio);
    printf("%d sequences x (%d prompt + %d decode), %d threads\n", n_seqs, n_prompt, n_steps, n_threads);
    printf("decode tok/s: batched %.1f, one sequence at a time %.1f, speedup %.2fx\n", batched, sequential,
           batched / sequential);
    printf("budget %.1f MiB, page %u tokens = %llu B: %llu pages; sequences of %llu tokens that fit: pool %llu, "
           "fp16 contiguous %llu\n",
           budget_mib, st.page_tokens, (unsigned long long)st.page_bytes, (unsigned long long)st.pages_total,
           (unsigned long long)seq_len, (unsigned long long)(st.pages_total / pages_per_seq),
           (unsigned long long)(pp.budget_bytes / (fp16_per_token * seq_len)));
    starkv_context_free(ctx);
    starkv_model_free(model);
    free(items);
    free(prompt);
    return 0;
}
