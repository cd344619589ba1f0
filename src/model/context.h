// A context: the paged KV pool of its sequences, scratch buffers, thread pool
// and the logits of the last evaluations. Used by one thread at a time; many
// contexts may share one Model (docs/kv-pool.md, "Thread contract").
//
// Sequence 0 always exists: the single-sequence calls (eval, rewind, ...)
// work on it. More sequences are created, forked, truncated and removed by
// id, and a batch (eval_batch) runs tokens of several sequences in one
// forward pass.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/thread_pool.h"
#include "kv/kv_cache.h"
#include "kv/page_pool.h"
#include "kv/paged_rows.h"
#include "model/forward.h"
#include "model/model.h"

namespace starkv::backend { class DeviceForward; }

namespace starkv {

struct ContextOptions {
    int n_ctx = 0;      // 0 = model's training context; the most tokens of one sequence
    int n_threads = 0;  // 0 = hardware threads
    int backend = 0;    // STARKV_BACKEND_*
    int device = 0;     // GPU ordinal
    uint64_t device_memory_limit = 0;  // bytes on the GPU; 0 = none
    int device_type = 0;               // STARKV_DEVICE_TYPE_*
    // The KV pool. budget 0 = n_ctx tokens of one sequence.
    int page_tokens = 16;
    uint64_t kv_budget_bytes = 0;
    int max_sequences = 256;
    bool prefix_caching = true;
    bool evict_cached_prefixes = true;
};

// One token of a batch: its sequence and position (the sequence's length at
// its turn), and whether its logits are kept.
struct BatchItem {
    int32_t token = 0;
    SeqId seq = 0;
    int32_t pos = 0;
    bool logits = false;
};

class Context {
public:
    // Tokens per forward call: bounds the scratch memory of long prompts.
    static constexpr int kMicroBatch = 64;

    Context(std::shared_ptr<const Model> model, const ContextOptions& options);
    ~Context();
    // True when the forward pass runs on a GPU backend.
    bool on_device() const { return device_ != nullptr; }

    const Model& model() const { return *model_; }
    int n_ctx() const { return fmt_.n_ctx(); }
    int n_past() const;

    // Appends tokens to sequence 0 (Error STARKV_ERR_CONTEXT_FULL when they
    // do not fit in n_ctx, STARKV_ERR_KV_POOL_FULL when the pool has no room,
    // STARKV_ERR_INVALID_ARGUMENT for an id outside the vocabulary; nothing
    // changes in any of these cases).
    // check_abort = false: the caller has asked the abort callback itself
    // (generate does, before sampling, so every emitted token is cached).
    void eval(const int32_t* tokens, size_t n, bool all_logits, bool check_abort = true);
    // Logits of the i-th token of the last eval (-1 = last); nullptr if none.
    const float* logits(int i) const;
    void reset();
    void rewind(int n_past);

    // ---- sequences (INVALID_ARGUMENT for unknown ids, or known ones where new ones are asked)
    void seq_create(SeqId seq);
    // Sequence 0 cannot be removed (truncate it to 0 instead).
    void seq_remove(SeqId seq);
    void seq_truncate(SeqId seq, int n_past);
    void seq_fork(SeqId src, SeqId dst);
    int seq_n_past(SeqId seq) const;
    bool seq_exists(SeqId seq) const;
    // Prompt of an empty sequence: takes the longest cached prefix of
    // tokens[0, n - 1) from the pool, evaluates the rest; returns the tokens
    // reused. The sequence's logits are then those of the last token.
    int seq_prefill(SeqId seq, const int32_t* tokens, size_t n);
    // One forward pass over the items (any mix of sequences, prompt chunks and
    // decode steps). Each sequence's items are at consecutive positions that
    // start at its length. Checked before anything is computed; on any error
    // nothing changed (KV_POOL_FULL when the pages cannot be had).
    void eval_batch(std::span<const BatchItem> items);
    // Logits of item i of the last batch (nullptr unless it asked for them).
    const float* batch_logits(size_t i) const;
    // Logits of the sequence's last token evaluated with logits (batch,
    // prefill or eval); nullptr when none or when the sequence changed since.
    const float* seq_logits(SeqId seq) const;

    PagePoolStats pool_stats() const { return kv_->stats(); }
    const PagePool& pool() const { return *kv_; }

    // Saved state (kv/kv_state.h) of the given sequences (empty = all).
    std::vector<uint8_t> save_state(std::span<const SeqId> seqs) const;
    // target >= 0: the state holds one sequence, restored under this id.
    // Returns the restored ids.
    std::vector<SeqId> restore_state(std::span<const uint8_t> state, SeqId target);
    // Identifies the model's weights and STAR-KV factors (model/weights_hash.h).
    uint64_t bundle_hash() const;

    // Asked before each micro-batch of eval (and by callers between their
    // steps); true cancels: eval then throws Error(STARKV_ERR_CANCELLED) and
    // leaves the sequence as it was before the call.
    void set_abort(std::function<bool()> fn) { abort_ = std::move(fn); }
    bool aborted() const { return abort_ && abort_(); }

    // Calibration only: sees each layer's K/V projection input (see ForwardScratch).
    void set_kv_input_observer(std::function<void(int layer, const float* xn, int n)> fn) {
        scratch_.observe_kv_input = std::move(fn);
    }

    // Calibration probes only: see ForwardScratch::observe_residual / resume
    // (an empty resume function runs every layer again).
    void set_residual_observer(std::function<void(int layer, const int32_t* pos, const float* x, int n)> fn) {
        scratch_.observe_residual = std::move(fn);
    }
    void set_resume(int layer, std::function<void(const int32_t* pos, float* x, int n)> fn) {
        scratch_.resume_layer = layer;
        scratch_.resume = std::move(fn);
    }

    uint64_t kv_bytes_per_token() const { return fmt_.bytes_per_token(); }
    uint64_t kv_bytes_per_token_uncompressed() const { return fmt_.bytes_per_token_uncompressed(); }
    // Row bytes of the pool's allocated pages (page padding not counted).
    uint64_t kv_bytes_reserved() const;
    uint64_t device_bytes() const;
    uint64_t device_weight_bytes() const;  // matrices a device decode step reads; 0 on the CPU

private:
    // Runs items (validated) in micro-batches; logits of the rows that ask
    // go to out, in item order. On an error (or cancellation when
    // check_abort) every touched sequence is truncated back.
    void run(std::span<const BatchItem> items, float* out, bool check_abort);
    void check_items(std::span<const BatchItem> items) const;
    void require_cpu(const char* what) const;
    void clear_seq_logits(SeqId seq);

    std::shared_ptr<const Model> model_;
    KvCache fmt_;  // row formats
    std::unique_ptr<PagePool> kv_;
    int max_sequences_;
    ThreadPool pool_;
    ForwardScratch scratch_;
    std::function<bool()> abort_;
    std::vector<float> logits_;  // eval's
    int n_logits_ = 0;
    std::vector<float> batch_logits_;
    std::vector<int64_t> batch_row_;  // item -> row of batch_logits_ (-1: none)
    std::unordered_map<SeqId, std::vector<float>> seq_logits_;  // empty: none
    // Buffers of a step, kept so that a decode step allocates nothing once
    // warm (a batch holds few sequences: linear searches are cheaper than maps).
    struct StepScratch {
        std::vector<BatchItem> items;
        std::vector<std::pair<SeqId, int>> seqs;  // sequence, its end position / old length
        std::vector<int32_t> tokens, tk, pos, sq, lr;
        std::vector<std::pair<SeqId, int64_t>> last_row;
        std::vector<SeqId> fresh;
        PagedRows rows;
    };
    mutable StepScratch step_;
    mutable std::optional<uint64_t> bundle_hash_;
    int device_n_past_ = 0;                           // sequence 0 on a GPU backend
    std::unique_ptr<backend::DeviceForward> device_;  // GPU forward (its own KV cache); null on the CPU
};

}  // namespace starkv
