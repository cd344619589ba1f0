// Decoding of ggml element types to fp32, bit-exact with ggml's layouts.
#include "model/dequant.h"

#include <bit>
#include <cstring>

#include "core/error.h"

namespace starkv {

namespace {

constexpr size_t kQK = 32;  // elements per quantized block (QK4_0 = QK4_1 = QK8_0)

uint16_t load_u16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, sizeof v);  // blocks are not aligned; memcpy avoids UB
    return v;
}

}  // namespace

std::string ggml_type_name(uint32_t type) {
    switch (static_cast<GgmlType>(type)) {
        case GgmlType::F32: return "F32";
        case GgmlType::F16: return "F16";
        case GgmlType::Q4_0: return "Q4_0";
        case GgmlType::Q4_1: return "Q4_1";
        case GgmlType::Q8_0: return "Q8_0";
        case GgmlType::BF16: return "BF16";
    }
    return "type " + std::to_string(type);
}

bool ggml_type_supported(uint32_t type) {
    switch (static_cast<GgmlType>(type)) {
        case GgmlType::F32:
        case GgmlType::F16:
        case GgmlType::Q4_0:
        case GgmlType::Q4_1:
        case GgmlType::Q8_0:
        case GgmlType::BF16: return true;
    }
    return false;
}

size_t ggml_block_elems(GgmlType type) {
    switch (type) {
        case GgmlType::Q4_0:
        case GgmlType::Q4_1:
        case GgmlType::Q8_0: return kQK;
        case GgmlType::F32:
        case GgmlType::F16:
        case GgmlType::BF16: return 1;
    }
    unsupported("unsupported tensor type " + ggml_type_name(static_cast<uint32_t>(type)));
}

size_t ggml_block_bytes(GgmlType type) {
    switch (type) {
        case GgmlType::F32: return 4;
        case GgmlType::F16: return 2;
        case GgmlType::BF16: return 2;
        case GgmlType::Q4_0: return 2 + kQK / 2;      // d + 16 nibble bytes = 18
        case GgmlType::Q4_1: return 2 + 2 + kQK / 2;  // d + m + 16 bytes = 20
        case GgmlType::Q8_0: return 2 + kQK;          // d + 32 int8 = 34
    }
    unsupported("unsupported tensor type " + ggml_type_name(static_cast<uint32_t>(type)));
}

size_t ggml_row_bytes(GgmlType type, size_t n) {
    size_t be = ggml_block_elems(type);
    if (n % be != 0)
        corrupt(std::to_string(n) + " elements of " + ggml_type_name(static_cast<uint32_t>(type)) +
                " is not a multiple of the block size " + std::to_string(be));
    return n / be * ggml_block_bytes(type);
}

float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);  // inf, or nan keeping its payload
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);  // rebias 15 -> 127
    } else if (mant == 0) {
        bits = sign;  // signed zero
    } else {
        // Subnormal half: normalize the mantissa into an fp32 normal.
        int e = 113;  // exponent of 2^-14 in fp32 bias, before shifting
        while ((mant & 0x400u) == 0) {
            mant <<= 1;
            --e;
        }
        mant &= 0x3ffu;
        bits = sign | (static_cast<uint32_t>(e) << 23) | (mant << 13);
    }
    return std::bit_cast<float>(bits);
}

uint16_t fp32_to_fp16(float f) {
    const uint32_t x = std::bit_cast<uint32_t>(f);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
    const uint32_t exp = (x >> 23) & 0xffu;
    const uint32_t mant = x & 0x7fffffu;

    if (exp == 0xff) {  // inf / nan (nan stays quiet nan with some payload)
        if (mant == 0) return sign | 0x7c00u;
        return sign | 0x7e00u | static_cast<uint16_t>(mant >> 13);
    }
    const int e = static_cast<int>(exp) - 127 + 15;  // half exponent
    if (e >= 0x1f) return sign | 0x7c00u;             // overflow -> inf
    if (e <= 0) {
        // Result is subnormal (or zero) in half: value = m * 2^-24.
        if (e < -10) return sign;  // below half of the smallest subnormal: rounds to 0
        const uint32_t m = mant | 0x800000u;  // implicit 1
        const int shift = 14 - e;             // 24-bit mantissa -> units of 2^-24
        uint32_t r = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) ++r;  // may carry into the normal range: ok
        return sign | static_cast<uint16_t>(r);
    }
    uint32_t r = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;  // carry may round up to inf: correct
    return sign | static_cast<uint16_t>(r);
}

float bf16_to_fp32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

void dequantize(GgmlType type, const void* src_v, float* dst, size_t n) {
    const auto* src = static_cast<const uint8_t*>(src_v);
    switch (type) {
        case GgmlType::F32:
            std::memcpy(dst, src, n * sizeof(float));
            return;
        case GgmlType::F16:
            for (size_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(load_u16(src + 2 * i));
            return;
        case GgmlType::BF16:
            for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(src + 2 * i));
            return;
        default: break;
    }
    const size_t nb = ggml_row_bytes(type, n) / ggml_block_bytes(type);  // checks n % 32
    const size_t bb = ggml_block_bytes(type);
    for (size_t b = 0; b < nb; ++b) {
        const uint8_t* blk = src + b * bb;
        float* y = dst + b * kQK;
        switch (type) {
            case GgmlType::Q8_0: {
                const float d = fp16_to_fp32(load_u16(blk));
                const auto* q = reinterpret_cast<const int8_t*>(blk + 2);
                for (size_t j = 0; j < kQK; ++j) y[j] = d * static_cast<float>(q[j]);
                break;
            }
            case GgmlType::Q4_0: {
                const float d = fp16_to_fp32(load_u16(blk));
                const uint8_t* qs = blk + 2;
                for (size_t j = 0; j < kQK / 2; ++j) {
                    y[j] = d * static_cast<float>(static_cast<int>(qs[j] & 0x0f) - 8);
                    y[j + kQK / 2] = d * static_cast<float>(static_cast<int>(qs[j] >> 4) - 8);
                }
                break;
            }
            case GgmlType::Q4_1: {
                const float d = fp16_to_fp32(load_u16(blk));
                const float m = fp16_to_fp32(load_u16(blk + 2));
                const uint8_t* qs = blk + 4;
                for (size_t j = 0; j < kQK / 2; ++j) {
                    y[j] = d * static_cast<float>(qs[j] & 0x0f) + m;
                    y[j + kQK / 2] = d * static_cast<float>(qs[j] >> 4) + m;
                }
                break;
            }
            default:
                unsupported("unsupported tensor type " +
                            ggml_type_name(static_cast<uint32_t>(type)));
        }
    }
}

}  // namespace starkv
