// A model as a file stores it: config, tokenizer and the tensors' raw bytes
// under canonical (GGUF-style) names. Readers produce sources (GGUF, Hugging
// Face, bundle); one function builds fp32 ModelWeights from any of them, and
// the bundle writer stores a source's tensors exactly as they are.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kv/latent_quant.h"
#include "model/loader.h"

namespace starkv {

// A dtype id that is none of the GgmlTypes (e.g. an I32 safetensors tensor).
inline constexpr uint32_t kUnknownDtype = 0xFFFFFFFFu;

struct SourceTensor {
    std::string name;            // canonical: token_embd.weight, blk.N.attn_q.weight, ...
    uint32_t dtype = kUnknownDtype;  // GgmlType id (dequant.h); may be unsupported
    std::string dtype_name;      // as the file names it, for messages ("Q4_1", "I32")
    std::vector<int64_t> shape;  // outermost first
    const uint8_t* data = nullptr;  // n_bytes bytes; null when the dtype is unsupported
    size_t n_bytes = 0;
};

struct ModelSource {
    std::string format;  // "gguf", "hf", "bundle"
    std::string label;   // prefix of messages: "GGUF", a directory, "bundle '<path>'"
    ModelConfig config;  // n_vocab and tied_embeddings already resolved
    Vocab vocab;
    std::vector<SourceTensor> tensors;
    std::vector<TensorInfo> infos;  // the file's own tensor table, for `info`
    // Quantized STAR-KV latents per layer (bundles with feature kv-quant); empty = none.
    std::vector<LatentQuantLayer> kv_quant;
    // What keeps the tensor bytes alive (mapped files, decompressed buffers).
    std::vector<std::shared_ptr<const void>> owners;
    // Canonical name -> the name in the source file (messages); null = same.
    std::string (*source_name)(const std::string& canonical) = nullptr;

    const SourceTensor* find(const std::string& name) const;
    std::string shown(const std::string& canonical) const {
        return source_name ? source_name(canonical) : canonical;
    }
};

ModelSource open_gguf_source(const std::string& path);
ModelSource open_hf_source(const std::string& dir);
// Detects the format: directory -> Hugging Face, "GGUF" magic -> GGUF, bundle
// magic -> bundle (progress covers the bundle's decompression), else
// Error(STARKV_ERR_CORRUPT) "unknown format".
ModelSource open_model_source(const std::string& path, const ProgressFn& progress);

// Looks up every weight by canonical name, checks dtype and shape against the
// config and dequantizes to fp32 on all cores. progress is called on this
// thread once per tensor with done/total.
LoadedModel build_model(const ModelSource& source, const ProgressFn& progress);

}  // namespace starkv
