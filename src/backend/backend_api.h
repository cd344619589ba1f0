/* The C interface between libstarkv and a GPU backend library loaded with
 * dlopen. Plain C on purpose: no C++ types, exceptions or allocators cross
 * it, so the two libraries may be built by different compilers. A backend
 * exports one symbol, starkv_cuda_backend_api(), returning a static table. */
#ifndef STARKV_BACKEND_API_H
#define STARKV_BACKEND_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define STARKV_BACKEND_ABI_VERSION 2u /* 2: STAR-KV latent layers */

enum { STARKV_DTYPE_F32 = 0, STARKV_DTYPE_BF16 = 1, STARKV_DTYPE_F16 = 2 /* weights only */ };
enum { STARKV_ROPE_ADJACENT = 0, STARKV_ROPE_HALF_SPLIT = 1 };

/* Row-major fp32 host weights; the backend copies what it needs during create.
 * A STAR-KV layer (k_rank not NULL) has no wk/wv: per KV head h, keys are
 * k_u[h] (k_a[h] x) before RoPE ([k_rank[h]][n_embd] and [head_dim][k_rank[h]]);
 * values are v_u (v_a x) over all KV heads ([v_rank][n_embd], [n_head_kv *
 * head_dim][v_rank]). The device cache holds only the latents. */
typedef struct starkv_backend_layer {
    const float *attn_norm, *wq, *wk, *wv, *wo;
    const float *ffn_norm, *w_gate, *w_up, *w_down;
    const int32_t *k_rank;           /* n_head_kv ranks, or NULL: a plain layer */
    const float *const *k_a, *const *k_u; /* n_head_kv each */
    int32_t v_rank;
    const float *v_a, *v_u;
} starkv_backend_layer;

typedef struct starkv_backend_model {
    uint32_t struct_size;
    int32_t n_vocab, n_embd, n_ff, n_layer, n_head, n_head_kv, head_dim;
    int32_t n_ctx;        /* KV cache capacity, tokens */
    int32_t max_tokens;   /* most tokens per forward call */
    float rms_eps;
    int32_t rope_layout;  /* STARKV_ROPE_* */
    int32_t rope_n_dims;
    const double *rope_inv_freq; /* rope_n_dims / 2, scaling already applied */
    int32_t weight_dtype; /* STARKV_DTYPE_*: matrices on the device */
    int32_t kv_dtype;     /* STARKV_DTYPE_*: KV cache on the device */
    int32_t device;       /* ordinal */
    const float *tok_embd;    /* [n_vocab][n_embd] */
    const float *output_norm; /* [n_embd] */
    const float *output;      /* [n_vocab][n_embd] (tok_embd when tied) */
    const starkv_backend_layer *layers; /* n_layer */
} starkv_backend_model;

/* Every function returns a starkv_status value; on failure msg (capacity
 * msg_cap, may be 0) receives one line saying why. */
typedef struct starkv_backend_api {
    uint32_t abi_version; /* STARKV_BACKEND_ABI_VERSION */
    uint32_t struct_size;
    const char *name;
    /* Is a usable device there? Cheap: no weights, no cuBLAS handle. */
    int32_t (*probe)(int32_t device, char *msg, size_t msg_cap);
    int32_t (*create)(const starkv_backend_model *model, void **out, char *msg, size_t msg_cap);
    /* tokens[0..n) at positions pos0.. (KV rows past pos0 are overwritten, so
     * rewind/reset need no call). logits: n_vocab floats per token when
     * all_logits, else the last token's; NULL skips the head. */
    int32_t (*forward)(void *handle, const int32_t *tokens, int32_t n, int32_t pos0, int32_t all_logits,
                       float *logits, char *msg, size_t msg_cap);
    uint64_t (*device_bytes)(const void *handle);
    void (*destroy)(void *handle);
    /* Bytes of weights one decode step reads (matrices in their device type). */
    uint64_t (*weight_bytes)(const void *handle);
    /* Device-to-device copy speed: bytes read + written per second. */
    int32_t (*copy_bandwidth)(int32_t device, double *bytes_per_second, char *msg, size_t msg_cap);
} starkv_backend_api;

typedef const starkv_backend_api *(*starkv_backend_api_fn)(void);

#ifdef __cplusplus
}
#endif
#endif
