// Conversion of stored tensor element types to fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace starkv {

// GGML type ids as stored in GGUF tensor infos.
enum class GgmlType : uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 8,
    BF16 = 30,
};

// Name for messages ("Q4_1"); "type N" for unknown ids.
std::string ggml_type_name(uint32_t type);
// True for the types above.
bool ggml_type_supported(uint32_t type);
// Elements per block (32 for Q*_*, 1 otherwise) and bytes per block.
size_t ggml_block_elems(GgmlType type);
size_t ggml_block_bytes(GgmlType type);
// Bytes of n elements (n must be a multiple of the block size).
size_t ggml_row_bytes(GgmlType type, size_t n);

// Writes n fp32 values decoded from src (ggml_row_bytes(type, n) bytes).
void dequantize(GgmlType type, const void* src, float* dst, size_t n);

float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
float bf16_to_fp32(uint16_t h);

}  // namespace starkv
