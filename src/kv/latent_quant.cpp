#include "kv/latent_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "model/dequant.h"

namespace starkv {
namespace {

size_t header_bytes(int bits) { return bits == 8 ? 2 : 4; }

uint16_t load16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}

void store16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// The fp16 nearest f, moved one step up when it is below f (so a scale
// rounded to fp16 still covers the range).
uint16_t fp16_at_least(float f) {
    uint16_t h = fp32_to_fp16(f);
    if (fp16_to_fp32(h) < f) h = (h & 0x8000) ? static_cast<uint16_t>(h == 0x8000 ? 0x0001 : h - 1) : static_cast<uint16_t>(h + 1);
    return h;
}

// The fp16 nearest f, moved one step down when it is above f.
uint16_t fp16_at_most(float f) {
    uint16_t h = fp32_to_fp16(f);
    if (fp16_to_fp32(h) > f) h = (h & 0x8000) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h == 0 ? 0x8001 : h - 1);
    return h;
}

void quantize_group(const float* x, int n, int bits, uint8_t* out) {
    if (bits == 8) {
        float amax = 0;
        for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
        const uint16_t s16 = fp16_at_least(amax / 127.0f);
        const float s = fp16_to_fp32(s16), inv = s > 0 ? 1.0f / s : 0.0f;
        store16(out, s16);
        int8_t* q = reinterpret_cast<int8_t*>(out + 2);
        for (int i = 0; i < n; ++i) q[i] = static_cast<int8_t>(std::clamp(std::lround(x[i] * inv), -127L, 127L));
        return;
    }
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
    const int levels = (1 << bits) - 1;
    const uint16_t m16 = fp16_at_most(lo);
    const float m = fp16_to_fp32(m16);
    const uint16_t s16 = fp16_at_least((hi - m) / static_cast<float>(levels));
    const float s = fp16_to_fp32(s16), inv = s > 0 ? 1.0f / s : 0.0f;
    store16(out, s16);
    store16(out + 2, m16);
    uint8_t* codes = out + 4;
    // 8 codes per `bits` bytes, little-endian bit order.
    for (int i = 0; i < n; i += 8) {
        uint32_t word = 0;
        for (int j = 0; j < 8; ++j) {
            const long q = std::clamp(std::lround((x[i + j] - m) * inv), 0L, static_cast<long>(levels));
            word |= static_cast<uint32_t>(q) << (j * bits);
        }
        for (int b = 0; b < bits; ++b) codes[b] = static_cast<uint8_t>(word >> (8 * b));
        codes += bits;
    }
}

void dequantize_group(const uint8_t* in, int n, int bits, float* x) {
    const float s = fp16_to_fp32(load16(in));
    if (bits == 8) {
        const int8_t* q = reinterpret_cast<const int8_t*>(in + 2);
        for (int i = 0; i < n; ++i) x[i] = s * static_cast<float>(q[i]);
        return;
    }
    const float m = fp16_to_fp32(load16(in + 2));
    const uint8_t* codes = in + 4;
    if (bits == 4) {
        for (int i = 0; i < n; i += 2, ++codes) {
            x[i] = m + s * static_cast<float>(*codes & 15);
            x[i + 1] = m + s * static_cast<float>(*codes >> 4);
        }
        return;
    }
    const uint32_t mask = (1u << bits) - 1;
    for (int i = 0; i < n; i += 8) {
        uint32_t word = 0;
        for (int b = 0; b < bits; ++b) word |= static_cast<uint32_t>(codes[b]) << (8 * b);
        for (int j = 0; j < 8; ++j) x[i + j] = m + s * static_cast<float>((word >> (j * bits)) & mask);
        codes += bits;
    }
}

}  // namespace

size_t quant_group_bytes(int bits, int block) {
    return header_bytes(bits) + static_cast<size_t>(block) * static_cast<size_t>(bits) / 8;
}

size_t LatentQuant::row_bytes() const {
    if (!active()) return 0;
    size_t n = 0;
    for (int g = 0; g < n_groups(); ++g) n += quant_group_bytes(group_bits(g), block);
    return n;
}

double LatentQuant::code_bits() const {
    if (!active()) return 32.0;
    return (static_cast<double>(split) * hi_bits + static_cast<double>(width - split) * lo_bits) / width;
}

void LatentQuant::validate(int max_width, const std::string& where) const {
    auto bad = [&](const std::string& why) { corrupt(where + ": invalid KV quantization plan: " + why); };
    if (block < 8 || block > 128 || (block & (block - 1)) != 0) bad("block " + std::to_string(block) + " is not a power of two in [8, 128]");
    if (width < block || width > max_width || width % block != 0)
        bad("width " + std::to_string(width) + " is not a multiple of block " + std::to_string(block) + " in [block, " +
            std::to_string(max_width) + "]");
    if (split < 0 || split > width || split % block != 0) bad("split " + std::to_string(split) + " is not a multiple of the block within the width");
    if (split > 0 && hi_bits != 8 && hi_bits != 4) bad("leading bits " + std::to_string(hi_bits) + " not in {8, 4}");
    if (split < width && lo_bits != 4 && lo_bits != 3 && lo_bits != 2 && lo_bits != 8)
        bad("tail bits " + std::to_string(lo_bits) + " not in {8, 4, 3, 2}");
}

void quantize_latent(const LatentQuant& q, const float* z, uint8_t* row) {
    for (int g = 0; g < q.n_groups(); ++g) {
        const int bits = q.group_bits(g);
        quantize_group(z + static_cast<size_t>(g) * q.block, q.block, bits, row);
        row += quant_group_bytes(bits, q.block);
    }
}

void dequantize_latent(const LatentQuant& q, const uint8_t* row, float* z) {
    for (int g = 0; g < q.n_groups(); ++g) {
        const int bits = q.group_bits(g);
        dequantize_group(row, q.block, bits, z + static_cast<size_t>(g) * q.block);
        row += quant_group_bytes(bits, q.block);
    }
}

}  // namespace starkv
