// A 64-bit name for a model's weights, for saved KV states: a state restores
// only into a context whose model has the same hash (kv/kv_state.h). Shapes
// alone cannot tell two models apart; this hashes what the cache's rows
// depend on.
#pragma once

#include <cstdint>

#include "model/config.h"
#include "model/weights.h"

namespace starkv {

// XXH3-64 streamed over: the config's dimensions (n_vocab, n_embd, n_ff,
// n_layer, n_head, n_head_kv, head_dim, rms_eps, rope base and scaling type),
// then, in layer order, every weight matrix and norm as loaded (fp32), the
// STAR-KV factors and the quantization plans of the cache rows; then the
// embeddings, output norm and head. Independent of the file format the model
// came from (a GGUF and the bundle packed from it without STAR-KV hash the
// same when their fp32 weights are equal).
uint64_t weights_hash(const ModelConfig& config, const ModelWeights& weights);

}  // namespace starkv
