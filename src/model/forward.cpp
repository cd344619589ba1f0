#include "model/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace starkv {
namespace {

template <class T>
void grow(std::vector<T>& v, size_t n) {
    if (v.size() < n) v.resize(n);
}

// Keys handled together by one work item: small enough that the tile of
// reconstructed keys stays in L1, large enough to amortise the softmax rescale.
constexpr size_t kKeyTile = 32;
// From this many tokens in a micro-batch on, every cached key is reconstructed
// once per layer (each is read by many queries); below it, each work item
// reconstructs the keys it reads, tile by tile, and there is no key buffer.
constexpr int kReconstructOnceFrom = 8;

// Writes one latent row: fp32, or quantized on the fly.
void store_latent(const LatentQuant* q, const float* z, size_t width, uint8_t* row) {
    if (q) quantize_latent(*q, z, row);
    else std::memcpy(row, z, width * sizeof(float));
}

// The latent at row, as fp32: the row itself, or dequantized into buf.
const float* load_latent(const LatentQuant* q, const uint8_t* row, float* buf) {
    if (!q) return reinterpret_cast<const float*>(row);
    dequantize_latent(*q, row, buf);
    return buf;
}

// cos/sin of every RoPE pair for positions [0, n), computed as RopeTable::apply does.
void ensure_rope_table(const Model& model, ForwardScratch& s, int n) {
    if (n <= s.rope_positions) return;
    const std::vector<double>& f = model.rope().inv_freq();
    const size_t half = f.size();
    const int target = std::max(n, 2 * s.rope_positions);
    s.rope_cs.resize(static_cast<size_t>(target) * half * 2);
    for (int p = s.rope_positions; p < target; ++p)
        for (size_t i = 0; i < half; ++i) {
            const double angle = p * f[i];
            s.rope_cs[(static_cast<size_t>(p) * half + i) * 2] = static_cast<float>(std::cos(angle));
            s.rope_cs[(static_cast<size_t>(p) * half + i) * 2 + 1] = static_cast<float>(std::sin(angle));
        }
    s.rope_positions = target;
}

// RoPE of one head from the table (the same rotation as RopeTable::apply).
void rope_from_table(const RopeConfig& rc, const float* cs, int head_dim, float* v) {
    const int half = rc.n_dims / 2;
    for (int i = 0; i < half; ++i) {
        const float c = cs[2 * i], s = cs[2 * i + 1];
        float* a = rc.layout == RopeLayout::Adjacent ? v + 2 * i : v + i;
        float* b = rc.layout == RopeLayout::Adjacent ? v + 2 * i + 1 : v + i + half;
        const float x0 = *a, x1 = *b;
        *a = x0 * c - x1 * s;
        *b = x0 * s + x1 * c;
    }
    (void)head_dim;
}

// Dot product of short vectors (head_dim, small ranks): cpu::dot's wide
// accumulators cost more than the work below 32 elements.
inline float short_dot(const float* a, const float* b, size_t n) {
    if (n >= 32) return cpu::dot(a, b, n);
    float s = 0.0f;
    for (size_t i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
}

// Key of position p for KV head h: U_h z (z dequantized if need be; ut is U_h
// transposed, r x hd, so the sum runs over contiguous rows), then RoPE at p.
void reconstruct_key(const Model& model, const ForwardScratch& s, const float* ut, int r, int hd, const uint8_t* row,
                     const LatentQuant* q, int p, float* zbuf, float* out) {
    const float* z = load_latent(q, row, zbuf);
    // Vectorised (AVX2/FMA where present): in decode this is a fifth of a latent layer's time (docs/perf/cpu.md).
    cpu::matvec_t(ut, z, static_cast<size_t>(r), static_cast<size_t>(hd), out);
    const size_t half = model.rope().inv_freq().size();
    rope_from_table(model.config().rope, &s.rope_cs[static_cast<size_t>(p) * half * 2], hd, out);
}

// Attention of a STAR-KV layer: writes the micro-batch's latents to the cache
// (quantized when the layer has a plan), then one pass per (token, KV head)
// over the cached latents, a tile of keys at a time: keys are rebuilt
// (U_h k_lat, then RoPE at the key's own position), scored with an online
// softmax, and values are summed in latent space before being expanded with
// the head's rows of U_v. Quantized rows are dequantized inside the loop.
void latent_attention(const Model& model, int l, const KvCache& fmt, const PagedRows& kv, ForwardScratch& s,
                      ThreadPool& pool, const ForwardRows& rows) {
    const int n = rows.n;
    const ModelConfig& c = model.config();
    const LatentFactors& F = model.weights().layers[static_cast<size_t>(l)].lat;
    const size_t hd = static_cast<size_t>(c.head_dim);
    const size_t qd = static_cast<size_t>(c.n_head) * hd;
    const int n_kv = c.n_head_kv, group = c.n_head / c.n_head_kv;
    const size_t rv = static_cast<size_t>(F.v_a.rows);
    const LatentQuant* vq = fmt.v_quant(l, 0);
    const size_t v_stream = kv.stream(l, 0, KvKind::V);

    size_t max_r = rv;
    for (const Matrix& a : F.k_a) max_r = std::max(max_r, static_cast<size_t>(a.rows));
    grow(s.lat, static_cast<size_t>(n) * max_r);
    for (int h = 0; h < n_kv; ++h) {
        const Matrix& a = F.k_a[static_cast<size_t>(h)];
        cpu::matmul(a, s.xn.data(), n, s.lat.data(), pool);
        for (int t = 0; t < n; ++t)
            store_latent(fmt.k_quant(l, h), &s.lat[static_cast<size_t>(t) * a.rows], static_cast<size_t>(a.rows),
                         kv.row(rows.seq[t], kv.stream(l, h, KvKind::K), rows.pos[t]));
    }
    cpu::matmul(F.v_a, s.xn.data(), n, s.lat.data(), pool);
    for (int t = 0; t < n; ++t) store_latent(vq, &s.lat[t * rv], rv, kv.row(rows.seq[t], v_stream, rows.pos[t]));

    // Keys rebuilt once per layer: only for a pass over one sequence (a prompt);
    // a batch of several sequences' decode steps rebuilds them tile by tile.
    bool one_seq = true;
    int max_pos = 0;
    for (int t = 0; t < n; ++t) {
        one_seq = one_seq && rows.seq[t] == rows.seq[0];
        max_pos = std::max(max_pos, rows.pos[t]);
    }
    const size_t n_pos = static_cast<size_t>(max_pos + 1);
    ensure_rope_table(model, s, static_cast<int>(n_pos));
    // U_h transposed, per head.
    std::vector<size_t> ut_off(static_cast<size_t>(n_kv) + 1, 0);
    for (int h = 0; h < n_kv; ++h) ut_off[static_cast<size_t>(h) + 1] = ut_off[static_cast<size_t>(h)] + hd * static_cast<size_t>(F.k_u[static_cast<size_t>(h)].cols);
    grow(s.u_t, ut_off.back());
    for (int h = 0; h < n_kv; ++h) {
        const Matrix& u = F.k_u[static_cast<size_t>(h)];
        float* ut = &s.u_t[ut_off[static_cast<size_t>(h)]];
        for (int d = 0; d < u.rows; ++d)
            for (int c = 0; c < u.cols; ++c) ut[static_cast<size_t>(c) * hd + static_cast<size_t>(d)] = u.row(d)[c];
    }
    const bool once = one_seq && n >= kReconstructOnceFrom;
    if (once) {
        grow(s.keys, static_cast<size_t>(n_kv) * n_pos * hd + static_cast<size_t>(pool.size()) * max_r);
        float* zbufs = s.keys.data() + static_cast<size_t>(n_kv) * n_pos * hd;
        pool.parallel_chunks(static_cast<size_t>(n_kv) * n_pos, 64, [&](size_t i0, size_t i1, size_t chunk) {
            for (size_t i = i0; i < i1; ++i) {
                const int h = static_cast<int>(i / n_pos), p = static_cast<int>(i % n_pos);
                reconstruct_key(model, s, &s.u_t[ut_off[static_cast<size_t>(h)]], F.k_u[static_cast<size_t>(h)].cols,
                                c.head_dim, kv.row(rows.seq[0], kv.stream(l, h, KvKind::K), p), fmt.k_quant(l, h), p,
                                zbufs + chunk * max_r, &s.keys[i * hd]);
            }
        });
    }

    // Per thread: latent sums (group x rv), key tile, scores (group x tile),
    // running max and sum per query head, latent buffers.
    const size_t per_thread = static_cast<size_t>(group) * (rv + kKeyTile + 2) + kKeyTile * hd + max_r + rv;
    grow(s.lat_acc, static_cast<size_t>(pool.size()) * per_thread);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    pool.parallel_chunks(static_cast<size_t>(n) * n_kv, 1, [&](size_t i0, size_t i1, size_t chunk) {
        float* acc = s.lat_acc.data() + chunk * per_thread;
        float* scores = acc + static_cast<size_t>(group) * rv;
        float* mx = scores + static_cast<size_t>(group) * kKeyTile;
        float* sum = mx + group;
        float* tile = sum + group;
        float* zbuf = tile + kKeyTile * hd;
        float* vbuf = zbuf + max_r;
        for (size_t i = i0; i < i1; ++i) {
            const int t = static_cast<int>(i / static_cast<size_t>(n_kv));
            const int h = static_cast<int>(i % static_cast<size_t>(n_kv));
            const LatentQuant* kq = fmt.k_quant(l, h);
            const float* ut = &s.u_t[ut_off[static_cast<size_t>(h)]];
            const int r = F.k_u[static_cast<size_t>(h)].cols;
            const size_t k_stream = kv.stream(l, h, KvKind::K);
            const int sq = rows.seq[t];
            const size_t nk = static_cast<size_t>(rows.pos[t] + 1);
            const size_t qo = static_cast<size_t>(t) * qd + static_cast<size_t>(h) * group * hd;
            std::fill(acc, acc + static_cast<size_t>(group) * rv, 0.0f);
            std::fill(mx, mx + group, -INFINITY);
            std::fill(sum, sum + group, 0.0f);
            for (size_t j0 = 0; j0 < nk; j0 += kKeyTile) {
                const size_t jn = std::min(kKeyTile, nk - j0);
                const float* keys = tile;
                if (once) keys = &s.keys[(static_cast<size_t>(h) * n_pos + j0) * hd];
                else
                    for (size_t jj = 0; jj < jn; ++jj)
                        reconstruct_key(model, s, ut, r, c.head_dim, kv.row(sq, k_stream, static_cast<int>(j0 + jj)), kq,
                                        static_cast<int>(j0 + jj), zbuf, tile + jj * hd);
                for (int g = 0; g < group; ++g) {
                    float* sc = scores + static_cast<size_t>(g) * kKeyTile;
                    float m = mx[g];
                    for (size_t jj = 0; jj < jn; ++jj) {
                        sc[jj] = short_dot(&s.q[qo + g * hd], keys + jj * hd, hd) * scale;
                        m = std::max(m, sc[jj]);
                    }
                    // Online softmax: rescale what was summed under the old maximum.
                    const float corr = std::exp(mx[g] - m);
                    if (corr != 1.0f) {
                        sum[g] *= corr;
                        float* a = acc + g * rv;
                        for (size_t r = 0; r < rv; ++r) a[r] *= corr;
                    }
                    mx[g] = m;
                    for (size_t jj = 0; jj < jn; ++jj) {
                        sc[jj] = std::exp(sc[jj] - m);
                        sum[g] += sc[jj];
                    }
                }
                for (size_t jj = 0; jj < jn; ++jj) {
                    const float* z = load_latent(vq, kv.row(sq, v_stream, static_cast<int>(j0 + jj)), vbuf);
                    for (int g = 0; g < group; ++g) {
                        const float p = scores[static_cast<size_t>(g) * kKeyTile + jj];
                        float* a = acc + g * rv;
                        for (size_t r = 0; r < rv; ++r) a[r] += p * z[r];
                    }
                }
            }
            for (int g = 0; g < group; ++g) {
                float* a = acc + g * rv;
                const float inv = 1.0f / sum[g];
                for (size_t r = 0; r < rv; ++r) a[r] *= inv;
                for (size_t d = 0; d < hd; ++d)
                    s.attn[qo + g * hd + d] = cpu::dot(F.v_u.row(static_cast<int>(h * hd + d)), a, rv);
            }
        }
    });
}

// Floats of scratch per thread for quantized_plain_attention.
size_t plain_scratch(int group, size_t hd) { return 2 * kKeyTile * hd + static_cast<size_t>(group) * (kKeyTile + 2); }

// Attention of one KV head over quantized plain rows (a layer with plain_q):
// keys and values dequantized a tile at a time, online softmax; out receives
// group x hd.
void quantized_plain_attention(const float* q, const KvCache& fmt, const PagedRows& kv, int sq, int l, int h,
                               int n_keys, int group, size_t hd, float* out, float* scratch) {
    const LatentQuant& kq = *fmt.k_quant(l, h);
    const LatentQuant& vq = *fmt.v_quant(l, h);
    const size_t ks = kv.stream(l, h, KvKind::K), vs = kv.stream(l, h, KvKind::V);
    float* keys = scratch;
    float* vals = keys + kKeyTile * hd;
    float* scores = vals + kKeyTile * hd;
    float* mx = scores + static_cast<size_t>(group) * kKeyTile;
    float* sum = mx + group;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    std::fill(out, out + static_cast<size_t>(group) * hd, 0.0f);
    std::fill(mx, mx + group, -INFINITY);
    std::fill(sum, sum + group, 0.0f);
    for (size_t j0 = 0; j0 < static_cast<size_t>(n_keys); j0 += kKeyTile) {
        const size_t jn = std::min(kKeyTile, static_cast<size_t>(n_keys) - j0);
        for (size_t jj = 0; jj < jn; ++jj) {
            dequantize_latent(kq, kv.row(sq, ks, static_cast<int>(j0 + jj)), keys + jj * hd);
            dequantize_latent(vq, kv.row(sq, vs, static_cast<int>(j0 + jj)), vals + jj * hd);
        }
        for (int g = 0; g < group; ++g) {
            float* sc = scores + static_cast<size_t>(g) * kKeyTile;
            float* o = out + static_cast<size_t>(g) * hd;
            float m = mx[g];
            for (size_t jj = 0; jj < jn; ++jj) {
                sc[jj] = short_dot(q + g * hd, keys + jj * hd, hd) * scale;
                m = std::max(m, sc[jj]);
            }
            const float corr = std::exp(mx[g] - m);
            sum[g] *= corr;
            for (size_t d = 0; d < hd; ++d) o[d] *= corr;
            mx[g] = m;
            for (size_t jj = 0; jj < jn; ++jj) {
                const float p = std::exp(sc[jj] - m);
                sum[g] += p;
                const float* v = vals + jj * hd;
                for (size_t d = 0; d < hd; ++d) o[d] += p * v[d];
            }
        }
    }
    for (int g = 0; g < group; ++g) {
        const float inv = 1.0f / sum[g];
        for (size_t d = 0; d < hd; ++d) out[static_cast<size_t>(g) * hd + d] *= inv;
    }
}

// cpu::attention_group over a sequence's pages: the same arithmetic in the
// same order (scores of all keys, softmax, weighted sum), the keys and values
// of each page read as one contiguous run.
void paged_attention_group(const float* q, const PagedRows& kv, int sq, size_t ks, size_t vs, int n_keys, int group,
                           size_t hd, float* out, float* scores) {
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const size_t nk = static_cast<size_t>(n_keys);
    const int P = kv.page_tokens();
    for (int p0 = 0; p0 < n_keys; p0 += P) {
        const float* k = reinterpret_cast<const float*>(kv.page_rows(sq, p0 / P, ks));
        const int m = std::min(P, n_keys - p0);
        for (int j = 0; j < m; ++j) {
            const float* kt = k + static_cast<size_t>(j) * hd;
            for (int g = 0; g < group; ++g)
                scores[static_cast<size_t>(g) * nk + static_cast<size_t>(p0 + j)] = cpu::dot(q + g * hd, kt, hd) * scale;
        }
    }
    for (int g = 0; g < group; ++g) cpu::softmax(scores + static_cast<size_t>(g) * nk, n_keys);
    std::fill(out, out + static_cast<size_t>(group) * hd, 0.0f);
    for (int p0 = 0; p0 < n_keys; p0 += P) {
        const float* v = reinterpret_cast<const float*>(kv.page_rows(sq, p0 / P, vs));
        const int m = std::min(P, n_keys - p0);
        for (int j = 0; j < m; ++j) {
            const float* vt = v + static_cast<size_t>(j) * hd;
            for (int g = 0; g < group; ++g) {
                const float a = scores[static_cast<size_t>(g) * nk + static_cast<size_t>(p0 + j)];
                float* o = out + static_cast<size_t>(g) * hd;
                for (size_t d = 0; d < hd; ++d) o[d] += a * vt[d];
            }
        }
    }
}

}  // namespace

void ForwardScratch::reserve(const ModelConfig& c, int n_tokens, int n_ctx, int n_threads) {
    const size_t scores = static_cast<size_t>(n_threads) * static_cast<size_t>(c.n_head / c.n_head_kv) *
                          static_cast<size_t>(n_ctx);
    if (n_tokens <= capacity && att_scores.size() >= scores) return;
    const size_t t = static_cast<size_t>(n_tokens);
    x.resize(t * c.n_embd);
    xn.resize(t * c.n_embd);
    q.resize(t * c.n_head * c.head_dim);
    k.resize(t * c.n_head_kv * c.head_dim);
    v.resize(t * c.n_head_kv * c.head_dim);
    attn.resize(t * c.n_head * c.head_dim);
    proj.resize(t * c.n_embd);
    gate.resize(t * c.n_ff);
    up.resize(t * c.n_ff);
    att_scores.resize(scores);
    scores_per_thread = scores / static_cast<size_t>(n_threads);
    capacity = n_tokens;
}

void forward(const Model& model, const KvCache& fmt, const PagedRows& kv, ForwardScratch& s, ThreadPool& pool,
             const ForwardRows& rows, float* logits) {
    const ModelConfig& c = model.config();
    const ModelWeights& w = model.weights();
    const int n = rows.n;
    const size_t E = static_cast<size_t>(c.n_embd);
    const size_t qd = static_cast<size_t>(c.n_head) * c.head_dim;
    const size_t kvd = static_cast<size_t>(c.n_head_kv) * c.head_dim;
    const size_t F = static_cast<size_t>(c.n_ff);
    int max_pos = 0;
    for (int t = 0; t < n; ++t) max_pos = std::max(max_pos, rows.pos[t]);

    const int first_layer = s.resume ? s.resume_layer : 0;
    if (s.resume)
        s.resume(rows.pos, s.x.data(), n);
    else
        for (int t = 0; t < n; ++t)
            std::memcpy(&s.x[t * E], w.tok_embd.row(rows.tokens[t]), E * sizeof(float));

    for (int l = first_layer; l < c.n_layer; ++l) {
        const LayerWeights& L = w.layers[static_cast<size_t>(l)];
        if (s.observe_residual) s.observe_residual(l, rows.pos, s.x.data(), n);
        for (int t = 0; t < n; ++t) cpu::rms_norm(&s.x[t * E], L.attn_norm.data(), &s.xn[t * E], c.n_embd, c.rms_eps);
        if (s.observe_kv_input) s.observe_kv_input(l, s.xn.data(), n);
        cpu::matmul(L.wq, s.xn.data(), n, s.q.data(), pool);
        if (L.lat.active()) {
            for (int t = 0; t < n; ++t) model.rope().apply(&s.q[t * qd], c.n_head, c.head_dim, rows.pos[t]);
            latent_attention(model, l, fmt, kv, s, pool, rows);
        } else {
            cpu::matmul(L.wk, s.xn.data(), n, s.k.data(), pool);
            cpu::matmul(L.wv, s.xn.data(), n, s.v.data(), pool);
            const size_t hd = static_cast<size_t>(c.head_dim);
            for (int t = 0; t < n; ++t) {
                model.rope().apply(&s.q[t * qd], c.n_head, c.head_dim, rows.pos[t]);
                model.rope().apply(&s.k[t * kvd], c.n_head_kv, c.head_dim, rows.pos[t]);
                for (int h = 0; h < c.n_head_kv; ++h) {
                    store_latent(fmt.k_quant(l, h), &s.k[t * kvd + h * hd], hd,
                                 kv.row(rows.seq[t], kv.stream(l, h, KvKind::K), rows.pos[t]));
                    store_latent(fmt.v_quant(l, h), &s.v[t * kvd + h * hd], hd,
                                 kv.row(rows.seq[t], kv.stream(l, h, KvKind::V), rows.pos[t]));
                }
            }
            // One work item per (token, KV head): the query heads of a group read
            // each cached key and value once, and decode (one token) still uses
            // every thread.
            const int group = c.n_head / c.n_head_kv;
            const size_t n_items = static_cast<size_t>(n) * static_cast<size_t>(c.n_head_kv);
            const size_t grain = std::max<size_t>(1, 16384 / (static_cast<size_t>(max_pos + 1) * hd * group + 1));
            const bool quantized = L.plain_q.active();
            if (quantized) grow(s.lat_acc, static_cast<size_t>(pool.size()) * plain_scratch(group, hd));
            pool.parallel_chunks(n_items, grain, [&](size_t i0, size_t i1, size_t chunk) {
                float* scores = s.att_scores.data() + chunk * s.scores_per_thread;
                for (size_t i = i0; i < i1; ++i) {
                    const int t = static_cast<int>(i / static_cast<size_t>(c.n_head_kv));
                    const int h = static_cast<int>(i % static_cast<size_t>(c.n_head_kv));
                    const int n_keys = rows.pos[t] + 1;
                    const size_t qo = static_cast<size_t>(t) * qd + static_cast<size_t>(h) * group * hd;
                    if (quantized)
                        quantized_plain_attention(&s.q[qo], fmt, kv, rows.seq[t], l, h, n_keys, group, hd, &s.attn[qo],
                                                  s.lat_acc.data() + chunk * plain_scratch(group, hd));
                    else
                        paged_attention_group(&s.q[qo], kv, rows.seq[t], kv.stream(l, h, KvKind::K),
                                              kv.stream(l, h, KvKind::V), n_keys, group, hd, &s.attn[qo], scores);
                }
            });
        }
        cpu::matmul(L.wo, s.attn.data(), n, s.proj.data(), pool);
        for (size_t i = 0; i < static_cast<size_t>(n) * E; ++i) s.x[i] += s.proj[i];

        for (int t = 0; t < n; ++t) cpu::rms_norm(&s.x[t * E], L.ffn_norm.data(), &s.xn[t * E], c.n_embd, c.rms_eps);
        cpu::matmul(L.w_gate, s.xn.data(), n, s.gate.data(), pool);
        cpu::matmul(L.w_up, s.xn.data(), n, s.up.data(), pool);
        cpu::swiglu(s.gate.data(), s.up.data(), s.gate.data(), static_cast<int>(static_cast<size_t>(n) * F));
        cpu::matmul(L.w_down, s.gate.data(), n, s.proj.data(), pool);
        for (size_t i = 0; i < static_cast<size_t>(n) * E; ++i) s.x[i] += s.proj[i];
    }

    if (!logits || rows.n_logits == 0) return;
    for (int i = 0; i < rows.n_logits; ++i)
        cpu::rms_norm(&s.x[static_cast<size_t>(rows.logit_rows[i]) * E], w.output_norm.data(), &s.xn[i * E], c.n_embd,
                      c.rms_eps);
    cpu::matmul(w.lm_head(), s.xn.data(), rows.n_logits, logits, pool);
}

}  // namespace starkv
