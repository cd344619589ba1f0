// A small GGUF writer (and reader) for tests: build GGUF files from scratch
// with chosen metadata and tensors, or read a real file into the same form,
// change one field precisely, and write it back.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace starkv_test {

enum GgufValueType : uint32_t {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5, GGUF_F32 = 6,
    GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10, GGUF_I64 = 11, GGUF_F64 = 12,
};

enum GgmlTensorType : uint32_t { GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q8_0 = 8,
                                 GGML_Q6_K = 14, GGML_BF16 = 30 };

// Little-endian byte encoders for crafting raw values.
std::string le_u32(uint32_t v);
std::string le_u64(uint64_t v);
std::string gguf_str(const std::string& s);  // u64 length + bytes

struct GgufKv {
    std::string key;
    uint32_t type = 0;
    std::string value;  // the encoded value exactly as it follows the type field
    // When set, written verbatim instead of key/type/value (for a bad key length).
    std::optional<std::string> raw_entry;
};

struct GgufTensor {
    std::string name;
    std::vector<uint64_t> dims;  // innermost first, as GGUF stores them
    uint32_t type = GGML_F32;
    std::string data;            // stored bytes
    std::optional<uint64_t> offset;   // overrides the computed data offset
    std::optional<uint32_t> n_dims;   // overrides dims.size() in the header
};

class GgufWriter {
public:
    std::string magic = "GGUF";
    uint32_t version = 3;
    uint64_t alignment = 32;                  // layout; add general.alignment yourself if wanted
    std::optional<uint64_t> n_tensors_override, n_kv_override;
    std::vector<GgufKv> kvs;
    std::vector<GgufTensor> tensors;

    // Metadata setters replace an existing key in place (keeping its position).
    GgufWriter& set_raw(const std::string& key, uint32_t type, const std::string& value);
    GgufWriter& set_u32(const std::string& key, uint32_t v);
    GgufWriter& set_i32(const std::string& key, int32_t v);
    GgufWriter& set_u64(const std::string& key, uint64_t v);
    GgufWriter& set_f32(const std::string& key, float v);
    GgufWriter& set_bool(const std::string& key, bool v);
    GgufWriter& set_string(const std::string& key, const std::string& v);
    GgufWriter& set_string_array(const std::string& key, const std::vector<std::string>& v);
    GgufWriter& set_f32_array(const std::string& key, const std::vector<float>& v);
    GgufWriter& set_i32_array(const std::string& key, const std::vector<int32_t>& v);
    bool remove(const std::string& key);
    GgufKv* find(const std::string& key);

    GgufWriter& add_tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, std::string data);
    GgufWriter& add_f32_tensor(const std::string& name, std::vector<uint64_t> dims, float fill_scale = 0.02f);
    GgufTensor* tensor(const std::string& name);
    bool remove_tensor(const std::string& name);

    std::string build() const;
    // Offset in build() where the tensor data section starts.
    uint64_t data_start() const;
    void write(const std::string& path) const;
};

// Reads a whole GGUF file (v2/v3, tensor types F32/F16/BF16/Q8_0/Q4_0/Q4_1)
// into a writer whose build() reproduces it. Throws std::runtime_error.
GgufWriter read_gguf(const std::string& bytes);

// A tiny valid llama model built from scratch (SPM vocab of byte tokens plus
// <unk>/<s>/</s>), F32 weights filled with small deterministic values.
struct TinyLlama {
    std::string arch = "llama";
    uint32_t n_embd = 16, n_ff = 32, n_layer = 2, n_head = 4, n_head_kv = 2, n_vocab = 259, n_ctx = 64;
    bool tied = false;
};
GgufWriter tiny_llama(const TinyLlama& spec = {});

}  // namespace starkv_test
