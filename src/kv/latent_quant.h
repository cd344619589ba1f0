// Quantized STAR-KV latent rows (docs/kv-layout.md). A latent of padded
// width w is cut into groups of `block` channels (the Hadamard block folded
// into the factors at pack time); the leading `split` channels are stored at
// hi_bits, the rest at lo_bits. Two scale formats:
// - fp16 (bundle feature kv-quant): each group of one token holds its header
//   (8 bits: fp16 scale, symmetric int8; 2..4 bits: fp16 scale + fp16
//   minimum, or fp16 scale only when symmetric) followed by its packed codes.
// - log8 (feature kv-quant-v2): two-level scales, a static fp32 range per
//   group and a static offset per channel, calibrated at pack time and
//   stored with the plan, times a per-token one-byte code e standing for
//   2^((e - 128) / 8): one code per group, or one for the whole row. Codes
//   are symmetric mid-rise around the channel's offset.
// The groups follow each other: one row of row_bytes() bytes per token, rows
// contiguous over positions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace starkv {

enum class QuantScale : uint8_t {
    Fp16 = 0,  // fp16 scale (+ fp16 minimum) per group and token
    Log8 = 1,  // static range per group x per-token 8-bit log2 code
};

struct LatentQuant {
    int width = 0;    // channels in the cache (the factors' rank, padded to blocks); 0 = fp32 row
    int block = 0;    // channels per group, a power of two in [8, 128]
    int split = 0;    // leading channels at hi_bits (a multiple of block, <= width)
    int hi_bits = 0;  // 8 or 4 (unused when split == 0)
    int lo_bits = 0;  // 4, 3 or 2 (unused when split == width)
    // Groups below 8 bits: fp16 minimum + scale (true) or symmetric around 0
    // with a scale only (false, 2 bytes less per group). 8 bits: always symmetric.
    bool zero_point = true;
    // Log8 only (zero_point is then unused):
    QuantScale scale = QuantScale::Fp16;
    bool row_scale = false;     // one code per token for the whole row (else one per group)
    std::vector<float> base{};    // per group: the static range (max |x - offset|) at code 128
    std::vector<float> offset{};  // per channel: static centre subtracted before coding

    bool active() const { return width > 0; }
    int n_groups() const { return width / block; }
    int group_bits(int g) const { return g * block < split ? hi_bits : lo_bits; }
    bool log8() const { return scale == QuantScale::Log8; }
    // Bytes of one token's row, headers included.
    size_t row_bytes() const;
    // Code bits per channel averaged over the row (headers not counted).
    double code_bits() const;
    // Throws Error(STARKV_ERR_CORRUPT) "<where>: ..." unless the plan is one the
    // kernels handle and width <= max_width.
    void validate(int max_width, const std::string& where) const;
};

// Bytes of one group of `block` channels at `bits` (header + codes), fp16 scales.
size_t quant_group_bytes(int bits, int block, bool zero_point = true);

// Log8 scale codes: the range multiplier a code stands for, and the smallest
// code whose multiplier is at least m (255 when none is).
float log8_multiplier(int code);
int log8_code_at_least(float m);

// z: q.width floats -> row: q.row_bytes() bytes.
void quantize_latent(const LatentQuant& q, const float* z, uint8_t* row);
// row -> z (q.width floats).
void dequantize_latent(const LatentQuant& q, const uint8_t* row, float* z);

}  // namespace starkv

namespace starkv {

// The plan of one layer: per KV head for the keys, one for the value latent
// (latent layers), or one for every key and value row (plain layers); empty =
// fp32 rows.
struct LatentQuantLayer {
    std::vector<LatentQuant> k;
    LatentQuant v;
    LatentQuant plain;
    bool empty() const { return k.empty() && !plain.active(); }
};

}  // namespace starkv
