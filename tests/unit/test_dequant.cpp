// Dequantization against float64 references computed here from the ggml
// block layouts, independent of the library's code paths.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "model/dequant.h"

using namespace starkv;

namespace {

// Reference half -> double by the definition: (-1)^s * 2^(e-15) * (1 + m/1024).
double ref_half(uint16_t h) {
    const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31) v = m ? std::numeric_limits<double>::quiet_NaN() : INFINITY;
    else if (e == 0) v = std::ldexp(static_cast<double>(m), -24);
    else v = std::ldexp(1024.0 + m, e - 25);
    return s ? -v : v;
}

// Reference bf16 -> double: (-1)^s * 2^(e-127) * (1 + m/128).
double ref_bf16(uint16_t h) {
    const int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
    double v;
    if (e == 255) v = m ? std::numeric_limits<double>::quiet_NaN() : INFINITY;
    else if (e == 0) v = std::ldexp(static_cast<double>(m), -133);
    else v = std::ldexp(128.0 + m, e - 134);
    return s ? -v : v;
}

void put_u16(std::vector<uint8_t>& b, uint16_t v) {
    b.push_back(static_cast<uint8_t>(v & 0xff));
    b.push_back(static_cast<uint8_t>(v >> 8));
}

// A finite, normal half scale in a modest range.
uint16_t random_scale(std::mt19937& rng) {
    std::uniform_int_distribution<int> exp(5, 20), mant(0, 1023), sign(0, 1);
    return static_cast<uint16_t>((sign(rng) << 15) | (exp(rng) << 10) | mant(rng));
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 1e-6 * std::fabs(want[i]) + 1e-30) << "element " << i;
}

}  // namespace

TEST(Dequant, Fp16AllBitPatterns) {
    for (uint32_t b = 0; b < 65536; ++b) {
        const uint16_t h = static_cast<uint16_t>(b);
        const float f = fp16_to_fp32(h);
        const double r = ref_half(h);
        if (std::isnan(r)) {
            ASSERT_TRUE(std::isnan(f)) << std::hex << b;
            ASSERT_TRUE(std::isnan(fp16_to_fp32(fp32_to_fp16(f))));
            continue;
        }
        ASSERT_EQ(static_cast<double>(f), r) << std::hex << b;
        ASSERT_EQ(std::signbit(f), (b >> 15) != 0) << std::hex << b;
        // Every half is exactly representable in fp32, so the round trip is exact.
        ASSERT_EQ(fp32_to_fp16(f), h) << std::hex << b;
    }
}

TEST(Dequant, Fp32ToFp16RoundsToNearestEven) {
    // Random fp32 bit patterns over the whole half range (incl.
    // subnormals and overflow), checked against a brute-force search: the
    // result must be the nearest half, ties to the even mantissa.
    auto nearest = [](double x) -> uint16_t {
        // Brute force over positive halves (finite), by reference values.
        uint16_t best = 0;
        double bd = INFINITY;
        for (uint32_t b = 0; b < 0x7c00; ++b) {
            const double d = std::fabs(ref_half(static_cast<uint16_t>(b)) - x);
            if (d < bd || (d == bd && (b & 1) == 0)) {
                bd = d;
                best = static_cast<uint16_t>(b);
            }
        }
        // Beyond max half + half an ulp, IEEE rounds to infinity.
        if (x >= 65520.0) return 0x7c00;
        return best;
    };
    std::mt19937 rng(7);
    std::uniform_int_distribution<uint32_t> bits(0x33000000u, 0x47800000u);  // ~2^-25 .. 65536
    for (int i = 0; i < 800; ++i) {
        const float f = std::bit_cast<float>(bits(rng));
        ASSERT_EQ(fp32_to_fp16(f), nearest(f)) << f;
        ASSERT_EQ(fp32_to_fp16(-f), nearest(f) | 0x8000) << f;
    }
    // Exact ties.
    EXPECT_EQ(fp32_to_fp16(1.0f + 1.0f / 2048), 0x3c00);                 // tie -> even (down)
    EXPECT_EQ(fp32_to_fp16(1.0f + 3.0f / 2048), 0x3c02);                 // tie -> even (up)
    EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);              // half the min subnormal
    EXPECT_EQ(fp32_to_fp16(std::ldexp(1.5f, -25)), 0x0001);
    EXPECT_EQ(fp32_to_fp16(std::ldexp(3.0f, -25)), 0x0002);              // 1.5 ulp -> even 2
    EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7bff);
    EXPECT_EQ(fp32_to_fp16(65519.0f), 0x7bff);
    EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7c00);
    EXPECT_EQ(fp32_to_fp16(INFINITY), 0x7c00);
    EXPECT_EQ(fp32_to_fp16(-INFINITY), 0xfc00);
    EXPECT_EQ(fp32_to_fp16(1e-30f), 0x0000);
    EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
    const uint16_t n = fp32_to_fp16(std::numeric_limits<float>::quiet_NaN());
    EXPECT_EQ(n & 0x7c00, 0x7c00);
    EXPECT_NE(n & 0x03ff, 0);
}

TEST(Dequant, Bf16AllBitPatterns) {
    for (uint32_t b = 0; b < 65536; ++b) {
        const float f = bf16_to_fp32(static_cast<uint16_t>(b));
        const double r = ref_bf16(static_cast<uint16_t>(b));
        if (std::isnan(r)) {
            ASSERT_TRUE(std::isnan(f)) << std::hex << b;
            continue;
        }
        ASSERT_EQ(static_cast<double>(f), r) << std::hex << b;
        ASSERT_EQ(std::signbit(f), (b >> 15) != 0) << std::hex << b;
    }
}

TEST(Dequant, F16AndBf16Rows) {
    std::mt19937 rng(1);
    std::uniform_int_distribution<int> u16(0, 65535);
    std::vector<uint8_t> buf;
    std::vector<double> want_h, want_b;
    for (int i = 0; i < 97; ++i) {
        uint16_t h = static_cast<uint16_t>(u16(rng));
        if (((h >> 10) & 31) == 31) h &= 0xbfff;  // keep finite
        put_u16(buf, h);
        want_h.push_back(ref_half(h));
    }
    std::vector<float> out(97);
    dequantize(GgmlType::F16, buf.data() + 0, out.data(), 97);
    expect_close(out, want_h);

    buf.clear();
    for (int i = 0; i < 97; ++i) {
        uint16_t h = static_cast<uint16_t>(u16(rng));
        if (((h >> 7) & 255) == 255) h &= 0xbfff;
        put_u16(buf, h);
        want_b.push_back(ref_bf16(h));
    }
    // Unaligned source on purpose: file data need not be aligned.
    std::vector<uint8_t> shifted(1);
    shifted.insert(shifted.end(), buf.begin(), buf.end());
    dequantize(GgmlType::BF16, shifted.data() + 1, out.data(), 97);
    expect_close(out, want_b);
}

TEST(Dequant, F32Copies) {
    std::vector<float> in = {1.5f, -2.0f, 0.0f, 3.25e-20f};
    std::vector<float> out(4);
    dequantize(GgmlType::F32, in.data(), out.data(), 4);
    EXPECT_EQ(in, out);
}

TEST(Dequant, Q8_0) {
    std::mt19937 rng(42);
    std::uniform_int_distribution<int> q(-128, 127);
    const size_t nblocks = 5;
    std::vector<uint8_t> buf;
    std::vector<double> want;
    for (size_t b = 0; b < nblocks; ++b) {
        const uint16_t d = random_scale(rng);
        put_u16(buf, d);
        for (int j = 0; j < 32; ++j) {
            const int v = q(rng);
            buf.push_back(static_cast<uint8_t>(static_cast<int8_t>(v)));
            want.push_back(ref_half(d) * v);
        }
    }
    ASSERT_EQ(buf.size(), ggml_row_bytes(GgmlType::Q8_0, 32 * nblocks));
    std::vector<float> out(32 * nblocks);
    dequantize(GgmlType::Q8_0, buf.data(), out.data(), out.size());
    expect_close(out, want);
}

TEST(Dequant, Q4_0) {
    std::mt19937 rng(43);
    std::uniform_int_distribution<int> nib(0, 15);
    const size_t nblocks = 6;
    std::vector<uint8_t> buf;
    std::vector<double> want(32 * nblocks);
    for (size_t b = 0; b < nblocks; ++b) {
        const uint16_t d = random_scale(rng);
        put_u16(buf, d);
        for (int j = 0; j < 16; ++j) {
            const int lo = nib(rng), hi = nib(rng);
            buf.push_back(static_cast<uint8_t>(lo | (hi << 4)));
            // ggml: low nibble of byte j is element j, high nibble is j + 16.
            want[b * 32 + j] = ref_half(d) * (lo - 8);
            want[b * 32 + j + 16] = ref_half(d) * (hi - 8);
        }
    }
    ASSERT_EQ(buf.size(), ggml_row_bytes(GgmlType::Q4_0, 32 * nblocks));
    std::vector<float> out(32 * nblocks);
    dequantize(GgmlType::Q4_0, buf.data(), out.data(), out.size());
    expect_close(out, want);
}

TEST(Dequant, Q4_1) {
    std::mt19937 rng(44);
    std::uniform_int_distribution<int> nib(0, 15);
    const size_t nblocks = 6;
    std::vector<uint8_t> buf;
    std::vector<double> want(32 * nblocks);
    for (size_t b = 0; b < nblocks; ++b) {
        const uint16_t d = random_scale(rng), m = random_scale(rng);
        put_u16(buf, d);
        put_u16(buf, m);
        for (int j = 0; j < 16; ++j) {
            const int lo = nib(rng), hi = nib(rng);
            buf.push_back(static_cast<uint8_t>(lo | (hi << 4)));
            want[b * 32 + j] = ref_half(d) * lo + ref_half(m);
            want[b * 32 + j + 16] = ref_half(d) * hi + ref_half(m);
        }
    }
    ASSERT_EQ(buf.size(), ggml_row_bytes(GgmlType::Q4_1, 32 * nblocks));
    std::vector<float> out(32 * nblocks);
    dequantize(GgmlType::Q4_1, buf.data(), out.data(), out.size());
    for (size_t i = 0; i < out.size(); ++i)  // d*q + m rounds once in fp32
        ASSERT_NEAR(out[i], want[i], 1e-6 * std::fabs(want[i]) + 1e-6)
            << i;
}

TEST(Dequant, TypeTable) {
    EXPECT_EQ(ggml_block_bytes(GgmlType::Q4_0), 18u);
    EXPECT_EQ(ggml_block_bytes(GgmlType::Q4_1), 20u);
    EXPECT_EQ(ggml_block_bytes(GgmlType::Q8_0), 34u);
    EXPECT_EQ(ggml_block_elems(GgmlType::Q8_0), 32u);
    EXPECT_EQ(ggml_block_elems(GgmlType::F16), 1u);
    EXPECT_EQ(ggml_row_bytes(GgmlType::F32, 3), 12u);
    EXPECT_EQ(ggml_row_bytes(GgmlType::BF16, 3), 6u);
    EXPECT_EQ(ggml_row_bytes(GgmlType::Q4_0, 64), 36u);
    EXPECT_EQ(ggml_type_name(3), "Q4_1");
    EXPECT_EQ(ggml_type_name(12), "type 12");
    EXPECT_TRUE(ggml_type_supported(30));
    EXPECT_FALSE(ggml_type_supported(12));  // Q4_K
    try {
        ggml_row_bytes(GgmlType::Q8_0, 33);
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_EQ(e.status(), STARKV_ERR_CORRUPT);
    }
    try {
        ggml_block_bytes(static_cast<GgmlType>(12));
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_EQ(e.status(), STARKV_ERR_UNSUPPORTED);
    }
}
