#include "backend/cpu_ops.h"

#include <algorithm>
#include <cmath>

namespace starkv::cpu {

// Compiled for x86-64-v3 (AVX2 + FMA) and for the baseline; the loader picks
// at run time, so the library runs on any x86-64 and still uses wide vectors
// and fused multiply-add where present.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define STARKV_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define STARKV_TARGET_CLONES
#endif

STARKV_TARGET_CLONES
float dot(const float* a, const float* b, size_t n) {
    // 32 independent partial sums: four 8-wide vectors hide the FMA latency.
    // The summation order is fixed (no -ffast-math), so results are
    // reproducible run to run.
    float acc[32] = {};
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int j = 0; j < 32; ++j) acc[j] += a[i + j] * b[i + j];
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
    for (int j = 8; j < 32; ++j) acc[j & 7] += acc[j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

// y += p * x over n floats (the value accumulation of attention).
STARKV_TARGET_CLONES
static void axpy(float p, const float* x, float* y, size_t n) {
    for (size_t i = 0; i < n; ++i) y[i] += p * x[i];
}

STARKV_TARGET_CLONES
void matvec_t(const float* mt, const float* z, size_t r, size_t n, float* out) {
    std::fill(out, out + n, 0.0f);
    for (size_t c = 0; c < r; ++c) {
        const float zc = z[c];
        const float* row = mt + c * n;
        for (size_t d = 0; d < n; ++d) out[d] += zc * row[d];
    }
}

void matmul(const Matrix& w, const float* x, int n_tokens, float* out, ThreadPool& pool) {
    const size_t rows = static_cast<size_t>(w.rows), cols = static_cast<size_t>(w.cols);
    // Rows in blocks: each weight row is read once and reused for every token
    // while it is in cache. A chunk gets at least ~64K multiply-adds, so tiny
    // matrices are not split (waking a worker costs more than they do).
    const size_t macs_per_row = std::max<size_t>(cols * static_cast<size_t>(n_tokens), 1);
    const size_t grain = std::max<size_t>(4, 65536 / macs_per_row);
    pool.parallel_for(rows, grain, [&](size_t r0, size_t r1) {
        for (size_t r = r0; r < r1; ++r) {
            const float* wr = w.data.data() + r * cols;
            for (int t = 0; t < n_tokens; ++t)
                out[static_cast<size_t>(t) * rows + r] = dot(wr, x + static_cast<size_t>(t) * cols, cols);
        }
    });
}

void rms_norm(const float* x, const float* weight, float* out, int n, float eps) {
    double ss = 0.0;
    for (int i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
    const float scale = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
    for (int i = 0; i < n; ++i) out[i] = x[i] * scale * weight[i];
}

RopeTable::RopeTable(const RopeConfig& rope) : cfg_(rope) {
    const int half = rope.n_dims / 2;
    inv_freq_.resize(static_cast<size_t>(half));
    for (int i = 0; i < half; ++i) {
        double f = std::pow(static_cast<double>(rope.theta), -2.0 * i / rope.n_dims);
        if (rope.scaling == RopeScaling::Linear) {
            f /= rope.factor;
        } else if (rope.scaling == RopeScaling::Llama3) {
            // Llama 3.1: long wavelengths slowed by `factor`, short ones kept,
            // a smooth blend between (as transformers' _compute_llama3_parameters).
            const double pi = 3.14159265358979323846;
            const double low_wavelen = rope.original_max_pos / rope.low_freq_factor;
            const double high_wavelen = rope.original_max_pos / rope.high_freq_factor;
            const double wavelen = 2 * pi / f;
            if (wavelen > low_wavelen) {
                f /= rope.factor;
            } else if (wavelen >= high_wavelen) {
                double smooth = (rope.original_max_pos / wavelen - rope.low_freq_factor) /
                                (rope.high_freq_factor - rope.low_freq_factor);
                f = (1 - smooth) * f / rope.factor + smooth * f;
            }
        }
        if (!rope.freq_factors.empty()) f /= rope.freq_factors[static_cast<size_t>(i)];
        inv_freq_[static_cast<size_t>(i)] = f;
    }
}

void RopeTable::apply(float* x, int n_heads, int head_dim, int pos) const {
    const int half = cfg_.n_dims / 2;
    for (int i = 0; i < half; ++i) {
        const double angle = pos * inv_freq_[static_cast<size_t>(i)];
        const float c = static_cast<float>(std::cos(angle)), s = static_cast<float>(std::sin(angle));
        for (int h = 0; h < n_heads; ++h) {
            float* v = x + static_cast<size_t>(h) * head_dim;
            float* a;
            float* b;
            if (cfg_.layout == RopeLayout::Adjacent) {
                a = v + 2 * i;
                b = v + 2 * i + 1;
            } else {
                a = v + i;
                b = v + i + half;
            }
            const float x0 = *a, x1 = *b;
            *a = x0 * c - x1 * s;
            *b = x0 * s + x1 * c;
        }
    }
}

void swiglu(const float* gate, const float* up, float* out, int n) {
    for (int i = 0; i < n; ++i) {
        const float g = gate[i];
        out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
}

void softmax(float* x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; ++i) mx = std::max(mx, x[i]);
    double sum = 0.0;
    for (int i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - mx);
        sum += x[i];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int i = 0; i < n; ++i) x[i] *= inv;
}

void attention_group(const float* q, const float* k, const float* v, size_t stride, int n_keys, int group,
                     int head_dim, float* out, float* scores) {
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    const size_t hd = static_cast<size_t>(head_dim), nk = static_cast<size_t>(n_keys);
    for (size_t t = 0; t < nk; ++t) {
        const float* kt = k + t * stride;
        for (int g = 0; g < group; ++g) scores[static_cast<size_t>(g) * nk + t] = dot(q + g * hd, kt, hd) * scale;
    }
    for (int g = 0; g < group; ++g) softmax(scores + static_cast<size_t>(g) * nk, n_keys);
    std::fill(out, out + static_cast<size_t>(group) * hd, 0.0f);
    for (size_t t = 0; t < nk; ++t) {
        const float* vt = v + t * stride;
        for (int g = 0; g < group; ++g) axpy(scores[static_cast<size_t>(g) * nk + t], vt, out + g * hd, hd);
    }
}

void attention_one(const float* q, const float* k_cache, const float* v_cache, size_t kv_stride,
                   int pos, int n_head, int n_head_kv, int head_dim, float* out, float* scratch) {
    const int group = n_head / n_head_kv;
    const size_t hd = static_cast<size_t>(head_dim);
    for (int kvh = 0; kvh < n_head_kv; ++kvh) {
        const size_t first = static_cast<size_t>(kvh) * static_cast<size_t>(group) * hd;
        attention_group(q + first, k_cache + kvh * hd, v_cache + kvh * hd, kv_stride, pos + 1, group, head_dim,
                        out + first, scratch);
    }
}

}  // namespace starkv::cpu
