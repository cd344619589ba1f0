// Reader for Hugging Face .safetensors files (single or sharded).
// Layout: u64 little-endian header length N, N bytes of JSON mapping tensor
// names to {dtype, shape, data_offsets: [begin, end)} relative to the data
// section that follows the header. Everything is checked against the file
// size before use; a malformed file is Error(STARKV_ERR_CORRUPT).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "model/weights.h"

namespace starkv {

struct SafetensorsTensor {
    std::string name;
    std::string dtype;            // "F32", "BF16", "I64", ...
    std::vector<int64_t> shape;   // outermost first
    uint64_t n_elems = 0;
    uint64_t offset = 0;          // absolute byte offset in the file
    uint64_t n_bytes = 0;
};

class SafetensorsFile {
public:
    // Throws Error(STARKV_ERR_IO) when missing, CORRUPT when malformed,
    // UNSUPPORTED for a dtype this reader does not know.
    explicit SafetensorsFile(const std::string& path);

    const std::string& path() const { return file_.path(); }
    // In order of data offset.
    const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
    const SafetensorsTensor* find(const std::string& name) const;

    // Decodes an F32/F16/BF16 tensor into dst (t.n_elems floats);
    // other dtypes are Error(STARKV_ERR_UNSUPPORTED).
    void read_f32(const SafetensorsTensor& t, float* dst) const;
    // The t.n_bytes stored bytes of t (checked against the file size).
    const uint8_t* bytes(const SafetensorsTensor& t) const;

private:
    MappedFile file_;
    std::vector<SafetensorsTensor> tensors_;
    std::map<std::string, size_t> by_name_;
};

// All tensors of a checkpoint directory: model.safetensors, or the shards
// listed in model.safetensors.index.json.
class SafetensorsSet {
public:
    // Opens dir/model.safetensors.index.json when present, else
    // dir/model.safetensors.
    static SafetensorsSet open_dir(const std::string& dir);
    // One file.
    static SafetensorsSet open_file(const std::string& path);
    // The shards named by an index file (paths relative to its directory).
    static SafetensorsSet open_index(const std::string& index_path);

    const SafetensorsTensor* find(const std::string& name) const;
    // t must come from find() on this set.
    void read_f32(const SafetensorsTensor& t, float* dst) const;
    // Every tensor reachable by name, with its stored bytes (valid while the set lives).
    std::vector<std::pair<const SafetensorsTensor*, const uint8_t*>> entries() const;
    // Rows for `starkv info`, file by file.
    std::vector<TensorInfo> tensor_infos() const;

private:
    struct Ref {
        size_t file;
        const SafetensorsTensor* tensor;
    };
    std::vector<std::unique_ptr<SafetensorsFile>> files_;
    std::map<std::string, Ref> by_name_;
};

// Bytes of one element of a safetensors dtype; 0 when unknown.
size_t safetensors_dtype_size(const std::string& dtype);

}  // namespace starkv
