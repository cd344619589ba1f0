// Writing a .skv bundle from any model source (GGUF, Hugging Face directory,
// another bundle). Tensors are stored exactly as the source stores them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "calibration/lowrank.h"

#include "model/loader.h"

namespace starkv {

struct PackOptions {
    int zstd_level = 3;   // 0 = uncompressed (64-byte aligned, mappable); 1..22 zstd
    ProgressFn progress;  // on the calling thread; false cancels
    // STAR-KV: calibrate on the text of calib_path and store low-rank K/V
    // factors (bundle feature "kv-lowrank"). Unset = no KV compression.
    std::optional<lowrank::Options> kv;
    std::string calib_path;
};

struct PackStats {
    uint64_t source_bytes = 0;
    uint64_t bundle_bytes = 0;
    uint64_t raw_tensor_bytes = 0;
    size_t n_tensors = 0;
};

// Loads in_path (so that a model that would not load is never packed), then
// writes out_path through a temporary file in the same directory renamed at
// the end: a failed or cancelled pack leaves no file behind.
PackStats pack_bundle(const std::string& in_path, const std::string& out_path, const PackOptions& options);

// A bundle of a real model's shapes with random weights (bundle/synthetic.h),
// written like pack_bundle (options.kv and calib_path are not used).
PackStats pack_synthetic(const std::string& shape, int n_layers, float kv_compress, const std::string& out_path,
                         const PackOptions& options);

}  // namespace starkv
