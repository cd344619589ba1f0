// Sanity checks on hyper-parameters read from an untrusted file.
#include "model/config.h"

#include <cmath>
#include <cstdint>

#include "core/error.h"

namespace starkv {

namespace {

// A field out of [1, max] is a corrupt file: the bound keeps a hostile
// header from asking for a huge allocation further on.
void check_range(const char* field, int64_t value, int64_t max) {
    if (value <= 0)
        corrupt(std::string("model config: ") + field + " must be positive (got " +
                std::to_string(value) + ")");
    if (value > max)
        corrupt(std::string("model config: ") + field + " = " + std::to_string(value) +
                " exceeds the limit " + std::to_string(max));
}

}  // namespace

void ModelConfig::validate() const {
    check_range("n_vocab", n_vocab, int64_t{1} << 22);
    check_range("n_embd", n_embd, 65536);
    check_range("n_ff", n_ff, int64_t{1} << 20);
    check_range("n_layer", n_layer, 1024);
    check_range("n_head", n_head, 1024);
    check_range("n_head_kv", n_head_kv, 1024);
    check_range("head_dim", head_dim, 1024);
    check_range("n_ctx_train", n_ctx_train, int64_t{1} << 24);
    check_range("rope.n_dims", rope.n_dims, head_dim);

    if (n_head % n_head_kv != 0)
        corrupt("model config: n_head (" + std::to_string(n_head) +
                ") is not a multiple of n_head_kv (" + std::to_string(n_head_kv) + ")");
    if (head_dim % 2 != 0)
        unsupported("model config: head_dim (" + std::to_string(head_dim) + ") must be even");
    if (rope.n_dims % 2 != 0)
        unsupported("model config: rope.n_dims (" + std::to_string(rope.n_dims) +
                    ") must be even");
    // Attention width is bounded too, so Q/O matrices stay within reason.
    if (static_cast<int64_t>(n_head) * head_dim > 65536)
        corrupt("model config: n_head * head_dim = " +
                std::to_string(static_cast<int64_t>(n_head) * head_dim) +
                " exceeds the limit 65536");
    if (!(rms_eps > 0.0f) || !(rms_eps < 1.0f))
        corrupt("model config: rms_eps = " + std::to_string(rms_eps) + " is out of (0, 1)");
    if (!(rope.theta > 0.0f) || rope.theta == INFINITY)
        corrupt("model config: rope.theta = " + std::to_string(rope.theta) + " must be positive");
    if (rope.scaling != RopeScaling::None && !(rope.factor > 0.0f && rope.factor < 1e6f))
        corrupt("model config: rope.factor = " + std::to_string(rope.factor) + " is out of range");
    if (rope.scaling == RopeScaling::Llama3) {
        if (!(rope.low_freq_factor > 0.0f) || !(rope.high_freq_factor > rope.low_freq_factor))
            corrupt("model config: llama3 rope needs 0 < low_freq_factor < high_freq_factor");
        check_range("rope.original_max_pos", rope.original_max_pos, int64_t{1} << 24);
    }
}

}  // namespace starkv
