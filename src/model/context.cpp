#include "model/context.h"

#include <algorithm>
#include <thread>

#include "backend/cuda_loader.h"
#include "core/error.h"

namespace starkv {
namespace {

int resolve_threads(int n) {
    if (n > 0) return n;
    unsigned hw = std::thread::hardware_concurrency();
    return hw ? static_cast<int>(hw) : 1;
}

int resolve_ctx(const Model& model, int n_ctx) {
    if (n_ctx < 0) fail(STARKV_ERR_INVALID_ARGUMENT, "n_ctx must not be negative");
    if (n_ctx == 0) n_ctx = model.config().n_ctx_train;
    if (n_ctx > (1 << 24)) fail(STARKV_ERR_INVALID_ARGUMENT, "n_ctx " + std::to_string(n_ctx) + " is too large");
    return n_ctx;
}

}  // namespace

Context::Context(std::shared_ptr<const Model> model, const ContextOptions& options)
    : model_(std::move(model)),
      kv_(model_->config(), model_->weights(), resolve_ctx(*model_, options.n_ctx)),
      pool_(std::min(resolve_threads(options.n_threads), 256)),
      device_(backend::open_device_forward(*model_, kv_.n_ctx(), options.backend, options.device,
                                            options.device_memory_limit)) {}

Context::~Context() = default;

uint64_t Context::device_bytes() const { return device_ ? device_->device_bytes() : 0; }
uint64_t Context::device_weight_bytes() const { return device_ ? device_->weight_bytes() : 0; }

void Context::eval(const int32_t* tokens, size_t n, bool all_logits, bool check_abort) {
    if (n == 0) fail(STARKV_ERR_INVALID_ARGUMENT, "no tokens to evaluate");
    if (n > static_cast<size_t>(kv_.n_ctx() - n_past_))
        fail(STARKV_ERR_CONTEXT_FULL, "context full: " + std::to_string(n_past_) + " + " + std::to_string(n) +
                                          " tokens exceed n_ctx " + std::to_string(kv_.n_ctx()));
    const int n_vocab = model_->config().n_vocab;
    for (size_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            fail(STARKV_ERR_INVALID_ARGUMENT, "token id " + std::to_string(tokens[i]) + " is outside the vocabulary");

    const size_t V = static_cast<size_t>(n_vocab);
    try {
        logits_.resize((all_logits ? n : 1) * V);
        if (!device_) kv_.ensure(n_past_ + static_cast<int>(n));
        if (!device_) scratch_.reserve(model_->config(), static_cast<int>(std::min<size_t>(n, kMicroBatch)), kv_.n_ctx(), pool_.size());
    } catch (const std::bad_alloc&) {
        fail(STARKV_ERR_OUT_OF_MEMORY, "cannot allocate buffers for " + std::to_string(n) + " tokens");
    }
    const int n_past_before = n_past_;
    for (size_t done = 0; done < n;) {
        if (check_abort && aborted()) {
            // Positions past n_past_before hold a partial prompt: forget them.
            n_past_ = n_past_before;
            n_logits_ = 0;
            fail(STARKV_ERR_CANCELLED, "evaluation cancelled by the abort callback after " + std::to_string(done) +
                                           " of " + std::to_string(n) + " tokens");
        }
        const int m = static_cast<int>(std::min<size_t>(n - done, kMicroBatch));
        const bool last = done + static_cast<size_t>(m) == n;
        // Without all_logits only the final micro-batch's last row is needed.
        float* out = all_logits ? logits_.data() + done * V : (last ? logits_.data() : nullptr);
        if (device_) device_->forward(tokens + done, m, n_past_, all_logits, out);
        else forward(*model_, kv_, scratch_, pool_, tokens + done, m, n_past_, all_logits, out);
        n_past_ += m;
        done += static_cast<size_t>(m);
    }
    n_logits_ = all_logits ? static_cast<int>(n) : 1;
}

const float* Context::logits(int i) const {
    if (n_logits_ == 0) return nullptr;
    if (i < 0) i = n_logits_ + i;
    if (i < 0 || i >= n_logits_) return nullptr;
    return logits_.data() + static_cast<size_t>(i) * static_cast<size_t>(model_->config().n_vocab);
}

void Context::reset() { rewind(0); }

void Context::rewind(int n_past) {
    if (n_past < 0 || n_past > n_past_)
        fail(STARKV_ERR_INVALID_ARGUMENT, "cannot rewind to " + std::to_string(n_past) + " (holding " +
                                              std::to_string(n_past_) + " tokens)");
    n_past_ = n_past;
    n_logits_ = 0;  // the old logits no longer describe the sequence's end
}

}  // namespace starkv
