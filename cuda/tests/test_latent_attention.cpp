// The latent decode attention kernel (kernels/latent_attention.cuh) against a
// float64 CPU reference of STAR-KV attention (src/model/forward.cpp
// latent_attention's semantics for one query token): ragged per-head key
// ranks, MHA and GQA, both RoPE layouts (full and partial), fp16 and bf16,
// odd context lengths, a different length per sequence. Fresh random inputs,
// output poisoned (NaN) before each run. Device tests skip without a GPU;
// shape validation runs everywhere. STARKV_LATENT_TEST_SMALL=1 drops the
// long-context case (for compute-sanitizer runs).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <random>
#include <tuple>
#include <vector>

#include "latent_attention.cuh"
#include "latent_decode_small.cuh"

using starkv::cuda::LatentAttnArgs;
using starkv::cuda::LatentAttnShape;
using starkv::cuda::LatentFormat;
using starkv::cuda::LatentScoresKernel;
using starkv::cuda::latent_rank_pad;

namespace {

bool have_device() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

std::mt19937 rng(4242);

// Element conversions for the two formats (host side).
struct Bf16 {
    using T = __nv_bfloat16;
    static constexpr LatentFormat kFormat = LatentFormat::BF16;
    static T from(float x) { return __float2bfloat16_rn(x); }
    static float to(T x) { return __bfloat162float(x); }
};
struct F16 {
    using T = __half;
    static constexpr LatentFormat kFormat = LatentFormat::F16;
    static T from(float x) { return __float2half_rn(x); }
    static float to(T x) { return __half2float(x); }
};

// Q4 latents: the factors are fp16; the latents are quantized from F16-like random values.
struct Q4 : F16 {
    static constexpr LatentFormat kFormat = LatentFormat::Q4;
};

// 4-bit zero-point quantization of groups of `group` consecutive values (the kernels' Q4 format):
// codes (low nibble = even element), one (scale, min) half2 per group; x is replaced by exactly what
// the kernel dequantizes (min + scale * q with the fp16-rounded scale and min).
void quantize_q4(std::vector<double>& x, int group, std::vector<uint8_t>& codes, std::vector<uint32_t>& scales) {
    codes.assign(x.size() / 2, 0);
    scales.resize(x.size() / group);
    for (size_t g = 0; g < scales.size(); ++g) {
        double lo = INFINITY, hi = -INFINITY;
        for (int i = 0; i < group; ++i) {
            lo = std::min(lo, x[g * group + i]);
            hi = std::max(hi, x[g * group + i]);
        }
        const __half hs = __float2half_rn(static_cast<float>(hi > lo ? (hi - lo) / 15.0 : 1.0));
        const __half hm = __float2half_rn(static_cast<float>(lo));
        const double sc = __half2float(hs), mn = __half2float(hm);
        for (int i = 0; i < group; ++i) {
            const size_t k = g * group + i;
            const int q = std::clamp(static_cast<int>(std::lround((x[k] - mn) / sc)), 0, 15);
            codes[k / 2] |= static_cast<uint8_t>(q << ((k % 2) * 4));
            x[k] = mn + sc * q;
        }
        const __half2 h2 = __halves2half2(hs, hm);
        std::memcpy(&scales[g], &h2, 4);
    }
}

struct DevBytes {  // a device copy of a host vector; RAII
    void* dev = nullptr;
    template <typename V>
    void upload(const std::vector<V>& v) {
        ASSERT_EQ(cudaMalloc(&dev, std::max<size_t>(v.size(), 1) * sizeof(V)), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(dev, v.data(), v.size() * sizeof(V), cudaMemcpyHostToDevice), cudaSuccess);
    }
    ~DevBytes() { cudaFree(dev); }
};

template <typename E>
struct Buf {  // host values (as the device sees them, rounded) and device copy
    std::vector<typename E::T> h;
    std::vector<double> d;  // the same values, for the reference
    void* dev = nullptr;
    void fill(size_t n, float scale) {
        std::normal_distribution<float> nd(0.0f, scale);
        h.resize(n);
        d.resize(n);
        for (size_t i = 0; i < n; ++i) {
            h[i] = E::from(nd(rng));
            d[i] = E::to(h[i]);
        }
    }
    void upload() {
        ASSERT_EQ(cudaMalloc(&dev, std::max<size_t>(h.size(), 1) * sizeof(typename E::T)), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(dev, h.data(), h.size() * sizeof(typename E::T), cudaMemcpyHostToDevice), cudaSuccess);
    }
    ~Buf() { cudaFree(dev); }
};

struct Case {
    int n_seq, n_head, n_kv, hd, rope_dims;
    bool half_split;
    int v_rank;
    std::vector<int> ranks, n_keys;
    int ctx_cap;
    LatentScoresKernel scores = LatentScoresKernel::Auto;
    int page_rows = 0;  // > 0: the caches go to the kernels as a pool of pages in shuffled order
};

// A contiguous cache [n_seq][parts][ctx_cap rows of width[i] bytes] scattered into a pool of pages
// [page][parts][page_rows rows of width[i] bytes], page table[b * pps + j] holding rows
// [j * page_rows, (j + 1) * page_rows) of sequence b. Everything else in the pool is 0xff (NaN in
// fp16/bf16 and in Q4 scales), so a row read from a wrong page shows in the output.
std::vector<uint8_t> to_pages(const void* src, int n_seq, int ctx_cap, const std::vector<size_t>& width, int page_rows,
                              int pps, const std::vector<int>& table, int n_pages) {
    size_t row_all = 0;
    for (size_t w : width) row_all += w;
    std::vector<uint8_t> pool(static_cast<size_t>(n_pages) * page_rows * row_all, 0xff);
    const uint8_t* in = static_cast<const uint8_t*>(src);
    for (int b = 0; b < n_seq; ++b)
        for (int j = 0; j < pps; ++j) {
            const int r0 = j * page_rows, r1 = std::min(r0 + page_rows, ctx_cap);
            const size_t page = static_cast<size_t>(table[static_cast<size_t>(b) * pps + j]);
            size_t before = 0;
            for (size_t w : width) {
                std::memcpy(pool.data() + page * page_rows * row_all + page_rows * before + r0 % page_rows * w,
                            in + static_cast<size_t>(b) * ctx_cap * row_all + ctx_cap * before + r0 * w,
                            static_cast<size_t>(r1 - r0) * w);
                before += w;
            }
        }
    return pool;
}

// Reference: for each sequence b and query head hq (KV head h = hq / G):
// k_j = RoPE(U_h z_j, j); s_j = scale q . k_j; p = softmax(s);
// acc = sum_j p_j v_j (value latents); o = U_v[h rows] acc.
std::vector<double> reference(const Case& c, const std::vector<float>& q, const std::vector<double>& klat,
                              const std::vector<double>& ku, const std::vector<double>& vlat,
                              const std::vector<double>& vu, const std::vector<double>& inv_freq) {
    const int G = c.n_head / c.n_kv, hd = c.hd, half = c.rope_dims / 2;
    std::vector<int> pad(c.n_kv), off(c.n_kv);
    int sum = 0;
    for (int h = 0; h < c.n_kv; ++h) {
        pad[h] = latent_rank_pad(c.ranks[h]);
        off[h] = sum;
        sum += pad[h];
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    std::vector<double> out(static_cast<size_t>(c.n_seq) * c.n_head * hd, 0.0);
    for (int b = 0; b < c.n_seq; ++b) {
        const int n = c.n_keys[b];
        for (int h = 0; h < c.n_kv; ++h) {
            std::vector<double> keys(static_cast<size_t>(n) * hd);
            for (int j = 0; j < n; ++j) {
                double* k = &keys[static_cast<size_t>(j) * hd];
                const double* z = &klat[(static_cast<size_t>(b) * sum * c.ctx_cap) +
                                        static_cast<size_t>(off[h]) * c.ctx_cap + static_cast<size_t>(j) * pad[h]];
                for (int d = 0; d < hd; ++d) {
                    double a = 0;
                    for (int r = 0; r < c.ranks[h]; ++r)  // the true rank: padding never counts
                        a += ku[static_cast<size_t>(off[h]) * hd + static_cast<size_t>(d) * pad[h] + r] * z[r];
                    k[d] = a;
                }
                for (int i = 0; i < half; ++i) {
                    const double ang = j * inv_freq[i], cs = std::cos(ang), sn = std::sin(ang);
                    const int ia = c.half_split ? i : 2 * i, ib = c.half_split ? i + half : 2 * i + 1;
                    const double x0 = k[ia], x1 = k[ib];
                    k[ia] = x0 * cs - x1 * sn;
                    k[ib] = x0 * sn + x1 * cs;
                }
            }
            for (int g = 0; g < G; ++g) {
                const int hq = h * G + g;
                const float* qq = &q[(static_cast<size_t>(b) * c.n_head + hq) * hd];
                std::vector<double> s(n);
                double mx = -INFINITY;
                for (int j = 0; j < n; ++j) {
                    double a = 0;
                    for (int d = 0; d < hd; ++d) a += qq[d] * keys[static_cast<size_t>(j) * hd + d];
                    s[j] = a * scale;
                    mx = std::max(mx, s[j]);
                }
                double l = 0;
                for (int j = 0; j < n; ++j) l += (s[j] = std::exp(s[j] - mx));
                std::vector<double> acc(c.v_rank, 0.0);
                for (int j = 0; j < n; ++j)
                    for (int r = 0; r < c.v_rank; ++r)
                        acc[r] += s[j] / l * vlat[(static_cast<size_t>(b) * c.ctx_cap + j) * c.v_rank + r];
                double* o = &out[(static_cast<size_t>(b) * c.n_head + hq) * hd];
                for (int d = 0; d < hd; ++d) {
                    double a = 0;
                    for (int r = 0; r < c.v_rank; ++r)
                        a += vu[(static_cast<size_t>(h) * hd + d) * c.v_rank + r] * acc[r];
                    o[d] = a;
                }
            }
        }
    }
    return out;
}

// The kernels' shape of a test case (a paged case: ctx_cap says nothing to the kernels then).
LatentAttnShape shape_of(const Case& c, LatentFormat f) {
    LatentAttnShape s;
    s.n_seq = c.n_seq;
    s.n_head = c.n_head;
    s.n_kv = c.n_kv;
    s.head_dim = c.hd;
    s.rope_dims = c.rope_dims;
    s.rope_half_split = c.half_split;
    s.v_rank = c.v_rank;
    s.ctx_cap = c.ctx_cap;
    s.max_keys = *std::max_element(c.n_keys.begin(), c.n_keys.end());
    s.format = f;
    s.scores_kernel = c.scores;
    if (c.page_rows > 0) {
        s.ctx_cap = 0;
        s.page_rows = c.page_rows;
        s.pages_per_seq = (c.ctx_cap + c.page_rows - 1) / c.page_rows;
    }
    for (int h = 0; h < c.n_kv; ++h) s.k_rank[h] = c.ranks[h];
    return s;
}

template <typename E>
double run_case(const Case& c) {
    const LatentAttnShape s = shape_of(c, E::kFormat);
    const int pps = s.pages_per_seq;
    int sum = 0;
    for (int h = 0; h < c.n_kv; ++h) sum += latent_rank_pad(c.ranks[h]);

    // Inputs: latents with random (finite) padding columns; U_h's padding columns zero.
    Buf<E> klat, ku, vlat, vu;
    klat.fill(static_cast<size_t>(c.n_seq) * sum * c.ctx_cap, 1.0f);
    ku.fill(static_cast<size_t>(sum) * c.hd, 1.0f);
    {
        int off = 0;
        for (int h = 0; h < c.n_kv; ++h) {
            const int pad = latent_rank_pad(c.ranks[h]);
            const float sc = 1.0f / std::sqrt(static_cast<float>(c.ranks[h]));
            for (int d = 0; d < c.hd; ++d)
                for (int r = 0; r < pad; ++r) {
                    const size_t i = static_cast<size_t>(off) * c.hd + static_cast<size_t>(d) * pad + r;
                    ku.h[i] = E::from(r < c.ranks[h] ? E::to(ku.h[i]) * sc : 0.0f);
                    ku.d[i] = E::to(ku.h[i]);
                }
            off += pad;
        }
    }
    vlat.fill(static_cast<size_t>(c.n_seq) * c.ctx_cap * c.v_rank, 1.0f);
    vu.fill(static_cast<size_t>(c.n_kv) * c.hd * c.v_rank, 1.0f / std::sqrt(static_cast<float>(c.v_rank)));
    std::vector<float> q(static_cast<size_t>(c.n_seq) * c.n_head * c.hd);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& x : q) x = nd(rng);
    std::vector<double> inv_freq(std::max(c.rope_dims / 2, 1));
    for (int i = 0; i < c.rope_dims / 2; ++i) inv_freq[i] = std::pow(10000.0, -2.0 * i / c.rope_dims);

    // Q4: the latents quantized (keys: one group per token and KV head, the padded rank wide;
    // values: groups of 128), the reference reads exactly the dequantized values.
    DevBytes kcodes, kscales, vcodes, vscales;
    std::vector<uint8_t> all_codes, v_codes;
    std::vector<uint32_t> all_scales, v_scales;
    if constexpr (E::kFormat == LatentFormat::Q4) {
        std::vector<uint8_t> codes;
        std::vector<uint32_t> scales;
        // Key latents are [seq][head][ctx][pad]: quantize each head's rows with group = pad.
        size_t off = 0;
        for (int b = 0; b < c.n_seq; ++b)
            for (int h = 0; h < c.n_kv; ++h) {
                const int pad = latent_rank_pad(c.ranks[h]);
                const size_t n = static_cast<size_t>(c.ctx_cap) * pad;
                std::vector<double> part(klat.d.begin() + off, klat.d.begin() + off + n);
                quantize_q4(part, pad, codes, scales);
                std::copy(part.begin(), part.end(), klat.d.begin() + off);
                all_codes.insert(all_codes.end(), codes.begin(), codes.end());
                all_scales.insert(all_scales.end(), scales.begin(), scales.end());
                off += n;
            }
        kcodes.upload(all_codes);
        kscales.upload(all_scales);
        quantize_q4(vlat.d, 128, v_codes, v_scales);
        vcodes.upload(v_codes);
        vscales.upload(v_scales);
    } else {
        klat.upload();
        vlat.upload();
    }
    ku.upload();
    vu.upload();
    float *dq = nullptr, *dout = nullptr;
    double* dinv = nullptr;
    int* dn = nullptr;
    void* ws = nullptr;
    const size_t ws_bytes = starkv::cuda::latent_attention_workspace(s);
    EXPECT_GT(ws_bytes, 0u);
    const size_t out_n = static_cast<size_t>(c.n_seq) * c.n_head * c.hd;
    EXPECT_EQ(cudaMalloc(&dq, q.size() * sizeof(float)), cudaSuccess);
    EXPECT_EQ(cudaMalloc(&dout, out_n * sizeof(float)), cudaSuccess);
    EXPECT_EQ(cudaMalloc(&dinv, inv_freq.size() * sizeof(double)), cudaSuccess);
    EXPECT_EQ(cudaMalloc(&dn, c.n_seq * sizeof(int)), cudaSuccess);
    EXPECT_EQ(cudaMalloc(&ws, ws_bytes), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(dq, q.data(), q.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(dinv, inv_freq.data(), inv_freq.size() * sizeof(double), cudaMemcpyHostToDevice),
              cudaSuccess);
    EXPECT_EQ(cudaMemcpy(dn, c.n_keys.data(), c.n_seq * sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaMemset(dout, 0xff, out_n * sizeof(float)), cudaSuccess);  // NaN

    LatentAttnArgs a;
    a.q = dq;
    a.k_lat = E::kFormat == LatentFormat::Q4 ? kcodes.dev : klat.dev;
    a.k_scale = kscales.dev;
    a.k_u = ku.dev;
    a.v_lat = E::kFormat == LatentFormat::Q4 ? vcodes.dev : vlat.dev;
    a.v_scale = vscales.dev;
    a.v_u = vu.dev;
    a.n_keys = dn;
    a.inv_freq = dinv;
    a.out = dout;
    a.scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
    // Paged: the same caches scattered over a pool of pages in shuffled order (three spare pages).
    DevBytes pk, pks, pv, pvs, ptab;
    if (c.page_rows > 0) {
        const int n_pages = c.n_seq * pps + 3;
        std::vector<int> table(static_cast<size_t>(n_pages));
        for (int i = 0; i < n_pages; ++i) table[static_cast<size_t>(i)] = i;
        std::shuffle(table.begin(), table.end(), rng);
        table.resize(static_cast<size_t>(c.n_seq) * pps);
        const bool q4 = E::kFormat == LatentFormat::Q4;
        std::vector<size_t> kw;
        for (int h = 0; h < c.n_kv; ++h)
            kw.push_back(q4 ? latent_rank_pad(c.ranks[h]) / 2 : latent_rank_pad(c.ranks[h]) * sizeof(typename E::T));
        auto paged = [&](const void* src, const std::vector<size_t>& w) {
            return to_pages(src, c.n_seq, c.ctx_cap, w, c.page_rows, pps, table, n_pages);
        };
        if (q4) {
            pk.upload(paged(all_codes.data(), kw));
            pks.upload(paged(all_scales.data(), std::vector<size_t>(static_cast<size_t>(c.n_kv), 4)));
            pv.upload(paged(v_codes.data(), {static_cast<size_t>(c.v_rank) / 2}));
            pvs.upload(paged(v_scales.data(), {static_cast<size_t>(c.v_rank) / 128 * 4}));
        } else {
            pk.upload(paged(klat.h.data(), kw));
            pv.upload(paged(vlat.h.data(), {static_cast<size_t>(c.v_rank) * sizeof(typename E::T)}));
        }
        ptab.upload(table);
        a.k_lat = pk.dev;
        a.k_scale = pks.dev;
        a.v_lat = pv.dev;
        a.v_scale = pvs.dev;
        a.page_table = static_cast<const int*>(ptab.dev);
        // A paged shape without its table (and a table with a contiguous shape) is refused.
        LatentAttnArgs no_table = a;
        no_table.page_table = nullptr;
        EXPECT_EQ(starkv::cuda::latent_attention(s, no_table, ws, ws_bytes, nullptr), cudaErrorInvalidValue);
    }
    EXPECT_EQ(starkv::cuda::latent_attention(s, a, ws, ws_bytes, nullptr), cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<float> got(out_n);
    EXPECT_EQ(cudaMemcpy(got.data(), dout, out_n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    // A workspace one byte short is refused.
    EXPECT_EQ(starkv::cuda::latent_attention(s, a, ws, ws_bytes - 1, nullptr), cudaErrorInvalidValue);
    cudaFree(dq);
    cudaFree(dout);
    cudaFree(dinv);
    cudaFree(dn);
    cudaFree(ws);

    const auto want = reference(c, q, klat.d, ku.d, vlat.d, vu.d, inv_freq);
    double num = 0, den = 0;
    for (size_t i = 0; i < out_n; ++i) {
        if (std::isnan(got[i])) return INFINITY;
        num = std::max(num, std::fabs(got[i] - want[i]));
        den = std::max(den, std::fabs(want[i]));
    }
    return num / den;
}

bool small() {
    const char* e = std::getenv("STARKV_LATENT_TEST_SMALL");
    return e && *e == '1';
}

}  // namespace

TEST(LatentAttentionShape, InvalidShapesAreRefused) {
    LatentAttnShape s;
    s.n_seq = 2;
    s.n_head = 8;
    s.n_kv = 2;
    s.head_dim = 128;
    s.rope_dims = 128;
    s.v_rank = 256;
    s.ctx_cap = 100;
    s.max_keys = 100;
    s.k_rank[0] = s.k_rank[1] = 32;
    EXPECT_GT(starkv::cuda::latent_attention_workspace(s), 0u);
    auto bad = [&](auto edit) {
        LatentAttnShape t = s;
        edit(t);
        EXPECT_EQ(starkv::cuda::latent_attention_workspace(t), 0u);
        LatentAttnArgs a;
        EXPECT_EQ(starkv::cuda::latent_attention(t, a, nullptr, 0, nullptr), cudaErrorInvalidValue);
    };
    bad([](LatentAttnShape& t) { t.head_dim = 96; });
    bad([](LatentAttnShape& t) { t.n_head = 7; });   // not a multiple of n_kv
    bad([](LatentAttnShape& t) { t.n_head = 32; });  // group of 16
    bad([](LatentAttnShape& t) { t.k_rank[1] = 0; });
    bad([](LatentAttnShape& t) { t.k_rank[0] = 129; });
    bad([](LatentAttnShape& t) { t.v_rank = 200; });
    bad([](LatentAttnShape& t) { t.rope_dims = 40; });
    bad([](LatentAttnShape& t) { t.max_keys = 101; });  // past the cache
    bad([](LatentAttnShape& t) {  // too many query heads
        t.n_head = 80;
        t.n_kv = 10;
    });
    // Valid shape, missing pointers: refused, not launched.
    LatentAttnArgs a;
    EXPECT_EQ(starkv::cuda::latent_attention(s, a, nullptr, 0, nullptr), cudaErrorInvalidValue);
}

// The reference's latent-space value sum equals ordinary attention over the
// expanded cache (V_j = U_v^h v_j), computed here the long way. Runs without a GPU.
// A caller that sizes one workspace up front (the CUDA backend: up to 16 queries over up to its
// cache) needs the bound to cover every smaller call: the chunking is not monotonic in n_seq or
// max_keys (a prefill chunk of 6 queries over 150 keys takes more value chunks than 16 over 256).
TEST(LatentAttentionShape, WorkspaceBoundCoversEverySmallerCall) {
    for (int cap : {256, 1000, 4096}) {
        for (const auto& [n_head, n_kv, v_rank] : {std::tuple{32, 32, 1024}, std::tuple{32, 8, 256}}) {
            LatentAttnShape big;
            big.n_seq = 16;
            big.n_head = n_head;
            big.n_kv = n_kv;
            big.head_dim = 128;
            big.rope_dims = 128;
            big.rope_half_split = true;
            big.v_rank = v_rank;
            big.max_keys = cap;
            big.page_rows = (cap + 63) / 64 * 64;
            big.pages_per_seq = 1;
            big.format = LatentFormat::F16;
            for (int h = 0; h < n_kv; ++h) big.k_rank[h] = 32;
            const size_t bound = starkv::cuda::latent_attention_workspace_bound(big);
            ASSERT_GT(bound, 0u);
            for (int n = 1; n <= 16; ++n)
                for (int k = 1; k <= cap; k += 7) {
                    LatentAttnShape s = big;
                    s.n_seq = n;
                    s.max_keys = k;
                    ASSERT_LE(starkv::cuda::latent_attention_workspace(s), bound)
                        << "cap " << cap << " heads " << n_head << "/" << n_kv << " n_seq " << n << " keys " << k;
                }
        }
    }
}

TEST(LatentAttentionShape, ReferenceMatchesAttentionOverExpandedCache) {
    Case c{2, 6, 3, 64, 48, false, 128, {16, 24, 40}, {5, 37}, 40};
    const int G = c.n_head / c.n_kv, hd = c.hd, half = c.rope_dims / 2;
    int sum = 0;
    std::vector<int> off;
    for (int r : c.ranks) {
        off.push_back(sum);
        sum += latent_rank_pad(r);
    }
    std::normal_distribution<double> nd(0.0, 1.0);
    auto draw = [&](size_t n) {
        std::vector<double> v(n);
        for (auto& x : v) x = nd(rng);
        return v;
    };
    auto klat = draw(static_cast<size_t>(c.n_seq) * sum * c.ctx_cap), ku = draw(static_cast<size_t>(sum) * hd);
    auto vlat = draw(static_cast<size_t>(c.n_seq) * c.ctx_cap * c.v_rank);
    auto vu = draw(static_cast<size_t>(c.n_kv) * hd * c.v_rank);
    std::vector<float> q(static_cast<size_t>(c.n_seq) * c.n_head * hd);
    for (auto& x : q) x = static_cast<float>(nd(rng));
    std::vector<double> inv_freq(half);
    for (int i = 0; i < half; ++i) inv_freq[i] = std::pow(10000.0, -2.0 * i / c.rope_dims);
    const auto got = reference(c, q, klat, ku, vlat, vu, inv_freq);

    double worst = 0, scale = 0;
    for (int b = 0; b < c.n_seq; ++b)
        for (int hq = 0; hq < c.n_head; ++hq) {
            const int h = hq / G, n = c.n_keys[b], pad = latent_rank_pad(c.ranks[h]);
            std::vector<double> s(n), o(hd, 0.0);
            for (int j = 0; j < n; ++j) {
                std::vector<double> k(hd, 0.0);
                for (int d = 0; d < hd; ++d)
                    for (int r = 0; r < c.ranks[h]; ++r)
                        k[d] += ku[static_cast<size_t>(off[h]) * hd + d * pad + r] *
                                klat[static_cast<size_t>(b) * sum * c.ctx_cap + static_cast<size_t>(off[h]) * c.ctx_cap +
                                     static_cast<size_t>(j) * pad + r];
                for (int i = 0; i < half; ++i) {  // adjacent pairs, as the case says
                    const double a = j * inv_freq[i], x0 = k[2 * i], x1 = k[2 * i + 1];
                    k[2 * i] = x0 * std::cos(a) - x1 * std::sin(a);
                    k[2 * i + 1] = x0 * std::sin(a) + x1 * std::cos(a);
                }
                s[j] = 0;
                for (int d = 0; d < hd; ++d) s[j] += q[(static_cast<size_t>(b) * c.n_head + hq) * hd + d] * k[d];
                s[j] /= std::sqrt(static_cast<double>(hd));
            }
            const double mx = *std::max_element(s.begin(), s.end());
            double l = 0;
            for (auto& x : s) l += (x = std::exp(x - mx));
            for (int j = 0; j < n; ++j)
                for (int d = 0; d < hd; ++d) {
                    double v = 0;  // the expanded value row of this KV head
                    for (int r = 0; r < c.v_rank; ++r)
                        v += vu[(static_cast<size_t>(h) * hd + d) * c.v_rank + r] *
                             vlat[(static_cast<size_t>(b) * c.ctx_cap + j) * c.v_rank + r];
                    o[d] += s[j] / l * v;
                }
            for (int d = 0; d < hd; ++d) {
                const double g = got[(static_cast<size_t>(b) * c.n_head + hq) * hd + d];
                worst = std::max(worst, std::fabs(g - o[d]));
                scale = std::max(scale, std::fabs(o[d]));
            }
        }
    EXPECT_GT(scale, 0.0);
    EXPECT_LT(worst / scale, 1e-12);
}

// One sequence, one head of 128 (full RoPE), key rank 32, value rank 128: for the limit checks.
LatentAttnShape one_head_shape(LatentFormat f, int max_keys) {
    LatentAttnShape s;
    s.n_seq = 1;
    s.n_head = s.n_kv = 1;
    s.head_dim = 128;
    s.rope_dims = 128;
    s.v_rank = 128;
    s.max_keys = max_keys;
    s.k_rank[0] = 32;
    s.format = f;
    return s;
}

const char* kernel_name(LatentScoresKernel k) {
    return k == LatentScoresKernel::QueryFold   ? "query fold"
           : k == LatentScoresKernel::RopeTable ? "angle table"
           : k == LatentScoresKernel::KeyTable  ? "key table"
           : k == LatentScoresKernel::SmallBatch ? "small-batch pass"
                                                : "key rotation";
}

TEST(LatentAttention, MhaBf16RaggedRanksAdjacentRope) {
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    Case c{3, 4, 4, 128, 128, false, 256, {32, 16, 40, 8}, {1, 77, 300}, 301};
    // Every scores kernel (key-side rotation, query-side fold, angle table).
    for (LatentScoresKernel k :
         {LatentScoresKernel::KeyRotation, LatentScoresKernel::QueryFold, LatentScoresKernel::RopeTable}) {
        c.scores = k;
        const double e = run_case<Bf16>(c);
        EXPECT_LT(e, 1e-2) << "rel err " << e;
        std::printf("[latent] MHA bf16 ragged ranks (%s): rel err %.2e\n",
                    kernel_name(k), e);
    }
}

TEST(LatentAttention, GqaF16HalfSplitPartialRope) {
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    Case c{2, 8, 2, 64, 32, true, 128, {24, 64}, {129, 1000}, 1003};
    // Every scores kernel (key-side rotation, query-side fold, angle table).
    for (LatentScoresKernel k :
         {LatentScoresKernel::KeyRotation, LatentScoresKernel::QueryFold, LatentScoresKernel::RopeTable}) {
        c.scores = k;
        const double e = run_case<F16>(c);
        EXPECT_LT(e, 3e-3) << "rel err " << e;
        std::printf("[latent] GQA fp16 half-split partial rope (%s): rel err %.2e\n",
                    kernel_name(k), e);
    }
}

TEST(LatentAttention, GqaBf16FullHalfSplitGroup8) {
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    Case c{2, 16, 2, 128, 128, true, 128, {128, 33}, {65, 64}, 70};
    for (LatentScoresKernel k : {LatentScoresKernel::KeyRotation, LatentScoresKernel::RopeTable}) {
        c.scores = k;
        const double e = run_case<Bf16>(c);
        EXPECT_LT(e, 1e-2) << "rel err " << e;
        std::printf("[latent] GQA bf16 group 8, rank 128 (%s): rel err %.2e\n", kernel_name(k), e);
    }
}

// The key-table kernel's shapes (half-split RoPE over all 128 dimensions, ranks <= 64): ragged ranks
// (pads 32 and 48: the second head skips the last 16-rank step), groups of 4 and 8, both formats.
TEST(LatentAttention, GqaHalfSplitKeyTable) {
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    Case c{2, 8, 2, 128, 128, true, 256, {32, 40}, {700, 129}, 701};
    Case g8{1, 8, 1, 128, 128, true, 128, {16}, {257}, 300};
    for (LatentScoresKernel k : {LatentScoresKernel::KeyRotation, LatentScoresKernel::KeyTable}) {
        c.scores = g8.scores = k;
        const double e16 = run_case<F16>(c), eb = run_case<Bf16>(c), e8 = run_case<F16>(g8);
        EXPECT_LT(e16, 3e-3) << "rel err " << e16;
        EXPECT_LT(eb, 1e-2) << "rel err " << eb;
        EXPECT_LT(e8, 3e-3) << "rel err " << e8;
        std::printf("[latent] GQA half-split, ranks 32/40 (%s): rel err fp16 %.2e, bf16 %.2e; group 8: %.2e\n",
                    kernel_name(k), e16, eb, e8);
    }
}

// 4-bit latents (Q4): dequantized in shared memory by both table kernels and the value pass;
// compared with the float64 reference on the dequantized values, so the error is the kernels' own.
// Ragged ranks (pads 32 and 48), MHA and GQA, a context that ends inside a tile.
TEST(LatentAttention, Q4LatentsBothTableKernels) {
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    Case mha{2, 4, 4, 128, 128, true, 256, {32, 40, 16, 32}, {300, 77}, 301};
    Case gqa{2, 8, 2, 128, 128, true, 256, {32, 40}, {700, 129}, 701};
    Case gqa64{1, 4, 1, 64, 64, false, 128, {24}, {190}, 200};  // head_dim 64, adjacent: the fold table
    for (Case* c : {&mha, &gqa, &gqa64}) {
        const double e = run_case<Q4>(*c);
        EXPECT_LT(e, 3e-3) << "rel err " << e;
        std::printf("[latent] Q4 latents, %d heads / %d KV heads, head_dim %d: rel err %.2e\n", c->n_head, c->n_kv,
                    c->hd, e);
    }
    // Q4 only with the table kernels: a forced key-rotation kernel is refused.
    LatentAttnShape s = one_head_shape(LatentFormat::Q4, 64);
    s.ctx_cap = 64;
    EXPECT_GT(starkv::cuda::latent_attention_workspace(s), 0u);
    s.scores_kernel = LatentScoresKernel::KeyRotation;
    EXPECT_EQ(starkv::cuda::latent_attention_workspace(s), 0u);
}

// Paged caches: pages of 64 and 192 positions in shuffled order, contexts that end inside a page
// and on a page boundary, every scores kernel that fits, fp16 / bf16 / Q4; against the same
// float64 reference as the contiguous caches (the pages hold the same rows).
TEST(LatentAttention, PagedCachesEveryKernel) {
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    Case mha{2, 4, 4, 128, 128, true, 256, {32, 40, 16, 32}, {300, 128}, 320, LatentScoresKernel::Auto, 64};
    Case gqa{2, 8, 2, 128, 128, true, 256, {32, 40}, {700, 384}, 768, LatentScoresKernel::Auto, 192};
    Case adj{1, 4, 1, 64, 64, false, 128, {24}, {190}, 256, LatentScoresKernel::Auto, 64};
    for (LatentScoresKernel k : {LatentScoresKernel::KeyRotation, LatentScoresKernel::QueryFold,
                                 LatentScoresKernel::RopeTable, LatentScoresKernel::KeyTable}) {
        for (Case* c : {&mha, &gqa, &adj}) {
            c->scores = k;
            const double e16 = run_case<F16>(*c), eb = run_case<Bf16>(*c);
            EXPECT_LT(e16, 3e-3) << "rel err " << e16;
            EXPECT_LT(eb, 1e-2) << "rel err " << eb;
            std::printf("[latent] paged (%d rows), %d heads / %d KV heads (%s): rel err fp16 %.2e, bf16 %.2e\n",
                        c->page_rows, c->n_head, c->n_kv, kernel_name(k), e16, eb);
        }
    }
    for (Case* c : {&mha, &gqa, &adj}) {
        c->scores = LatentScoresKernel::Auto;
        const double e = run_case<Q4>(*c);
        EXPECT_LT(e, 3e-3) << "rel err " << e;
        std::printf("[latent] paged (%d rows) Q4, %d heads / %d KV heads: rel err %.2e\n", c->page_rows, c->n_head,
                    c->n_kv, e);
    }
    // Pages must hold whole 64-key tiles, and enough of them.
    LatentAttnShape s = one_head_shape(LatentFormat::F16, 256);
    s.page_rows = 64;
    s.pages_per_seq = 4;
    EXPECT_GT(starkv::cuda::latent_attention_workspace(s), 0u);
    s.pages_per_seq = 3;
    EXPECT_EQ(starkv::cuda::latent_attention_workspace(s), 0u);
    s.pages_per_seq = 8;
    s.page_rows = 32;
    EXPECT_EQ(starkv::cuda::latent_attention_workspace(s), 0u);
}

TEST(LatentAttention, Llama3ShapesLongContext) {
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    if (small()) GTEST_SKIP() << "STARKV_LATENT_TEST_SMALL";
    Case c{2, 32, 8, 128, 128, false, 256, {32, 32, 32, 32, 32, 32, 32, 32}, {4097, 2500}, 4100};
    // Every scores kernel (key-side rotation, query-side fold, angle table).
    for (LatentScoresKernel k :
         {LatentScoresKernel::KeyRotation, LatentScoresKernel::QueryFold, LatentScoresKernel::RopeTable}) {
        c.scores = k;
        const double e = run_case<F16>(c);
        EXPECT_LT(e, 3e-3) << "rel err " << e;
        std::printf("[latent] Llama-3 shapes fp16, 4097 keys (%s): rel err %.2e\n",
                    kernel_name(k), e);
    }
}

// The small-batch single pass (kernels/latent_decode_small.cuh): batch 1 and 2-4, MHA with ragged
// ranks (every key-piece width: padded ranks <= 32, <= 64, <= 128), GQA groups 4 and 8, head_dim
// 64 and 128, both RoPE layouts (full, partial, none), contexts of 0, 1, 63, 65, 1000 and 4097
// keys, chunks of one and of several tiles, KV heads split over blocks, paged caches; fp16 and bf16,
// against the same float64 reference and bounds as the five-launch path.
namespace {
// Runs the case in both formats through the single pass (asserting that it takes the shape).
void small_both(Case c, const char* what) {
    c.scores = LatentScoresKernel::SmallBatch;
    ASSERT_TRUE(starkv::cuda::latent_small_supported(shape_of(c, LatentFormat::F16))) << what;
    const double e16 = run_case<F16>(c), eb = run_case<Bf16>(c);
    EXPECT_LT(e16, 3e-3) << what << ": rel err " << e16;
    EXPECT_LT(eb, 1e-2) << what << ": rel err " << eb;
    std::printf("[latent] small-batch pass, %s: rel err fp16 %.2e, bf16 %.2e\n", what, e16, eb);
}
struct TuneGuard {  // the benchmark knob, reset whatever happens
    TuneGuard(int chunk, int split) { starkv::cuda::latent_small_tune(chunk, split); }
    ~TuneGuard() { starkv::cuda::latent_small_tune(0, 0); }
};
}  // namespace

TEST(LatentAttentionShape, SmallBatchDispatch) {
    LatentAttnShape s = one_head_shape(LatentFormat::F16, 1000);
    s.ctx_cap = 1000;
    EXPECT_TRUE(starkv::cuda::latent_small_supported(s));
    EXPECT_EQ(starkv::cuda::latent_attention_workspace(s), starkv::cuda::latent_small_workspace(s));
    s.format = LatentFormat::Q4;  // Q4: the five-launch path
    EXPECT_FALSE(starkv::cuda::latent_small_supported(s));
    EXPECT_GT(starkv::cuda::latent_attention_workspace(s), 0u);
    s.format = LatentFormat::F16;
    s.head_dim = 96;  // refused by both
    EXPECT_FALSE(starkv::cuda::latent_small_supported(s));
    EXPECT_EQ(starkv::cuda::latent_attention_workspace(s), 0u);
    LatentAttnArgs a;
    EXPECT_EQ(starkv::cuda::latent_small_attention(s, a, nullptr, 0, nullptr), cudaErrorInvalidValue);
    s.head_dim = 128;
    // Valid shape, missing pointers or workspace: refused, not launched.
    EXPECT_EQ(starkv::cuda::latent_small_attention(s, a, nullptr, 0, nullptr), cudaErrorInvalidValue);
    // The bound covers the single pass's most chunks.
    EXPECT_GE(starkv::cuda::latent_attention_workspace_bound(s), starkv::cuda::latent_small_workspace_bound(s));
}

TEST(LatentAttention, SmallBatchSinglePass) {
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    small_both({1, 4, 4, 128, 128, false, 256, {32, 16, 40, 8}, {1000}, 1003}, "batch 1, MHA ragged 32/16/40/8, adjacent");
    for (int n : {1, 63, 65})
        small_both({1, 4, 4, 128, 128, true, 128, {32, 16, 32, 8}, {n}, 65}, ("batch 1, " + std::to_string(n) + " keys").c_str());
    small_both({3, 4, 4, 128, 128, false, 256, {32, 16, 40, 8}, {1, 77, 300}, 301}, "batch 3, MHA ragged, 1/77/300 keys");
    small_both({4, 8, 2, 64, 32, true, 128, {24, 64}, {129, 1000, 0, 65}, 1003},
               "batch 4, GQA 8/2, head_dim 64, partial half-split, ranks 24/64, 129/1000/0/65 keys");
    small_both({2, 16, 2, 128, 128, true, 128, {128, 33}, {65, 64}, 70}, "batch 2, GQA group 8, ranks 128/33");
    small_both({2, 4, 2, 64, 0, false, 128, {16, 32}, {200, 63}, 200}, "batch 2, no RoPE, head_dim 64");
    small_both({1, 64, 64, 64, 64, true, 128, std::vector<int>(64, 16), {130}, 130}, "batch 1, 64 heads, rank 16");
    {
        TuneGuard g(256, 0);  // chunks of 4 tiles
        small_both({2, 8, 2, 64, 32, true, 128, {24, 64}, {1000, 129}, 1003}, "chunks of 256 keys, GQA");
        small_both({1, 4, 4, 128, 128, false, 256, {32, 16, 40, 8}, {1000}, 1003}, "chunks of 256 keys, MHA");
    }
    {
        TuneGuard g(128, 2);  // KV heads in two blocks per chunk
        small_both({2, 8, 4, 128, 128, true, 256, {32, 40, 16, 32}, {300, 1000}, 1000}, "heads split in 2, chunks of 128");
    }
    if (!small()) {
        small_both({1, 32, 32, 128, 128, true, 1024, std::vector<int>(32, 32), {1000}, 1000}, "Llama-2 shapes, batch 1");
        small_both({4, 32, 8, 128, 128, true, 256, std::vector<int>(8, 32), {4097, 63, 65, 2500}, 4100},
                   "Llama-3 shapes, batch 4, 4097/63/65/2500 keys");
    }
}

TEST(LatentAttention, SmallBatchPagedCaches) {
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    small_both({2, 4, 4, 128, 128, true, 256, {32, 40, 16, 32}, {300, 128}, 320, LatentScoresKernel::SmallBatch, 64},
               "paged (64 rows), MHA, 300/128 keys");
    small_both({2, 8, 2, 128, 128, true, 256, {32, 40}, {700, 384}, 768, LatentScoresKernel::SmallBatch, 192},
               "paged (192 rows), GQA, 700/384 keys");
    TuneGuard g(128, 0);  // chunks of two tiles over pages of one tile
    small_both({1, 4, 1, 64, 64, false, 128, {24}, {190}, 256, LatentScoresKernel::SmallBatch, 64},
               "paged (64 rows), chunks of 128, adjacent");
}

// Auto takes the single pass at batch <= small_batch_max (default 4) for fp16/bf16 latents.
TEST(LatentAttention, SmallBatchAutoAgreesWithFiveLaunchPath) {
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    Case c{2, 8, 2, 128, 128, true, 256, {32, 40}, {700, 129}, 701};
    ASSERT_TRUE(starkv::cuda::latent_small_supported(shape_of(c, LatentFormat::F16)));
    const double e = run_case<F16>(c);  // Auto, batch 2: the single pass
    EXPECT_LT(e, 3e-3) << "rel err " << e;
    std::printf("[latent] Auto at batch 2 (single pass): rel err %.2e\n", e);
}
