// A context: one sequence's KV cache, scratch buffers, thread pool and the
// logits of the last evaluation. Used by one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/forward.h"
#include "model/model.h"

namespace starkv::backend { class DeviceForward; }

namespace starkv {

struct ContextOptions {
    int n_ctx = 0;      // 0 = model's training context
    int n_threads = 0;  // 0 = hardware threads
    int backend = 0;    // STARKV_BACKEND_*
    int device = 0;     // GPU ordinal
    uint64_t device_memory_limit = 0;  // bytes on the GPU; 0 = none
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
    int n_ctx() const { return kv_.n_ctx(); }
    int n_past() const { return n_past_; }

    // Appends tokens (Error STARKV_ERR_CONTEXT_FULL when they do not fit,
    // STARKV_ERR_INVALID_ARGUMENT for an id outside the vocabulary; nothing
    // changes in either case).
    // check_abort = false: the caller has asked the abort callback itself
    // (generate does, before sampling, so every emitted token is cached).
    void eval(const int32_t* tokens, size_t n, bool all_logits, bool check_abort = true);
    // Logits of the i-th token of the last eval (-1 = last); nullptr if none.
    const float* logits(int i) const;
    void reset();
    void rewind(int n_past);

    // Asked before each micro-batch of eval (and by callers between their
    // steps); true cancels: eval then throws Error(STARKV_ERR_CANCELLED) and
    // leaves the sequence as it was before the call.
    void set_abort(std::function<bool()> fn) { abort_ = std::move(fn); }
    bool aborted() const { return abort_ && abort_(); }

    // Calibration only: sees each layer's K/V projection input (see ForwardScratch).
    void set_kv_input_observer(std::function<void(int layer, const float* xn, int n)> fn) {
        scratch_.observe_kv_input = std::move(fn);
    }

    uint64_t kv_bytes_per_token() const { return kv_.bytes_per_token(); }
    uint64_t kv_bytes_per_token_uncompressed() const { return kv_.bytes_per_token_uncompressed(); }
    uint64_t kv_bytes_reserved() const { return kv_.bytes_reserved(); }
    uint64_t device_bytes() const;
    uint64_t device_weight_bytes() const;  // matrices a device decode step reads; 0 on the CPU

private:
    std::shared_ptr<const Model> model_;
    KvCache kv_;
    ThreadPool pool_;
    ForwardScratch scratch_;
    std::function<bool()> abort_;
    std::vector<float> logits_;
    int n_logits_ = 0;
    int n_past_ = 0;
    std::unique_ptr<backend::DeviceForward> device_;  // GPU forward (its own KV cache); null on the CPU
};

}  // namespace starkv
