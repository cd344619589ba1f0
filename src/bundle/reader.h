// Reading a .skv bundle: validate header, metadata and directory, then
// decompress (or view, for raw tensors) and checksum every tensor on all cores.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "model/model_source.h"

namespace starkv {

bool is_bundle_magic(const uint8_t* data, size_t size);

// Every tensor is checked against its XXH64 before use; anything inconsistent
// is Error(STARKV_ERR_CORRUPT), a newer major version or an unknown required
// feature STARKV_ERR_UNSUPPORTED. progress: once per tensor, on this thread.
ModelSource open_bundle_source(const std::string& path, const ProgressFn& progress);

// A JSON document with the bundle's metadata (the tokenizer summarised) and
// its tensor directory, read without touching the tensor data.
std::string describe_bundle(const std::string& path);

}  // namespace starkv
