// A loaded model: config, weights and tokenizer. Immutable after load, so one
// Model is shared by every context and thread.
#pragma once

#include <memory>
#include <string>

#include "backend/cpu_ops.h"
#include "model/loader.h"
#include "tokenizer/tokenizer.h"

namespace starkv {

class Model {
public:
    Model(LoadedModel loaded);

    const ModelConfig& config() const { return loaded_.config; }
    const ModelWeights& weights() const { return loaded_.weights; }
    // Calibration only (STAR-KV packing), before the model is shared.
    ModelWeights& mutable_weights() { return loaded_.weights; }
    const Tokenizer& tokenizer() const { return *tokenizer_; }
    const std::vector<TensorInfo>& tensors() const { return loaded_.tensors; }
    const std::string& format() const { return loaded_.format; }
    const cpu::RopeTable& rope() const { return rope_; }
    uint64_t n_params() const;

private:
    LoadedModel loaded_;
    std::unique_ptr<Tokenizer> tokenizer_;
    cpu::RopeTable rope_;
};

}  // namespace starkv
