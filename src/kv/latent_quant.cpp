#include "kv/latent_quant.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "model/dequant.h"

namespace starkv {
namespace {

size_t header_bytes(int bits, bool zp) { return bits == 8 || !zp ? 2 : 4; }

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

// Packs 8 codes per `bits` bytes, little-endian bit order.
void pack_codes(const uint32_t* q, int n, int bits, uint8_t* codes) {
    for (int i = 0; i < n; i += 8) {
        uint32_t word = 0;
        for (int j = 0; j < 8; ++j) word |= q[i + j] << (j * bits);
        for (int b = 0; b < bits; ++b) codes[b] = static_cast<uint8_t>(word >> (8 * b));
        codes += bits;
    }
}

void quantize_group(const float* x, int n, int bits, bool zp, uint8_t* out) {
    if (bits < 8 && !zp) {
        // Symmetric: codes q in [0, 2^b - 2] stand for (q - (2^(b-1) - 1)) * scale.
        const int half = (1 << (bits - 1)) - 1;
        float amax = 0;
        for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
        const uint16_t s16 = fp16_at_least(amax / static_cast<float>(half));
        const float s = fp16_to_fp32(s16), inv = s > 0 ? 1.0f / s : 0.0f;
        store16(out, s16);
        uint32_t q[128];
        for (int i = 0; i < n; ++i)
            q[i] = static_cast<uint32_t>(std::clamp(std::lround(x[i] * inv), -static_cast<long>(half), static_cast<long>(half)) + half);
        pack_codes(q, n, bits, out + 2);
        return;
    }
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

void dequantize_group(const uint8_t* in, int n, int bits, bool zp, float* x) {
    const float s = fp16_to_fp32(load16(in));
    if (bits < 8 && !zp) {
        const float m = -s * static_cast<float>((1 << (bits - 1)) - 1);
        const uint8_t* codes = in + 2;
        const uint32_t mask = (1u << bits) - 1;
        for (int i = 0; i < n; i += 8) {
            uint32_t word = 0;
            for (int b = 0; b < bits; ++b) word |= static_cast<uint32_t>(codes[b]) << (8 * b);
            for (int j = 0; j < 8; ++j) x[i + j] = m + s * static_cast<float>((word >> (j * bits)) & mask);
            codes += bits;
        }
        return;
    }
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


// ---- log8: static range per group x per-token 8-bit log2 code ----

constexpr int kLog8Zero = 128;   // the code whose multiplier is 1
constexpr int kLog8PerOctave = 8;
// Codes below the smallest covering one that quantize_latent also tries
// (clipping the largest values for a finer step when that lowers the error).
constexpr int kLog8Search = 3;

const std::array<float, 256>& log8_table() {
    static const std::array<float, 256> t = [] {
        std::array<float, 256> a{};
        for (int e = 0; e < 256; ++e) a[static_cast<size_t>(e)] = static_cast<float>(std::exp2(static_cast<double>(e - kLog8Zero) / kLog8PerOctave));
        return a;
    }();
    return t;
}

// Packs/unpacks 8 codes of `bits` (<= 8) per `bits` bytes, little-endian bit order.
void pack_codes64(const uint32_t* q, int n, int bits, uint8_t* codes) {
    for (int i = 0; i < n; i += 8) {
        uint64_t word = 0;
        for (int j = 0; j < 8; ++j) word |= static_cast<uint64_t>(q[i + j]) << (j * bits);
        for (int b = 0; b < bits; ++b) codes[b] = static_cast<uint8_t>(word >> (8 * b));
        codes += bits;
    }
}

// Mid-rise codes of y (already centred) for a range R: q in [0, 2^b - 1]
// stands for (q - (2^b - 1) / 2) * step, step = R / ((2^b - 1) / 2). Returns
// the squared error.
double code_group(const float* y, int n, int bits, float range, uint32_t* q) {
    const float half = 0.5f * static_cast<float>((1 << bits) - 1);
    const float step = range / half, inv = step > 0 ? 1.0f / step : 0.0f;
    const long top = (1L << bits) - 1;
    double err = 0;
    for (int i = 0; i < n; ++i) {
        // (clamped before rounding: a range clipped at code 255 may leave far larger values)
        const long c = std::lround(std::clamp(y[i] * inv + half, 0.0f, static_cast<float>(top)));
        q[i] = static_cast<uint32_t>(c);
        const double d = static_cast<double>(y[i]) - (static_cast<double>(c) - half) * step;
        err += d * d;
    }
    return err;
}

void quantize_log8(const LatentQuant& q, const float* z, uint8_t* row) {
    const int G = q.n_groups(), B = q.block;
    thread_local std::vector<float> ybuf;
    thread_local std::vector<uint32_t> qbuf;
    if (ybuf.size() < static_cast<size_t>(q.width)) ybuf.resize(static_cast<size_t>(q.width)), qbuf.resize(static_cast<size_t>(q.width));
    float* y = ybuf.data();
    uint32_t* codes = qbuf.data();
    for (int c = 0; c < q.width; ++c) y[c] = z[c] - (q.offset.empty() ? 0.0f : q.offset[static_cast<size_t>(c)]);
    auto ratio = [&](int g) {
        float amax = 0;
        for (int i = 0; i < B; ++i) amax = std::max(amax, std::fabs(y[g * B + i]));
        return amax / q.base[static_cast<size_t>(g)];
    };
    const auto& T = log8_table();
    // The best code among the smallest covering one and the few below it.
    auto best_code = [&](float r, int g0, int g1) {
        const int up = log8_code_at_least(r);
        int best = up;
        double best_err = -1;
        for (int e = up; e >= std::max(0, up - kLog8Search); --e) {
            double err = 0;
            for (int g = g0; g < g1; ++g)
                err += code_group(y + g * B, B, q.group_bits(g), q.base[static_cast<size_t>(g)] * T[static_cast<size_t>(e)], codes + g * B);
            if (best_err < 0 || err < best_err) best_err = err, best = e;
        }
        return best;
    };
    auto write_group = [&](int g, int e) {
        const int bits = q.group_bits(g);
        code_group(y + g * B, B, bits, q.base[static_cast<size_t>(g)] * T[static_cast<size_t>(e)], codes + g * B);
        pack_codes64(codes + g * B, B, bits, row);
        row += static_cast<size_t>(B) * static_cast<size_t>(bits) / 8;
    };
    if (q.row_scale) {
        float r = 0;
        for (int g = 0; g < G; ++g) r = std::max(r, ratio(g));
        const int e = best_code(r, 0, G);
        *row++ = static_cast<uint8_t>(e);
        for (int g = 0; g < G; ++g) write_group(g, e);
        return;
    }
    for (int g = 0; g < G; ++g) {
        const int e = best_code(ratio(g), g, g + 1);
        *row++ = static_cast<uint8_t>(e);
        write_group(g, e);
    }
}

void dequantize_log8(const LatentQuant& q, const uint8_t* row, float* z) {
    const int G = q.n_groups(), B = q.block;
    const auto& T = log8_table();
    float mult = q.row_scale ? T[*row++] : 0.0f;
    for (int g = 0; g < G; ++g) {
        if (!q.row_scale) mult = T[*row++];
        const int bits = q.group_bits(g);
        const float half = 0.5f * static_cast<float>((1 << bits) - 1);
        const float step = q.base[static_cast<size_t>(g)] * mult / half, lo = -half * step;
        float* x = z + static_cast<size_t>(g) * B;
        if (bits == 4) {
            for (int i = 0; i < B; i += 2, ++row) {
                x[i] = lo + step * static_cast<float>(*row & 15);
                x[i + 1] = lo + step * static_cast<float>(*row >> 4);
            }
        } else if (bits == 8) {
            for (int i = 0; i < B; ++i) x[i] = lo + step * static_cast<float>(row[i]);
            row += B;
        } else {
            const uint64_t mask = (1u << bits) - 1;
            for (int i = 0; i < B; i += 8) {
                uint64_t word = 0;
                for (int b = 0; b < bits; ++b) word |= static_cast<uint64_t>(row[b]) << (8 * b);
                for (int j = 0; j < 8; ++j) x[i + j] = lo + step * static_cast<float>((word >> (j * bits)) & mask);
                row += bits;
            }
        }
    }
    if (!q.offset.empty())
        for (int c = 0; c < q.width; ++c) z[c] += q.offset[static_cast<size_t>(c)];
}

}  // namespace

float log8_multiplier(int code) { return log8_table()[static_cast<size_t>(std::clamp(code, 0, 255))]; }

int log8_code_at_least(float m) {
    if (!(m > 0)) return 0;
    const auto& T = log8_table();
    const double guess = std::ceil(std::log2(static_cast<double>(m)) * kLog8PerOctave) + kLog8Zero;
    int e = static_cast<int>(std::clamp(guess, 0.0, 255.0));
    while (e < 255 && T[static_cast<size_t>(e)] < m) ++e;
    while (e > 0 && T[static_cast<size_t>(e - 1)] >= m) --e;
    return e;
}

size_t quant_group_bytes(int bits, int block, bool zero_point) {
    return header_bytes(bits, zero_point) + static_cast<size_t>(block) * static_cast<size_t>(bits) / 8;
}

size_t LatentQuant::row_bytes() const {
    if (!active()) return 0;
    if (log8()) {
        size_t n = row_scale ? 1 : static_cast<size_t>(n_groups());
        for (int g = 0; g < n_groups(); ++g) n += static_cast<size_t>(block) * static_cast<size_t>(group_bits(g)) / 8;
        return n;
    }
    size_t n = 0;
    for (int g = 0; g < n_groups(); ++g) n += quant_group_bytes(group_bits(g), block, zero_point);
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
    if (scale != QuantScale::Fp16 && scale != QuantScale::Log8) bad("unknown scale format");
    if (log8()) {
        auto ok_bits = [](int b) { return b == 8 || (b >= 2 && b <= 6); };
        if (split > 0 && (!ok_bits(hi_bits) || hi_bits < 4)) bad("leading bits " + std::to_string(hi_bits) + " not in {8, 6, 5, 4}");
        if (split < width && !ok_bits(lo_bits)) bad("tail bits " + std::to_string(lo_bits) + " not in {8, 6, 5, 4, 3, 2}");
        if (base.size() != static_cast<size_t>(n_groups())) bad("log8 needs one base range per group");
        for (float b : base)
            if (!(std::isfinite(b) && b > 0 && b < 1e30f)) bad("log8 base range is not a positive finite number");
        if (offset.size() != static_cast<size_t>(width)) bad("log8 needs one offset per channel");
        for (float o : offset)
            if (!std::isfinite(o)) bad("log8 offset is not finite");
        return;
    }
    if (split > 0 && hi_bits != 8 && hi_bits != 4) bad("leading bits " + std::to_string(hi_bits) + " not in {8, 4}");
    if (split < width && lo_bits != 4 && lo_bits != 3 && lo_bits != 2 && lo_bits != 8)
        bad("tail bits " + std::to_string(lo_bits) + " not in {8, 4, 3, 2}");
}

void quantize_latent(const LatentQuant& q, const float* z, uint8_t* row) {
    if (q.log8()) return quantize_log8(q, z, row);
    for (int g = 0; g < q.n_groups(); ++g) {
        const int bits = q.group_bits(g);
        quantize_group(z + static_cast<size_t>(g) * q.block, q.block, bits, q.zero_point, row);
        row += quant_group_bytes(bits, q.block, q.zero_point);
    }
}

void dequantize_latent(const LatentQuant& q, const uint8_t* row, float* z) {
    if (q.log8()) return dequantize_log8(q, row, z);
    for (int g = 0; g < q.n_groups(); ++g) {
        const int bits = q.group_bits(g);
        dequantize_group(row, q.block, bits, q.zero_point, z + static_cast<size_t>(g) * q.block);
        row += quant_group_bytes(bits, q.block, q.zero_point);
    }
}

}  // namespace starkv
