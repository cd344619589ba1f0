// Loading a model file into memory: one entry point, one reader per format.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/weights.h"
#include "tokenizer/vocab.h"

namespace starkv {

// Progress in [0,1]; return false to cancel (the load throws
// Error(STARKV_ERR_CANCELLED)).
using ProgressFn = std::function<bool(float)>;

struct LoadedModel {
    std::string format;  // "gguf", "hf"
    ModelConfig config;
    ModelWeights weights;
    Vocab vocab;
    std::vector<TensorInfo> tensors;
};

// Detects the format (directory -> Hugging Face, GGUF magic -> GGUF).
LoadedModel load_model(const std::string& path, const ProgressFn& progress);

LoadedModel load_gguf(const std::string& path, const ProgressFn& progress);
LoadedModel load_hf_dir(const std::string& dir, const ProgressFn& progress);

// Vocab from a Hugging Face tokenizer.json (+ tokenizer_config.json beside it
// when present, for add_bos / bos / eos).
Vocab load_tokenizer_json(const std::string& dir);

}  // namespace starkv
