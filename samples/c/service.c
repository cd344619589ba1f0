/* A small inference service: N worker threads share one model; each runs its
 * own pooled context (the thread contract: a model is shared, a context is
 * used by one thread at a time) and serves its sessions with continuous
 * batching: up to SLOTS sessions decode together, one batch per step; a
 * finished session leaves and the next one joins (its prompt's cached prefix
 * is reused). Greedy decoding, so sessions with the same prompt must produce
 * the same text: the program checks it and exits 1 otherwise.
 *   sample_service MODEL [N_THREADS] [SESSIONS_PER_THREAD] [N_TOKENS]       */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "starkv/starkv.h"

enum { SLOTS = 4, MAX_TOKENS = 256, MAX_PROMPT = 64 };

/* Long enough for a whole page or two of 16 tokens: later sessions with the
 * same prompt reuse them from the prefix cache. */
static const char *const kPrompts[] = {
    "Once upon a time, there was a little girl named Lily. She loved to play in the park with her",
    "The little dog ran to the big tree. He saw a bird and wanted to",
    "One day, a girl named Lily went to the store with her mom. They bought"};
enum { N_PROMPTS = sizeof kPrompts / sizeof kPrompts[0] };

typedef struct session {
    int prompt;                  /* index into kPrompts */
    starkv_token tokens[MAX_TOKENS];
    int n_prompt, n;             /* prompt tokens, all tokens */
    size_t reused;               /* prompt tokens taken from the prefix cache */
} session;

typedef struct worker {
    const starkv_model *model;
    int id, n_sessions, n_gen;
    session *sessions;
    uint64_t prefix_hits, prefix_queried;
    int failed;
} worker;

static starkv_token argmax(const float *l, uint32_t n) {
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; ++i)
        if (l[i] > l[best]) best = i;
    return (starkv_token)best;
}

#define CHECK(call)                                                                         \
    do {                                                                                    \
        starkv_status st_ = (call);                                                         \
        if (st_ != STARKV_OK) {                                                             \
            fprintf(stderr, "worker %d: %s: %s\n", w->id, #call, starkv_last_error());      \
            w->failed = 1;                                                                  \
            goto done;                                                                      \
        }                                                                                   \
    } while (0)

static void *serve(void *arg) {
    worker *w = (worker *)arg;
    starkv_context *ctx = NULL;
    starkv_model_info info;
    starkv_model_info_default(&info);
    starkv_context_params cp;
    starkv_context_params_default(&cp);
    cp.n_ctx = MAX_TOKENS;
    cp.n_threads = 1;
    starkv_pool_params pp;
    starkv_pool_params_default(&pp);
    starkv_batch_item items[SLOTS];
    int active[SLOTS]; /* session index per slot, -1 = free */
    int next = 0, n_active = 0;
    CHECK(starkv_model_get_info(w->model, &info));
    CHECK(starkv_context_create_pooled(w->model, &cp, &pp, &ctx));
    for (int s = 0; s < SLOTS; ++s) active[s] = -1;
    for (;;) {
        /* Sessions join free slots: a sequence per slot (id = slot + 1). */
        for (int s = 0; s < SLOTS && next < w->n_sessions; ++s) {
            if (active[s] >= 0) continue;
            session *ss = &w->sessions[next];
            const char *text = kPrompts[ss->prompt];
            size_t n = 0;
            CHECK(starkv_tokenize(w->model, text, strlen(text), true, false, ss->tokens, MAX_PROMPT, &n));
            ss->n_prompt = ss->n = (int)n;
            CHECK(starkv_seq_create(ctx, s + 1));
            CHECK(starkv_seq_prefill(ctx, s + 1, ss->tokens, n, &ss->reused));
            const float *l = NULL;
            CHECK(starkv_seq_logits(ctx, s + 1, &l));
            ss->tokens[ss->n++] = argmax(l, info.n_vocab);
            active[s] = next++;
            ++n_active;
        }
        if (n_active == 0) break;
        /* One decode step of every active session in one batch. */
        int n_items = 0;
        for (int s = 0; s < SLOTS; ++s) {
            if (active[s] < 0) continue;
            session *ss = &w->sessions[active[s]];
            items[n_items].token = ss->tokens[ss->n - 1];
            items[n_items].seq = s + 1;
            items[n_items].pos = (uint32_t)(ss->n - 1);
            items[n_items].logits = true;
            ++n_items;
        }
        CHECK(starkv_batch_eval(ctx, items, (size_t)n_items));
        for (int i = 0; i < n_items; ++i) {
            const int s = items[i].seq - 1;
            session *ss = &w->sessions[active[s]];
            const float *l = NULL;
            CHECK(starkv_batch_logits(ctx, (size_t)i, &l));
            ss->tokens[ss->n++] = argmax(l, info.n_vocab);
            if (ss->n - ss->n_prompt >= w->n_gen) { /* the session leaves */
                CHECK(starkv_seq_remove(ctx, s + 1));
                active[s] = -1;
                --n_active;
            }
        }
    }
    starkv_pool_stats ps;
    starkv_pool_stats_default(&ps);
    CHECK(starkv_context_pool_stats(ctx, &ps));
    w->prefix_hits = ps.prefix_hit_tokens;
    w->prefix_queried = ps.prefix_queried_tokens;
done:
    starkv_context_free(ctx);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [N_THREADS] [SESSIONS_PER_THREAD] [N_TOKENS]\n", argv[0]);
        return 2;
    }
    const int n_threads = argc > 2 ? atoi(argv[2]) : 4;
    const int n_sessions = argc > 3 ? atoi(argv[3]) : 6;
    const int n_gen = argc > 4 ? atoi(argv[4]) : 24;
    if (n_threads < 1 || n_threads > 64 || n_sessions < 1 || n_sessions > 1000 || n_gen < 1 ||
        n_gen > MAX_TOKENS - MAX_PROMPT - 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    starkv_model *model = NULL;
    if (starkv_model_load(argv[1], NULL, &model) != STARKV_OK) {
        fprintf(stderr, "load: %s\n", starkv_last_error());
        return 1;
    }
    worker *workers = calloc((size_t)n_threads, sizeof *workers);
    pthread_t *threads = calloc((size_t)n_threads, sizeof *threads);
    int rc = 0;
    for (int t = 0; t < n_threads; ++t) {
        worker *w = &workers[t];
        w->model = model;
        w->id = t;
        w->n_sessions = n_sessions;
        w->n_gen = n_gen;
        w->sessions = calloc((size_t)n_sessions, sizeof *w->sessions);
        for (int s = 0; s < n_sessions; ++s) w->sessions[s].prompt = (t + s) % N_PROMPTS;
        pthread_create(&threads[t], NULL, serve, w);
    }
    for (int t = 0; t < n_threads; ++t) pthread_join(threads[t], NULL);

    /* Greedy: the same prompt gives the same tokens in every session and thread. */
    const session *first[N_PROMPTS] = {0};
    for (int t = 0; t < n_threads; ++t) {
        const worker *w = &workers[t];
        if (w->failed) rc = 1;
        for (int s = 0; s < n_sessions && !w->failed; ++s) {
            const session *ss = &w->sessions[s];
            if (!first[ss->prompt]) {
                first[ss->prompt] = ss;
                char text[2048];
                size_t n = 0;
                if (starkv_detokenize(model, ss->tokens, (size_t)ss->n, text, sizeof text - 1, &n) != STARKV_OK) n = 0;
                text[n] = '\0';
                printf("[%s] -> %s\n", kPrompts[ss->prompt], text);
            } else if (ss->n != first[ss->prompt]->n ||
                       memcmp(ss->tokens, first[ss->prompt]->tokens, (size_t)ss->n * sizeof(starkv_token)) != 0) {
                int at = 0;
                while (at < ss->n && at < first[ss->prompt]->n && ss->tokens[at] == first[ss->prompt]->tokens[at]) ++at;
                fprintf(stderr, "thread %d session %d differs from the first session with its prompt at token %d of %d (prompt %d)\n",
                        t, s, at, ss->n, ss->n_prompt);
                rc = 1;
            }
        }
        printf("thread %d: %d sessions, prefix cache %llu of %llu prompt tokens\n", t, n_sessions,
               (unsigned long long)w->prefix_hits, (unsigned long long)w->prefix_queried);
    }
    for (int t = 0; t < n_threads; ++t) free(workers[t].sessions);
    free(workers);
    free(threads);
    starkv_model_free(model);
    printf(rc == 0 ? "ok\n" : "FAILED\n");
    return rc;
}
