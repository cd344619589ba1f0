#include "backend/cpu_ops.h"

#include <algorithm>
#include <cmath>

namespace starkv::cpu {

// Compiled for AVX2+FMA and for the baseline; the loader picks at run time, so
// the library runs on any x86-64 and still uses wide vectors where present.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define STARKV_TARGET_CLONES __attribute__((target_clones("avx2,fma", "default")))
#else
#define STARKV_TARGET_CLONES
#endif

STARKV_TARGET_CLONES
float dot(const float* a, const float* b, size_t n) {
    // Eight independent partial sums let the compiler vectorise without
    // -ffast-math (the summation order is fixed, so results are reproducible).
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

void matmul(const Matrix& w, const float* x, int n_tokens, float* out, ThreadPool& pool) {
    const size_t rows = static_cast<size_t>(w.rows), cols = static_cast<size_t>(w.cols);
    // Rows in blocks: each weight row is read once and reused for every token
    // while it is in cache.
    const size_t grain = std::max<size_t>(16, 4096 / std::max<size_t>(cols, 1));
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

void attention_one(const float* q, const float* k_cache, const float* v_cache, size_t kv_stride,
                   int pos, int n_head, int n_head_kv, int head_dim, float* out, float* scratch) {
    const int group = n_head / n_head_kv;
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    const int n_keys = pos + 1;
    for (int h = 0; h < n_head; ++h) {
        const int kvh = h / group;
        const float* qh = q + static_cast<size_t>(h) * head_dim;
        float* att = scratch;
        for (int t = 0; t < n_keys; ++t)
            att[t] = dot(qh, k_cache + static_cast<size_t>(t) * kv_stride + static_cast<size_t>(kvh) * head_dim,
                         static_cast<size_t>(head_dim)) * scale;
        softmax(att, n_keys);
        float* oh = out + static_cast<size_t>(h) * head_dim;
        std::fill(oh, oh + head_dim, 0.0f);
        for (int t = 0; t < n_keys; ++t) {
            const float* vt = v_cache + static_cast<size_t>(t) * kv_stride + static_cast<size_t>(kvh) * head_dim;
            const float p = att[t];
            for (int d = 0; d < head_dim; ++d) oh[d] += p * vt[d];
        }
    }
}

}  // namespace starkv::cpu
