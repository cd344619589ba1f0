// Decode attention over a STAR-KV latent cache (one query token per sequence),
// bound by the bytes of the latents it reads. Four launches:
//   1. scores: per (sequence, KV head, chunk of keys): key-latent tiles are
//      expanded to keys with tensor cores (once per KV head, shared by its
//      query heads), rotated (RoPE at each key's absolute position) in
//      registers and scored against the group's queries; raw scores and the
//      chunk's softmax max/sum go to the workspace.
//   2. values: per (sequence, slice of the value rank, chunk of keys):
//      P[heads x keys] x Vlat[keys x slice] with tensor cores, reading each
//      value latent once for ALL heads; partial sums per chunk.
//   3. reduce the chunks' partial sums (no atomics);
//   4. expand: o_h = U_v^h acc_h.
// By default the scores pass reads RoPE's cos/sin from a per-call table of
// absolute angles (fp16, in mma fragment order): for MHA the rotation is folded
// into the query side (no key is rebuilt: W = C(p) x M on tensor cores, score =
// z . W); for GQA each key is rebuilt once per KV head, rotated in registers
// with the table and scored for the whole group on tensor cores
// (LatentScoresKernel, latent_attention.cu; docs/perf/attention.md).
// Semantics are src/model/forward.cpp latent_attention's for one query token.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace starkv::cuda {

constexpr int kLatMaxKvHeads = 64;
constexpr int kLatMaxHeads = 64;     // query heads: P rows in the value pass
constexpr int kLatMaxKeyRank = 128;  // per KV head, after padding
constexpr int kLatMaxGroup = 8;      // query heads per KV head

// How the latents are stored. Quantized latents (issue 5) add a format here;
// the kernels read latents only through their tile loaders (load_key_tile /
// load_value_tile in latent_attention.cu), which is where a dequantizing
// loader goes: everything after the shared-memory tile is format-independent.
// Q4: 4-bit codes with a per-(token, group) fp16 scale and minimum, x = min + scale * q (the
// uniform 4-bit zero-point plan of issue 5's row format with block = the padded key rank for keys
// and 128 channels for values), stored as codes and scales in separate arrays (see LatentAttnArgs),
// dequantized in shared memory right after the load. U_h and U_v are fp16. Q4 runs the angle-table
// scores kernels only (RopeTable for MHA, KeyTable for GQA).
enum class LatentFormat { F16, BF16, Q4 };

// Which scores kernel: RoPE on the key side (each reconstructed key rotated, v3), folded into the
// query side with in-tile offsets (v4-v7: W = [cos sin] x M(p0), M rotated per tile), or with a
// table of absolute angles (v8: W = C(p) x M, C read from a per-call table, nothing rotated per
// tile), or keys rebuilt once per KV head, rotated with that table and scored for the whole group on
// tensor cores (v11, KeyTable: half-split RoPE over all of head_dim 128, ranks <= 64). Auto picks by
// measurement (docs/perf/attention.md); a forced kernel that does not fit the shape runs KeyRotation.
// Tests force each. SmallBatch: the small-batch single pass (latent_decode_small.cuh: one fused
// pass per chunk + a combine that applies U_v), which Auto takes for n_seq <= small_batch_max;
// forced, it runs at any batch; a shape it does not take runs Auto's five-launch path.
enum class LatentScoresKernel { Auto, KeyRotation, QueryFold, RopeTable, KeyTable, SmallBatch };

struct LatentAttnShape {
    int n_seq = 0;             // sequences in the batch, one query token each
    int n_head = 0;            // query heads (<= kLatMaxHeads)
    int n_kv = 0;              // KV heads; n_head % n_kv == 0, group <= kLatMaxGroup
    int head_dim = 0;          // 64 or 128
    int rope_dims = 0;         // rotated dimensions: multiple of 16, <= head_dim
    bool rope_half_split = false;  // pairs (i, i + rope_dims/2) instead of (2i, 2i+1)
    int v_rank = 0;            // joint value latent rank, multiple of 128, <= 2048
    int ctx_cap = 0;           // contiguous caches (page_rows 0): positions per sequence (row count)
    // Paged caches (args.page_table set): positions per page, a multiple of 64, and the page table's
    // columns per sequence (pages_per_seq * page_rows >= max_keys); 0 = contiguous.
    int page_rows = 0;
    int pages_per_seq = 0;
    int max_keys = 0;          // >= every n_keys[b]; sizes the grid and workspace
    int k_rank[kLatMaxKvHeads] = {};  // each KV head's key rank (ragged), <= kLatMaxKeyRank
    LatentFormat format = LatentFormat::BF16;
    LatentScoresKernel scores_kernel = LatentScoresKernel::Auto;
    // Auto runs the small-batch single pass (fp16/bf16 latents) for n_seq up to this; 0: never.
    int small_batch_max = 4;
};

// Key rank padded to the MMA tile (16), not to the layer's largest rank.
inline int latent_rank_pad(int r) { return (r + 15) / 16 * 16; }

// Device pointers. T = the format's element type (__half or __nv_bfloat16).
//  q:      [n_seq][n_head][head_dim] fp32, RoPE already applied at the query's position.
//  k_lat:  per sequence, per KV head h: [ctx_cap][pad(k_rank[h])], heads back to back
//          (sequence stride ctx_cap * sum pad(k_rank)); padding columns must be finite.
//  k_u:    per KV head h: U_h [head_dim][pad(k_rank[h])] row-major, back to back;
//          padding columns zero.
//  v_lat:  [n_seq][ctx_cap][v_rank].
//  v_u:    U_v [n_kv * head_dim][v_rank] row-major (rows of KV head h: h*head_dim..).
//  n_keys: [n_seq] int on the device: sequence b attends to positions [0, n_keys[b]).
//  inv_freq: [rope_dims / 2] double (cpu::RopeTable::inv_freq, scaling included).
//  Q4 only: k_lat holds the codes, per sequence and KV head [ctx_cap][pad(k_rank[h]) / 2] bytes
//          (low nibble = even channel), heads back to back; k_scale: [n_seq][n_kv][ctx_cap] half2
//          (scale, min); v_lat: [n_seq][ctx_cap][v_rank / 2] bytes; v_scale: [n_seq][ctx_cap]
//          [v_rank / 128] half2 (one per group of 128 channels).
//  out:    [n_seq][n_head][head_dim] fp32. A sequence with no keys gets zeros.
//  Paged (shape.page_rows > 0): k_lat, v_lat, k_scale and v_scale are pools of pages of page_rows
//          positions, laid out as above with page_rows in place of ctx_cap and the page in place of
//          the sequence (keys: [page][KV head][page_rows][pad(k_rank[h])]; values: [page][page_rows]
//          [v_rank]; Q4 scales: [page][n_kv][page_rows] and [page][page_rows][v_rank / 128]);
//          page_table: [n_seq][pages_per_seq] int on the device, the page holding positions
//          [j * page_rows, (j + 1) * page_rows) of sequence b at [b][j]. Entries past a sequence's
//          n_keys are not read. A sequence's contiguous cache is the paged layout with one page of
//          ctx_cap rows (page b).
struct LatentAttnArgs {
    const float* q = nullptr;
    const void* k_lat = nullptr;
    const void* k_u = nullptr;
    const void* v_lat = nullptr;
    const void* v_u = nullptr;
    const int* n_keys = nullptr;
    const double* inv_freq = nullptr;
    float* out = nullptr;
    float scale = 0.0f;  // softmax scale, usually 1/sqrt(head_dim)
    const void* k_scale = nullptr;  // Q4 only
    const void* v_scale = nullptr;  // Q4 only
    const int* page_table = nullptr;  // paged caches only (shape.page_rows > 0)
};

// Workspace bytes for this shape on the current device (0 when the shape is invalid).
size_t latent_attention_workspace(const LatentAttnShape& shape);
// Enough workspace for every call with this shape but n_seq and max_keys at
// most the shape's (the chunking, and so the workspace, of a call is not
// monotonic in them): what a caller that sizes one workspace up front needs.
size_t latent_attention_workspace_bound(const LatentAttnShape& shape);

// Enqueues the attention on stream s. Returns cudaErrorInvalidValue for a
// shape the kernels do not take (see the limits above) or a short workspace,
// else the launch status. Never aborts.
cudaError_t latent_attention(const LatentAttnShape& shape, const LatentAttnArgs& args, void* workspace,
                             size_t workspace_bytes, cudaStream_t s);

// Per-launch view for benchmarks: the same work as latent_attention, with an
// event recorded after each of the four stages (any may be null).
cudaError_t latent_attention_timed(const LatentAttnShape& shape, const LatentAttnArgs& args, void* workspace,
                                   size_t workspace_bytes, cudaStream_t s, cudaEvent_t after_scores,
                                   cudaEvent_t after_values, cudaEvent_t after_reduce);

}  // namespace starkv::cuda
