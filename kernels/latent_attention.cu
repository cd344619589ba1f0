#include "latent_attention.cuh"
#include "latent_decode_small.cuh"
#include "mma_ptx.cuh"

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <type_traits>

namespace starkv::cuda {
namespace {

constexpr int kTile = 64;        // keys per tile (both passes)
constexpr int kThreads = 128;    // 4 warps; each owns 16 keys (scores) or 32 value columns (values)
constexpr int kStagesK = 4;      // key-latent tiles in flight per block
constexpr int kStagesV = 3;      // value-latent tiles in flight per block
constexpr int kSlice = 128;      // value-rank columns per block in the value pass
constexpr int kPad = 8;          // elements added to each shared row: ldmatrix rows hit distinct banks
constexpr float kLog2e = 1.4426950408889634f;

// 2^x with the SFU (no denormal handling: arguments are <= 0 and results below 2^-126 do not matter
// next to the running sum's leading term); 2^-inf = 0.
__device__ inline float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// (m, l) of two softmax partials in base 2, merged.
__device__ inline void merge_ml(float& m, float& l, float mo, float lo) {
    const float mn = fmaxf(m, mo);
    if (mn == -INFINITY) return;  // both empty
    l = l * exp2f(m - mn) + lo * exp2f(mo - mn);
    m = mn;
}

// ---- the tile loaders: the only reads of latents (a quantized format adds its own) ----

// Key-latent tile: rows [t0, t0 + kTile) of one (sequence, KV head), R
// columns; rows at or past k_end are zero-filled. Each thread's 16-byte pieces
// (R/16 of them) keep their offsets from tile to tile: computed once.
template <typename T>
struct KeyTileLoader {
    static constexpr int kMax = kLatMaxKeyRank / 16;
    int soff[kMax], doff[kMax];  // within the tile: source (row * R + col) and shared (row * (R + kPad) + col)
    int R;
    __device__ void init(int rank) {
        R = rank;
        const int per_row = R / 8;
#pragma unroll
        for (int k = 0; k < kMax; ++k) {
            const int e = threadIdx.x + k * kThreads, row = e / per_row, col = e % per_row;
            soff[k] = e < kTile * per_row ? row * R + col * 8 : -1;
            doff[k] = row * (R + kPad) + col * 8;
        }
    }
    __device__ void load(T* dst, const T* src, int t0, int k_end) const {
        const T* base = src + static_cast<size_t>(t0) * R;
        const int limit = (k_end - t0) * R;  // pieces of rows past k_end start at or after this
#pragma unroll
        for (int k = 0; k < kMax; ++k) {
            if (soff[k] >= 0) {
                const bool ok = soff[k] < limit;
                cp_async16(dst + doff[k], ok ? base + soff[k] : src, ok);
            }
        }
    }
};

// Value-latent tile: rows [t0, t0 + kTile), columns [c0, c0 + kSlice) of a
// row of v_rank; rows at or past k_end are zero-filled (P is 0 there, and 0 * NaN is not 0).
template <typename T>
__device__ inline void load_value_tile(T* dst, const T* src, int v_rank, int c0, int t0, int k_end) {
    constexpr int per_row = kSlice / 8;
    for (int e = threadIdx.x; e < kTile * per_row; e += kThreads) {
        const int row = e / per_row, col = e % per_row;
        const bool ok = t0 + row < k_end;
        const T* g = ok ? src + static_cast<size_t>(t0 + row) * v_rank + c0 + col * 8 : src;
        cp_async16(dst + row * (kSlice + kPad) + col * 8, g, ok);
    }
}

// Where a sequence's cache rows live: pages of `rows` positions, page table[b][t / rows] holding
// position t of sequence b; with no table, one page of ctx_cap rows per sequence (page b), the
// contiguous layout. rows is a multiple of kTile and chunks start at multiples of kTile, so a
// tile never straddles two pages.
struct PageMap {
    const int* table;
    int rows, per_seq;
};

// ---- pass 1: scores ----

struct ScoreParams {
    const float* q;
    const void* k_lat;    // Q4: the codes
    const void* k_scale;  // Q4: (scale, min) per token and KV head
    const void* k_u;
    const int* n_keys;
    const double* inv_freq;
    float* scores;  // [n_seq][n_head][keys_pad], scaled by scale*log2(e)
    float2* ml;     // [n_seq][n_head][n_chunk1] (max, sum) in base 2
    int n_head, n_kv, G, rope_dims, max_keys, keys_pad, chunk, n_chunk;
    PageMap pm;
    long long page_elems;  // key-latent elements per page, every KV head (Q4: twice its code bytes)
    float scale_log2;
    int rpad[kLatMaxKvHeads];
    int roff[kLatMaxKvHeads];  // sum of the earlier heads' padded ranks
};

// A tile's place in the cache: its page and the row of its first key there (looked up once per
// tile: the page table read and the division are on the path of every load that follows).
struct TileAt {
    size_t page;
    int row;
};
__device__ inline TileAt tile_at(const PageMap& pm, int b, int t0) {
    if (!pm.table) return {static_cast<size_t>(b), t0};  // contiguous: t0 < ctx_cap, no division
    return {static_cast<size_t>(__ldg(pm.table + static_cast<size_t>(b) * pm.per_seq + t0 / pm.rows)), t0 % pm.rows};
}
// Element index of the tile's first row of KV head h's key latents; the rows after it up to the
// page's end follow at rpad[h] elements each (Q4: half that in code bytes).
__device__ inline size_t key_row_index(const ScoreParams& p, TileAt at, int h) {
    return at.page * p.page_elems + static_cast<size_t>(p.pm.rows) * p.roff[h] + static_cast<size_t>(at.row) * p.rpad[h];
}
template <typename T>
__device__ inline const T* key_rows(const ScoreParams& p, TileAt at, int h) {
    return static_cast<const T*>(p.k_lat) + key_row_index(p, at, h);
}
__device__ inline const unsigned char* q4_key_rows(const ScoreParams& p, TileAt at, int h) {
    return static_cast<const unsigned char*>(p.k_lat) + key_row_index(p, at, h) / 2;
}
// Q4: the (scale, min) of the tile's first row of KV head h; the page's next rows follow.
__device__ inline const uint32_t* q4_key_scales(const ScoreParams& p, TileAt at, int h) {
    return static_cast<const uint32_t*>(p.k_scale) + (at.page * p.n_kv + h) * p.pm.rows + at.row;
}

__host__ __device__ constexpr int cs_stride(int hd, bool half) { return hd / 2 + (half ? 8 : 4); }

__host__ __device__ inline size_t score_smem_bytes(int hd, bool half, int R, int G, size_t elem) {
    return (static_cast<size_t>(hd) * (R + kPad) + static_cast<size_t>(kStagesK) * kTile * (R + kPad)) * elem +
           static_cast<size_t>(2) * G * hd * sizeof(float) +
           static_cast<size_t>(kTile) * cs_stride(hd, half) * sizeof(float2) + 4 * kLatMaxGroup * sizeof(float2);
}

// Block: (chunk of keys, KV head, sequence). Keys of a tile are at positions
// p0 + r; q . R(p0 + r) k = (R(-p0) q) . (R(r) k): the queries are turned back
// by p0 once per tile (qt), the keys forward by their in-tile offset r, whose
// cos/sin table (cs) is the same for every tile. GM: the group size rounded up
// to a power of two (loops over the group unroll).
template <typename T, int HD, bool HALF, int GM>
__global__ void __launch_bounds__(kThreads) latent_scores_kernel(ScoreParams p) {
    constexpr int NT = HD / 8;  // n-tiles of 8 dimensions
    constexpr int CSS = cs_stride(HD, HALF);
    const int chunk = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int G = p.G, R = p.rpad[h], RS = R + kPad, rd = p.rope_dims, np = rd / 2;
    const int n = min(p.n_keys[b], p.max_keys);
    const int k0 = chunk * p.chunk, k_end = min(n, k0 + p.chunk);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    float2* ml_out = p.ml + (static_cast<size_t>(b) * p.n_head + static_cast<size_t>(h) * G) * p.n_chunk + chunk;
    if (k0 >= k_end) {
        if (tid < G) ml_out[static_cast<size_t>(tid) * p.n_chunk] = make_float2(-INFINITY, 0.0f);
        return;
    }

    extern __shared__ __align__(16) unsigned char smem[];
    T* Us = reinterpret_cast<T*>(smem);
    T* Zs = Us + HD * RS;
    float* qt = reinterpret_cast<float*>(Zs + kStagesK * kTile * RS);  // [2][G][HD]
    float2* cs = reinterpret_cast<float2*>(qt + 2 * G * HD);           // [kTile][CSS]
    float2* red = cs + kTile * CSS;                                     // [4][kLatMaxGroup]

    const T* usrc = static_cast<const T*>(p.k_u) + static_cast<size_t>(HD) * p.roff[h];
    const int n_tiles = (k_end - k0 + kTile - 1) / kTile;

    // U_h and the first tiles in flight while the tables are built.
    for (int e = tid; e < HD * (R / 8); e += kThreads) {
        const int row = e / (R / 8), col = e % (R / 8);
        cp_async16(Us + row * RS + col * 8, usrc + static_cast<size_t>(row) * R + col * 8, true);
    }
    KeyTileLoader<T> loader;
    loader.init(R);
    auto load_tile = [&](T* dst, int t0) { loader.load(dst, key_rows<T>(p, tile_at(p.pm, b, t0), h), 0, k_end - t0); };
#pragma unroll
    for (int s = 0; s < kStagesK - 1; ++s) {
        if (s < n_tiles) load_tile(Zs + s * kTile * RS, k0 + s * kTile);
        cp_async_commit();
    }

    // cs[r][i] = (cos, sin)(r * theta_i); pairs past the rotated dimensions stay (1, 0).
    for (int e = tid; e < kTile * (HD / 2); e += kThreads) {
        const int r = e / (HD / 2), i = e % (HD / 2);
        float s = 0.0f, c = 1.0f;
        if (i < np) {  // r * theta < 64 rad: reduce to [-pi, pi] in fp32 (error ~4e-6), then the fast unit
            const float a = static_cast<float>(r * p.inv_freq[i]);
            __sincosf(a - 6.28318530718f * rintf(a * 0.159154943092f), &s, &c);
        }
        cs[r * CSS + i] = make_float2(c, s);
    }
    // qt: the queries; the rotated pairs are rewritten for every tile.
    const float* qsrc = p.q + (static_cast<size_t>(b) * p.n_head + static_cast<size_t>(h) * G) * HD;
    for (int e = tid; e < G * HD; e += kThreads)
        if (e % HD >= rd) qt[e] = qt[G * HD + e] = qsrc[e];  // never rotated
    // Pairs (g, i) this thread turns back by p0 each tile: cos/sin(p0 theta_i)
    // advanced by a fixed step of kTile positions (exact start from double).
    constexpr int kMaxOwn = (GM * (HD / 2) + kThreads - 1) / kThreads;
    float own_q0[kMaxOwn], own_q1[kMaxOwn], own_c[kMaxOwn], own_s[kMaxOwn], step_c[kMaxOwn], step_s[kMaxOwn];
    int own_a[kMaxOwn], own_b[kMaxOwn];
#pragma unroll
    for (int k = 0; k < kMaxOwn; ++k) {
        const int e = tid + k * kThreads;
        own_q0[k] = own_q1[k] = own_c[k] = own_s[k] = step_c[k] = step_s[k] = 0.0f;
        own_a[k] = own_b[k] = -1;
        if (e < G * np) {
            const int g = e / np, i = e % np;
            own_a[k] = g * HD + (HALF ? i : 2 * i);
            own_b[k] = g * HD + (HALF ? i + np : 2 * i + 1);
            own_q0[k] = qsrc[own_a[k]];
            own_q1[k] = qsrc[own_b[k]];
            double sd, cd;
            sincos(static_cast<double>(k0) * p.inv_freq[i], &sd, &cd);
            own_c[k] = static_cast<float>(cd);
            own_s[k] = static_cast<float>(sd);
            sincos(static_cast<double>(kTile) * p.inv_freq[i], &sd, &cd);
            step_c[k] = static_cast<float>(cd);
            step_s[k] = static_cast<float>(sd);
        }
    }
    // Writes qt[buf] for the tile whose start the owned cos/sin hold, then steps them.
    auto turn_queries = [&](int buf) {
#pragma unroll
        for (int k = 0; k < kMaxOwn; ++k) {
            if (own_a[k] >= 0) {
                const float c = own_c[k], s = own_s[k];
                float* dst = qt + buf * G * HD;
                dst[own_a[k]] = own_q0[k] * c + own_q1[k] * s;
                dst[own_b[k]] = own_q1[k] * c - own_q0[k] * s;
                own_c[k] = c * step_c[k] - s * step_s[k];
                own_s[k] = s * step_c[k] + c * step_s[k];
            }
        }
    };
    turn_queries(0);

    float m[GM], l[GM];
#pragma unroll
    for (int g = 0; g < GM; ++g) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
    }
    const int nks = R / 16;
    const int rr = lane / 4, x = 2 * (lane % 4);
    const int R0 = warp * 16 + rr, R1 = R0 + 8;
    float* sc_out = p.scores + (static_cast<size_t>(b) * p.n_head + static_cast<size_t>(h) * G) * p.keys_pad;
    // Per-lane shared-memory offsets that do not change from tile to tile.
    const int a_off = (warp * 16 + lane % 16) * RS + (lane / 16) * 8;
    const int b_off = ((lane / 16) * 8 + lane % 8) * RS + ((lane / 8) % 2) * 8;
    const float2* cs0 = cs + R0 * CSS;
    const float2* cs1 = cs + R1 * CSS;

    for (int t = 0; t < n_tiles; ++t) {
        cp_async_wait<kStagesK - 2>();
        __syncthreads();  // tile t and qt[t & 1] visible; tile t-1 and qt[(t+1) & 1] no longer read
        {
            const int nt = t + kStagesK - 1;
            if (nt < n_tiles) load_tile(Zs + (nt % kStagesK) * kTile * RS, k0 + nt * kTile);
            cp_async_commit();
        }
        if (t + 1 < n_tiles) turn_queries((t + 1) & 1);

        // K[16 rows of this warp][HD] = Z U^T, fp32 in registers (rank loop outermost).
        const T* Z = Zs + (t % kStagesK) * kTile * RS;
        float kc[NT][4];
#pragma unroll
        for (int j = 0; j < NT; ++j) kc[j][0] = kc[j][1] = kc[j][2] = kc[j][3] = 0.0f;
        {  // first rank step apart: its accumulators are known zeros (no register clears)
            uint32_t af[4];
            ldsm_x4(af, Z + a_off);
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
                uint32_t bf[4];
                ldsm_x4(bf, Us + b_off + 8 * j * RS);
                mma<T>(kc[j], af, bf[0], bf[1]);
                mma<T>(kc[j + 1], af, bf[2], bf[3]);
            }
        }
        for (int ks = 1; ks < nks; ++ks) {
            uint32_t af[4];
            ldsm_x4(af, Z + a_off + ks * 16);
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
                uint32_t bf[4];
                ldsm_x4(bf, Us + b_off + 8 * j * RS + ks * 16);
                mma<T>(kc[j], af, bf[0], bf[1]);
                mma<T>(kc[j + 1], af, bf[2], bf[3]);
            }
        }

        const float* qb = qt + (t & 1) * G * HD;
        float s0[GM], s1[GM];
#pragma unroll
        for (int g = 0; g < GM; ++g) s0[g] = s1[g] = 0.0f;
        // Rotated key values for dims (da, da+1) and (db, db+1) of rows R0 (a0, a1 / b0, b1) and R1.
        auto dot = [&](int da, float a0, float a1, float a2, float a3, int db, float b0, float b1, float b2,
                       float b3) {
#pragma unroll
            for (int g = 0; g < GM; ++g) {
                if (g < G) {
                    const float2 qa = *reinterpret_cast<const float2*>(qb + g * HD + da);
                    const float2 qq = *reinterpret_cast<const float2*>(qb + g * HD + db);
                    s0[g] = fmaf(a0, qa.x, fmaf(a1, qa.y, fmaf(b0, qq.x, fmaf(b1, qq.y, s0[g]))));
                    s1[g] = fmaf(a2, qa.x, fmaf(a3, qa.y, fmaf(b2, qq.x, fmaf(b3, qq.y, s1[g]))));
                }
            }
        };
        auto rot_half = [&](const float (&ca)[4], const float (&cb)[4], int d) {
            // (ca[e], cb[e]) is one pair (d + e%2, d + e%2 + rd/2); e = 0, 1 row R0, e = 2, 3 row R1.
            const float4 r0 = *reinterpret_cast<const float4*>(cs0 + d);
            const float4 r1 = *reinterpret_cast<const float4*>(cs1 + d);
            dot(d, ca[0] * r0.x - cb[0] * r0.y, ca[1] * r0.z - cb[1] * r0.w, ca[2] * r1.x - cb[2] * r1.y,
                ca[3] * r1.z - cb[3] * r1.w, d + rd / 2, ca[0] * r0.y + cb[0] * r0.x, ca[1] * r0.w + cb[1] * r0.z,
                ca[2] * r1.y + cb[2] * r1.x, ca[3] * r1.w + cb[3] * r1.z);
        };
        if constexpr (!HALF) {
            // Adjacent pairs (2i, 2i+1) sit in one thread: kc[j][0..1] row R0, kc[j][2..3] row R1.
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
                const int ia = 4 * j + lane % 4, ib = ia + 4;
                const float2 ra0 = cs0[ia], ra1 = cs1[ia], rb0 = cs0[ib], rb1 = cs1[ib];
                const float(&ca)[4] = kc[j];
                const float(&cb)[4] = kc[j + 1];
                dot(8 * j + x, ca[0] * ra0.x - ca[1] * ra0.y, ca[0] * ra0.y + ca[1] * ra0.x,
                    ca[2] * ra1.x - ca[3] * ra1.y, ca[2] * ra1.y + ca[3] * ra1.x, 8 * j + 8 + x,
                    cb[0] * rb0.x - cb[1] * rb0.y, cb[0] * rb0.y + cb[1] * rb0.x, cb[2] * rb1.x - cb[3] * rb1.y,
                    cb[2] * rb1.y + cb[3] * rb1.x);
            }
        } else {
            // Half-split over the first rd dimensions: pairs are n-tiles j and j + rd/16, same
            // thread position; the dimensions past rd are plain. The partner must be a
            // compile-time index (a run-time one sends kc to local memory): one branch per rd.
            auto half_split = [&](auto ht_c) {
                constexpr int ht = decltype(ht_c)::value;
#pragma unroll
                for (int j = 0; j < ht; ++j) rot_half(kc[j], kc[j + ht], 8 * j + x);
#pragma unroll
                for (int j = 2 * ht; j < NT; j += 2)
                    dot(8 * j + x, kc[j][0], kc[j][1], kc[j][2], kc[j][3], 8 * j + 8 + x, kc[j + 1][0], kc[j + 1][1],
                        kc[j + 1][2], kc[j + 1][3]);
            };
            switch (rd / 16) {
                case NT / 2: half_split(std::integral_constant<int, NT / 2>{}); break;
                case 0: half_split(std::integral_constant<int, 0>{}); break;
                case 1: half_split(std::integral_constant<int, 1>{}); break;
                case 2: half_split(std::integral_constant<int, 2>{}); break;
                case 3: half_split(std::integral_constant<int, 3>{}); break;
                default:
                    if constexpr (NT / 2 > 4) {
                        switch (rd / 16) {
                            case 4: half_split(std::integral_constant<int, 4>{}); break;
                            case 5: half_split(std::integral_constant<int, 5 % (NT / 2)>{}); break;
                            case 6: half_split(std::integral_constant<int, 6 % (NT / 2)>{}); break;
                            default: half_split(std::integral_constant<int, 7 % (NT / 2)>{}); break;
                        }
                    }
                    break;
            }
        }

        const int t0 = k0 + t * kTile;
        const bool v0 = t0 + R0 < k_end, v1 = t0 + R1 < k_end;
#pragma unroll
        for (int g = 0; g < GM; ++g) {
            if (g < G) {
                float a = s0[g], c = s1[g];
                a += __shfl_xor_sync(0xffffffffu, a, 1);
                a += __shfl_xor_sync(0xffffffffu, a, 2);
                c += __shfl_xor_sync(0xffffffffu, c, 1);
                c += __shfl_xor_sync(0xffffffffu, c, 2);
                a *= p.scale_log2;
                c *= p.scale_log2;
                if (lane % 4 == g % 4) {
                    if (v0) sc_out[static_cast<size_t>(g) * p.keys_pad + t0 + R0] = a;
                    if (v1) sc_out[static_cast<size_t>(g) * p.keys_pad + t0 + R1] = c;
                }
                const float mx = fmaxf(v0 ? a : -INFINITY, v1 ? c : -INFINITY);
                if (mx > -INFINITY) {
                    const float mn = fmaxf(m[g], mx);
                    l[g] = l[g] * exp2f(m[g] - mn) + (v0 ? exp2f(a - mn) : 0.0f) + (v1 ? exp2f(c - mn) : 0.0f);
                    m[g] = mn;
                }
            }
        }
    }
    cp_async_wait<0>();

    // (m, l) over the block: lanes of a quad agree; merge the 8 row lanes, then the warps.
#pragma unroll
    for (int g = 0; g < GM; ++g) {
        if (g < G) {
            for (int off = 4; off < 32; off *= 2) {
                const float mo = __shfl_xor_sync(0xffffffffu, m[g], off);
                const float lo = __shfl_xor_sync(0xffffffffu, l[g], off);
                merge_ml(m[g], l[g], mo, lo);
            }
            if (lane == 0) red[warp * kLatMaxGroup + g] = make_float2(m[g], l[g]);
        }
    }
    __syncthreads();
    if (tid < G) {
        float mm = -INFINITY, ll = 0.0f;
        for (int w = 0; w < kThreads / 32; ++w)
            merge_ml(mm, ll, red[w * kLatMaxGroup + tid].x, red[w * kLatMaxGroup + tid].y);
        ml_out[static_cast<size_t>(tid) * p.n_chunk] = make_float2(mm, ll);
    }
}

// ---- pass 1, rotation folded into the query side (v4) ----
// score(q, U z at position p0 + o) = sum_i cos((p0+o) t_i) A0_i . z + sin((p0+o) t_i) B0_i . z with, per
// rotation pair i = (a, b): A0_i[k] = q_a U[a][k] + q_b U[b][k], B0_i[k] = q_b U[a][k] - q_a U[b][k]
// (scale folded in). Splitting (p0 + o) t = p0 t + o t:
//   W[o][k] = sum_i C[o][i] A_i(p0)[k] + S[o][i] B_i(p0)[k],  A(p0) = c A0 + s B0,  B(p0) = c B0 - s A0,
// with C, S = cos, sin(o t_i) the same for every tile (fp16 mma fragments held in registers) and
// M(p0) = [A(p0); B(p0)] rotated once per tile (HD/2 x R pairs per query head, not 64 keys x HD).
// W = [C S] x M(p0) runs on the tensor cores, score_o = z_o . W_o is R FMAs per key and head. The
// rotation work per key drops from ~3 HD fp32 operations to ~(2 HD R / 64 + R) per head.
// 3 key tiles in flight (not 4): with 5 blocks/SM that is about as many bytes in flight per SM.
constexpr int kStagesW = 3;
constexpr int kBlocksW = 5;  // MHA: resident blocks per SM the register cap (96) is set for (GQA: no cap, it spills)

__host__ __device__ inline size_t score_w_smem_bytes(int hd, int R, int G, size_t elem, int nbuf = 1) {
    return static_cast<size_t>(kStagesW) * kTile * (R + kPad) * elem +
           static_cast<size_t>(G) * R * hd * sizeof(__half) +                   // M0
           static_cast<size_t>(nbuf) * G * R * (hd + kPad) * sizeof(__half) +   // M(p0)
           4 * kLatMaxGroup * sizeof(float2);
}

__device__ inline uint32_t pack_half2(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
}

template <typename T, int HD, int GM>
__global__ void __launch_bounds__(kThreads, GM == 1 ? kBlocksW : 1)
    latent_scores_w_kernel(ScoreParams p, bool half_split, bool two_buf) {
    constexpr int NP = HD / 2;   // rotation pairs (the unrotated dimensions pair up with angle 0)
    constexpr int KS = HD / 16;  // k-steps of W = [C S] x M
    constexpr int MS = HD + kPad;
    const int chunk = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int G = p.G, R = p.rpad[h], RS = R + kPad, rd = p.rope_dims, np = rd / 2;
    const int n = min(p.n_keys[b], p.max_keys);
    const int k0 = chunk * p.chunk, k_end = min(n, k0 + p.chunk);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    float2* ml_out = p.ml + (static_cast<size_t>(b) * p.n_head + static_cast<size_t>(h) * G) * p.n_chunk + chunk;
    if (k0 >= k_end) {
        if (tid < G) ml_out[static_cast<size_t>(tid) * p.n_chunk] = make_float2(-INFINITY, 0.0f);
        return;
    }

    extern __shared__ __align__(16) unsigned char smem[];
    T* Zs = reinterpret_cast<T*>(smem);
    __half* M0 = reinterpret_cast<__half*>(Zs + kStagesW * kTile * RS);  // [G][R][HD]: A0 | B0
    __half* Mt = M0 + G * R * HD;  // [1 or 2][G][R][MS]: M(p0), rank-major
    float2* red = reinterpret_cast<float2*>(Mt + (two_buf ? 2 : 1) * G * R * MS);  // [4][kLatMaxGroup]

    const T* usrc = static_cast<const T*>(p.k_u) + static_cast<size_t>(HD) * p.roff[h];
    const int n_tiles = (k_end - k0 + kTile - 1) / kTile;

    KeyTileLoader<T> loader;
    loader.init(R);
    auto load_tile = [&](T* dst, int t0) { loader.load(dst, key_rows<T>(p, tile_at(p.pm, b, t0), h), 0, k_end - t0); };
#pragma unroll
    for (int s = 0; s < kStagesW - 1; ++s) {
        if (s < n_tiles) load_tile(Zs + s * kTile * RS, k0 + s * kTile);
        cp_async_commit();
    }

    // Pair i's two dimensions: rotated pairs first, then the plain dimensions two by two.
    auto dims = [&](int i, int& a, int& bb) {
        if (i < np) {
            a = half_split ? i : 2 * i;
            bb = half_split ? i + np : 2 * i + 1;
        } else {
            a = rd + 2 * (i - np);
            bb = a + 1;
        }
    };
    const float* qsrc = p.q + (static_cast<size_t>(b) * p.n_head + static_cast<size_t>(h) * G) * HD;
    for (int e = tid; e < G * R * NP; e += kThreads) {
        const int g = e / (R * NP), k = (e / NP) % R, i = e % NP;
        int a, bb;
        dims(i, a, bb);
        const float qa = qsrc[g * HD + a], qb = qsrc[g * HD + bb];
        const float ua = static_cast<float>(usrc[static_cast<size_t>(a) * R + k]);
        const float ub = static_cast<float>(usrc[static_cast<size_t>(bb) * R + k]);
        M0[(g * R + k) * HD + i] = __float2half_rn(p.scale_log2 * (qa * ua + qb * ub));
        M0[(g * R + k) * HD + NP + i] = __float2half_rn(p.scale_log2 * (qb * ua - qa * ub));
    }

    // [C S] fragments (A operand, rows = in-tile offsets): a0 (R0, c), a1 (R1, c), a2 (R0, c+8), a3 (R1, c+8).
    const int rr = lane / 4, x = 2 * (lane % 4);
    const int R0 = warp * 16 + rr, R1 = R0 + 8;
    // k-step ks < KS/2 holds cos of pairs 16 ks + ..., k-step ks + KS/2 the sin of the same pairs.
    uint32_t tf[KS][4];
#pragma unroll
    for (int ks = 0; ks < KS / 2; ++ks) {
#pragma unroll
        for (int f = 0; f < 4; ++f) {
            const int o = (f & 1) ? R1 : R0;
            const int i0 = ks * 16 + x + (f >> 1) * 8;
            float sn[2] = {0.0f, 0.0f}, cn[2] = {1.0f, 1.0f};
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                if (i0 + e < np) {  // o * theta < 64 rad: reduce to [-pi, pi] in fp32, then the fast unit
                    const float a = static_cast<float>(o * p.inv_freq[i0 + e]);
                    __sincosf(a - 6.28318530718f * rintf(a * 0.159154943092f), &sn[e], &cn[e]);
                }
            }
            tf[ks][f] = pack_half2(cn[0], cn[1]);
            tf[ks + KS / 2][f] = pack_half2(sn[0], sn[1]);
        }
    }
    // This thread rotates pairs (ip2, ip2 + 1) of ranks k = kr0, kr0 + kstep, ... each tile:
    // cos/sin(p0 t_i) advanced by a fixed step of kTile positions (exact start from double).
    const int ip2 = 2 * (tid % (NP / 2)), kr0 = tid / (NP / 2);
    constexpr int kstep = kThreads / (NP / 2);
    float oc[2], os[2], sc[2], ss[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
        oc[e] = sc[e] = 1.0f;
        os[e] = ss[e] = 0.0f;
        if (ip2 + e < np) {
            double sd, cd;
            sincos(static_cast<double>(k0) * p.inv_freq[ip2 + e], &sd, &cd);
            oc[e] = static_cast<float>(cd);
            os[e] = static_cast<float>(sd);
            sincos(static_cast<double>(kTile) * p.inv_freq[ip2 + e], &sd, &cd);
            sc[e] = static_cast<float>(cd);
            ss[e] = static_cast<float>(sd);
        }
    }

    float m[GM], l[GM];
#pragma unroll
    for (int g = 0; g < GM; ++g) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
    }
    float* sc_out = p.scores + (static_cast<size_t>(b) * p.n_head + static_cast<size_t>(h) * G) * p.keys_pad;
    const int b_off = ((lane / 16) * 8 + lane % 8) * MS + ((lane / 8) % 2) * 8;
    const int njp = R / 16;

    // M(p0) of the next tile into buffer buf (M0 rotated by the start the owned cos/sin hold), then step them.
    auto rotate_m = [&](int buf) {
        __half* Mb = Mt + buf * G * R * MS;
        for (int g = 0; g < G; ++g) {
            for (int k = kr0; k < R; k += kstep) {
                const __half* src = M0 + (g * R + k) * HD + ip2;
                const float2 a = __half22float2(*reinterpret_cast<const __half2*>(src));
                const float2 bb = __half22float2(*reinterpret_cast<const __half2*>(src + NP));
                __half* dst = Mb + (g * R + k) * MS + ip2;
                *reinterpret_cast<uint32_t*>(dst) =
                    pack_half2(oc[0] * a.x + os[0] * bb.x, oc[1] * a.y + os[1] * bb.y);
                *reinterpret_cast<uint32_t*>(dst + NP) =
                    pack_half2(oc[0] * bb.x - os[0] * a.x, oc[1] * bb.y - os[1] * a.y);
            }
        }
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const float c = oc[e], s = os[e];
            oc[e] = c * sc[e] - s * ss[e];
            os[e] = s * sc[e] + c * ss[e];
        }
    };
    // Two M(p0) buffers (one barrier per tile: tile t+1's is written while tile t's is read) where
    // shared memory allows, else one (a second barrier per tile).
    if (two_buf) {
        __syncthreads();  // M0 visible
        rotate_m(0);
    }

    for (int t = 0; t < n_tiles; ++t) {
        cp_async_wait<kStagesW - 2>();
        __syncthreads();  // tile t, M0 and M(p0) of t visible; tile t-1 and its M(p0) no longer read
        {
            const int nt = t + kStagesW - 1;
            if (nt < n_tiles) load_tile(Zs + (nt % kStagesW) * kTile * RS, k0 + nt * kTile);
            cp_async_commit();
        }
        if (two_buf) {
            if (t + 1 < n_tiles) rotate_m((t + 1) & 1);
        } else {
            rotate_m(0);
            __syncthreads();  // M(p0) visible
        }
        const __half* Mcur = Mt + (two_buf ? (t & 1) : 0) * G * R * MS;

        const T* Z = Zs + (t % kStagesW) * kTile * RS;
        float s0[GM], s1[GM];
#pragma unroll
        for (int g = 0; g < GM; ++g) s0[g] = s1[g] = 0.0f;
        for (int jp = 0; jp < njp; ++jp) {
            // z of rows R0, R1 at ranks 16 jp + 8 jj + x, +1
            float2 z0[2], z1[2];
#pragma unroll
            for (int jj = 0; jj < 2; ++jj) {
                const int col = 16 * jp + 8 * jj + x;
                z0[jj] = half2_bits_to_float2(*reinterpret_cast<const uint32_t*>(Z + R0 * RS + col),
                                              static_cast<T*>(nullptr));
                z1[jj] = half2_bits_to_float2(*reinterpret_cast<const uint32_t*>(Z + R1 * RS + col),
                                              static_cast<T*>(nullptr));
            }
#pragma unroll
            for (int g = 0; g < GM; ++g) {
                if (g < G) {
                    const __half* Mg = Mcur + (g * R + 16 * jp) * MS + b_off;
                    float w[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
                    for (int ks = 0; ks < KS; ++ks) {
                        uint32_t bf[4];
                        ldsm_x4(bf, Mg + ks * 16);
                        mma<__half>(w[0], tf[ks], bf[0], bf[1]);
                        mma<__half>(w[1], tf[ks], bf[2], bf[3]);
                    }
#pragma unroll
                    for (int jj = 0; jj < 2; ++jj) {
                        s0[g] = fmaf(w[jj][0], z0[jj].x, fmaf(w[jj][1], z0[jj].y, s0[g]));
                        s1[g] = fmaf(w[jj][2], z1[jj].x, fmaf(w[jj][3], z1[jj].y, s1[g]));
                    }
                }
            }
        }

        const int t0 = k0 + t * kTile;
        const bool v0 = t0 + R0 < k_end, v1 = t0 + R1 < k_end;
#pragma unroll
        for (int g = 0; g < GM; ++g) {
            if (g < G) {
                float a = s0[g], c = s1[g];
                a += __shfl_xor_sync(0xffffffffu, a, 1);
                a += __shfl_xor_sync(0xffffffffu, a, 2);
                c += __shfl_xor_sync(0xffffffffu, c, 1);
                c += __shfl_xor_sync(0xffffffffu, c, 2);
                if (lane % 4 == g % 4) {
                    if (v0) sc_out[static_cast<size_t>(g) * p.keys_pad + t0 + R0] = a;
                    if (v1) sc_out[static_cast<size_t>(g) * p.keys_pad + t0 + R1] = c;
                }
                const float mx = fmaxf(v0 ? a : -INFINITY, v1 ? c : -INFINITY);
                if (mx > -INFINITY) {
                    const float mn = fmaxf(m[g], mx);
                    l[g] = l[g] * exp2f(m[g] - mn) + (v0 ? exp2f(a - mn) : 0.0f) + (v1 ? exp2f(c - mn) : 0.0f);
                    m[g] = mn;
                }
            }
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int g = 0; g < GM; ++g) {
        if (g < G) {
            for (int off = 4; off < 32; off *= 2) {
                const float mo = __shfl_xor_sync(0xffffffffu, m[g], off);
                const float lo = __shfl_xor_sync(0xffffffffu, l[g], off);
                merge_ml(m[g], l[g], mo, lo);
            }
            if (lane == 0) red[warp * kLatMaxGroup + g] = make_float2(m[g], l[g]);
        }
    }
    __syncthreads();
    if (tid < G) {
        float mm = -INFINITY, ll = 0.0f;
        for (int w = 0; w < kThreads / 32; ++w)
            merge_ml(mm, ll, red[w * kLatMaxGroup + tid].x, red[w * kLatMaxGroup + tid].y);
        ml_out[static_cast<size_t>(tid) * p.n_chunk] = make_float2(mm, ll);
    }
}

// ---- v8: the rotation as a table of absolute angles (LatentScoresKernel::RopeTable) ----
// q . R(p) U z = c(p) . (M z), with c(p) = [cos(p t_i) | sin(p t_i)] (HD values, shared by every head
// and sequence) and M = [A0; B0] the query folded into U (HD x R per query head, built once per block).
// So W = C M, with C the table rows of the tile's 64 positions, is one tensor-core product per tile
// and query head, and score_o = z_o . W_o is R FMAs: no key is reconstructed, nothing is rotated per
// tile. The table (fp16, one 256-byte row per position, written in mma A-fragment order so each lane
// loads its fragment with one 16-byte load) is built once per call in the workspace and read
// through L2; a block scores QB query heads (up to 4, of one or more KV heads), so each table row is
// read n_head / QB times per step. fp16 cos/sin are within 2.4e-4 of the exact values.

// 8 4-bit codes (low nibble first) and their group's (scale, min) -> 8 halves, 6 instructions a pair:
// byte k copied to both halves (prmt), its nibbles placed as the low mantissa bits of 1024.0 in fp16
// (0x6400 | n), 1024 subtracted (exact), then min + scale * n with one rounding (hfma2).
__device__ inline uint4 dequant8(uint32_t codes, uint32_t sm_bits) {
    const __half2 sm = *reinterpret_cast<const __half2*>(&sm_bits);
    const __half2 sc = __low2half2(sm), mn = __high2half2(sm);
    const __half2 k1024 = __float2half2_rn(1024.0f);
    uint32_t o[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const uint32_t t = __byte_perm(codes, 0u, 0x4040u + 0x0101u * k);  // byte k at bits 0-7 and 16-23
        const uint32_t v = (t & 0x0000000Fu) | ((t >> 4) & 0x000F0000u) | 0x64006400u;
        const __half2 h = __hfma2(__hsub2(*reinterpret_cast<const __half2*>(&v), k1024), sc, mn);
        o[k] = *reinterpret_cast<const uint32_t*>(&h);
    }
    return make_uint4(o[0], o[1], o[2], o[3]);
}

// Q4 key latents of one (sequence, KV head) tile: codes in 8-byte pieces (one row each: R / 2 is a
// multiple of 8), one 4-byte (scale, min) per row; rows at or past k_end zero-filled. raw: codes
// [kTile][R / 2] then scales [kTile]. Threads tid, tid + nthr, ...
__device__ inline void load_q4_key_tile(unsigned char* raw, const unsigned char* codes, const uint32_t* scales, int R,
                                        int t0, int k_end, int tid, int nthr) {
    // A piece's row by a float reciprocal (exact for these small counts), not an integer division.
    const unsigned char* base = codes + static_cast<size_t>(t0) * R / 2;
    if (R % 32 == 0 && (reinterpret_cast<uintptr_t>(codes) & 15) == 0) {  // rows of whole, aligned 16-byte pieces
        const int pr = R / 32;
        const float inv = 1.0f / static_cast<float>(pr);
        for (int e = tid; e < kTile * pr; e += nthr) {
            const bool ok = t0 + static_cast<int>((static_cast<float>(e) + 0.5f) * inv) < k_end;
            cp_async16(raw + e * 16, ok ? base + e * 16 : codes, ok);
        }
    } else {
        const int pr = R / 16;  // 8-byte pieces per row
        const float inv = 1.0f / static_cast<float>(pr);
        for (int e = tid; e < kTile * pr; e += nthr) {
            const bool ok = t0 + static_cast<int>((static_cast<float>(e) + 0.5f) * inv) < k_end;
            cp_async_small<8>(raw + e * 8, ok ? base + e * 8 : codes, ok);
        }
    }
    uint32_t* sdst = reinterpret_cast<uint32_t*>(raw + kTile * R / 2);
    for (int e = tid; e < kTile; e += nthr) {
        const bool ok = t0 + e < k_end;
        cp_async_small<4>(sdst + e, ok ? scales + t0 + e : scales, ok);
    }
}

// raw (load_q4_key_tile's layout) -> fp16 rows [kTile][stride] at dst.
__device__ inline void dequant_q4_key_tile(__half* dst, int stride, const unsigned char* raw, int R, int tid,
                                           int nthr) {
    const int p8 = R / 8;  // 8-value pieces per row
    const float inv = 1.0f / static_cast<float>(p8);
    const uint32_t* sc = reinterpret_cast<const uint32_t*>(raw + kTile * R / 2);
    for (int e = tid; e < kTile * p8; e += nthr) {
        const int row = static_cast<int>((static_cast<float>(e) + 0.5f) * inv), c = e - row * p8;
        const uint32_t codes = *reinterpret_cast<const uint32_t*>(raw + row * (R / 2) + c * 4);
        *reinterpret_cast<uint4*>(dst + row * stride + c * 8) = dequant8(codes, sc[row]);
    }
}

constexpr int kStagesT = 2;       // tiles (key latents + table rows) per block in shared memory
constexpr int kQbMax = 4;         // query heads per block
constexpr int kThreadsT = 256;    // 8 warps: warp w scores 16 keys (slab w % 4) for 2 of the 4 heads (w / 4)

// Pair i's two dimensions: rotated pairs first, then the plain dimensions two by two (angle 0).
__device__ inline void rope_pair_dims(int i, int rope_dims, bool half_split, int& a, int& bb) {
    const int np = rope_dims / 2;
    if (i < np) {
        a = half_split ? i : 2 * i;
        bb = half_split ? i + np : 2 * i + 1;
    } else {
        a = rope_dims + 2 * (i - np);
        bb = a + 1;
    }
}

// The table's value at (position row, channel c): c < HD/2 is cos of pair c, else sin of pair c - HD/2;
// pairs from np on are the unrotated dimensions (angle 0). Computed in double, rounded once to fp16.
template <int HD>
__device__ inline float rope_table_value(int row, int c, const double* inv_freq, int np) {
    const int i = c < HD / 2 ? c : c - HD / 2;
    double sn = 0.0, co = 1.0;
    if (i < np) sincos(static_cast<double>(row) * inv_freq[i], &sn, &co);
    return static_cast<float>(c < HD / 2 ? co : sn);
}

// Table entry of (16-row slab s, k-step ks, lane): rows 16 s + lane/4 (+8), channels 16 ks + 2 (lane%4)
// (+1, +8, +9); channel c < HD/2 is cos of pair c, else sin of pair c - HD/2.
template <int HD>
__global__ void latent_rope_table_kernel(uint4* tab, const double* inv_freq, int np, int n_slab) {
    constexpr int KS = HD / 16;
    const long long total = static_cast<long long>(n_slab) * KS * 32;
    for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
         e += static_cast<long long>(gridDim.x) * blockDim.x) {
        const int lane = static_cast<int>(e % 32), ks = static_cast<int>((e / 32) % KS);
        const int slab = static_cast<int>(e / (32 * KS));
        uint32_t w[4];
#pragma unroll
        for (int f = 0; f < 4; ++f) {
            const int row = slab * 16 + lane / 4 + (f & 1) * 8;
            const int c0 = ks * 16 + 2 * (lane % 4) + (f >> 1) * 8;
            w[f] = pack_half2(rope_table_value<HD>(row, c0, inv_freq, np), rope_table_value<HD>(row, c0 + 1, inv_freq, np));
        }
        tab[e] = make_uint4(w[0], w[1], w[2], w[3]);
    }
}

// The same table in the canonical layout of a wgmma operand (K-major, no swizzle), read by the fold-table
// kernel: per 64-row tile [channel block kb: HD/8][row block rb: 8][row: 8][channel: 8] halves, i.e. 8x8
// "core matrices" of 128 contiguous bytes; one uint4 is 8 channels of one row. The tile is still one
// contiguous run (a plain copy), and an mma A fragment is one ldmatrix.x4 of four core matrices.
template <int HD>
__global__ void latent_rope_table_cm_kernel(uint4* tab, const double* inv_freq, int np, int n_tile64) {
    const long long total = static_cast<long long>(n_tile64) * (HD / 8) * 64;
    for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
         e += static_cast<long long>(gridDim.x) * blockDim.x) {
        const int r64 = static_cast<int>(e % 64), kb = static_cast<int>((e / 64) % (HD / 8));
        const int row = static_cast<int>(e / (64 * (HD / 8))) * 64 + r64;
        uint32_t w[4];
#pragma unroll
        for (int k2 = 0; k2 < 4; ++k2) {
            const int c = kb * 8 + 2 * k2;
            w[k2] = pack_half2(rope_table_value<HD>(row, c, inv_freq, np), rope_table_value<HD>(row, c + 1, inv_freq, np));
        }
        tab[e] = make_uint4(w[0], w[1], w[2], w[3]);
    }
}

// Halves offset of element (row n, channel c) in a [n / 8][HD / 8][8][8] core-matrix array.
template <int HD>
__device__ inline int cm_off(int n, int c) {
    return (n / 8) * (HD / 8) * 64 + (c / 8) * 64 + (n % 8) * 8 + c % 8;
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define STARKV_WGMMA 1
// wgmma shared-memory matrix descriptor, no swizzle: start, LBO (between the two 8-element K halves of a
// k16 step) and SBO (between 8-row groups), all in 16-byte units.
__device__ inline uint64_t wg_desc(const void* smem_ptr, uint32_t lbo, uint32_t sbo) {
    const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(smem_ptr));
    return static_cast<uint64_t>((a & 0x3FFFF) >> 4) | (static_cast<uint64_t>(lbo >> 4) << 16) |
           (static_cast<uint64_t>(sbo >> 4) << 32);
}
__device__ inline void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ inline void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ inline void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ inline void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// d (+)= A (64 x 16, descriptor) x B (16 x N, descriptor), fp16 in, fp32 accumulators (N / 2 per thread).
template <int N>
__device__ inline void wgmma_f16(float (&d)[N / 2], uint64_t da, uint64_t db, int accumulate);
template <>
__device__ inline void wgmma_f16<32>(float (&d)[16], uint64_t da, uint64_t db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(da), "l"(db), "r"(accumulate));
}
template <>
__device__ inline void wgmma_f16<64>(float (&d)[32], uint64_t da, uint64_t db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,"
        "%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(da), "l"(db), "r"(accumulate));
}
#else
#define STARKV_WGMMA 0
#endif

struct TableScoreParams {
    ScoreParams sp;
    const uint4* tab;
    int QB;   // query heads per block
    int NKV;  // KV heads per block (QB / G, or 1 when a group spans several blocks)
    bool half_split;
};

// Q4: the stages hold the raw tiles (codes + scales), dequantized into one fp16 tile per KV head.
__host__ __device__ inline size_t q4_key_raw_bytes(int R) { return static_cast<size_t>(kTile) * (R / 2 + 4); }

__host__ __device__ inline size_t score_t_smem_bytes(int hd, int R, int NKV, size_t elem, bool q4 = false) {
    const size_t keys = q4 ? static_cast<size_t>(kStagesT) * NKV * q4_key_raw_bytes(R) +
                                 static_cast<size_t>(NKV) * kTile * (R + kPad) * sizeof(__half)
                           : static_cast<size_t>(kStagesT) * NKV * kTile * (R + kPad) * elem;
    // M is laid out for kQbMax heads of R ranks (rounded to the kernel's rank steps) whatever QB is.
    const size_t rm = (R <= 16 ? 16 : R <= 32 ? 32 : R <= 64 ? 64 : 128);
    return keys + static_cast<size_t>(kStagesT) * kTile * hd * sizeof(__half) +  // table rows
           static_cast<size_t>(kQbMax) * rm * hd * sizeof(__half) + 8 * kQbMax * sizeof(float2);
}

// Block: (chunk of keys, QB query heads, sequence); 8 warps. Per tile of 64 keys: the key latents of
// the block's KV heads and the 64 table rows arrive by cp.async (one tile ahead); warp w multiplies
// its slab's table fragments by M of its two heads (tensor cores) and dots the result with the
// latents. JPM: 16-rank steps of the largest rank; the products of both heads (JPM <= 2) or of all
// rank steps run interleaved, 8+ independent mma chains per warp (one chain of 16 was latency-bound).
template <typename T, int HD, int JPM, bool Q4>
__global__ void __launch_bounds__(kThreadsT, 2) latent_scores_t_kernel(TableScoreParams tp) {
    constexpr int NP = HD / 2, KS = HD / 16;
    constexpr int RM = JPM * 16;                           // each head's rows of M (ranks, zero past its own)
    constexpr bool kWG = STARKV_WGMMA && JPM <= 2;          // W by wgmma (warpgroup of 4 warps, 2 heads)
    constexpr int kTabU4 = kTile / 16 * KS * 32;  // uint4 per tile of table rows
    constexpr int NH = JPM <= 2 ? 2 : 1;          // heads whose products are interleaved
    constexpr int kZIter = (JPM * 16 * kTile / 8 + kThreadsT - 1) / kThreadsT;
    const ScoreParams& p = tp.sp;
    const int QB = tp.QB, NKV = tp.NKV, G = p.G;
    const int chunk = blockIdx.x, hq0 = blockIdx.y * QB, b = blockIdx.z, kv0 = hq0 / G;
    const int n = min(p.n_keys[b], p.max_keys);
    const int k0 = chunk * p.chunk, k_end = min(n, k0 + p.chunk);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int slab = warp % 4, hh = warp / 4;  // 16-key slab of the tile; heads 2 hh, 2 hh + 1
    float2* ml_out = p.ml + (static_cast<size_t>(b) * p.n_head + hq0) * p.n_chunk + chunk;
    if (k0 >= k_end) {
        if (tid < QB) ml_out[static_cast<size_t>(tid) * p.n_chunk] = make_float2(-INFINITY, 0.0f);
        return;
    }
    int Rmax = 16;
    for (int j = 0; j < NKV; ++j) Rmax = max(Rmax, p.rpad[kv0 + j]);
    const int ZS = kTile * (Rmax + kPad);  // one KV head's slot of a stage

    extern __shared__ __align__(16) unsigned char smem[];
    uint4* Ts = reinterpret_cast<uint4*>(smem);  // [stage][kTabU4] table fragments
    // Q4: raw tiles [stage][NKV], then one fp16 tile per KV head; else fp16/bf16 tiles [stage][NKV].
    const int RAW = static_cast<int>(q4_key_raw_bytes(Rmax));
    unsigned char* Rw = reinterpret_cast<unsigned char*>(Ts + kStagesT * kTabU4);
    T* Zs = reinterpret_cast<T*>(Q4 ? Rw + kStagesT * NKV * RAW : Rw);             // [stage or 1][NKV][kTile][R + kPad]
    __half* Ms = reinterpret_cast<__half*>(Zs + (Q4 ? 1 : kStagesT) * NKV * ZS);  // core matrices [kQbMax * RM / 8][HD / 8][8][8]
    float2* red = reinterpret_cast<float2*>(Ms + kQbMax * RM * HD);                // [8][kQbMax]

    const int n_tiles = (k_end - k0 + kTile - 1) / kTile;
    // Tile t: the table rows (contiguous, fragment order) and every KV head's latents (source rows
    // contiguous, R elements each; shared rows padded for conflict-free reads; rows past k_end zero).
    // Per KV head: log2 of the 16-byte pieces per row (every padded rank up to 128 but 48, 80, 96,
    // 112 is 16 times a power of two; those take a float division), so a piece's row is a shift.
    auto piece_row = [](int e, int per_row) {
        return (per_row & (per_row - 1)) == 0
                   ? e >> (__ffs(per_row) - 1)
                   : static_cast<int>((static_cast<float>(e) + 0.5f) / static_cast<float>(per_row));
    };
    // With at most 32 ranks (one 16-byte piece per thread and KV head) every piece's source offset,
    // shared-memory offset and row are fixed from tile to tile: computed once here.
    int zsrc[kQbMax], zdst[kQbMax], zrow[kQbMax], zstep[kQbMax];
    if constexpr (kZIter == 1 && !Q4) {
#pragma unroll
        for (int j = 0; j < kQbMax; ++j) {
            const int R = j < NKV ? p.rpad[kv0 + j] : 16, per_row = R / 8;
            const int row = piece_row(tid, per_row), col = tid - row * per_row;
            const bool have = j < NKV && tid < kTile * per_row;
            zsrc[j] = (j < NKV ? p.pm.rows * p.roff[kv0 + j] : 0) + tid * 8;  // in the page, at its row 0
            zdst[j] = have ? j * ZS + row * (R + kPad) + col * 8 : -1;
            zrow[j] = row;
            zstep[j] = R;
        }
    }
    const uint4* tab0 = tp.tab + static_cast<size_t>(k0 / 16) * KS * 32 + tid;
    auto load = [&](int t) {
        const uint4* tsrc = tab0 + static_cast<size_t>(t) * kTabU4;
        uint4* tdst = Ts + (t % kStagesT) * kTabU4 + tid;
#pragma unroll
        for (int k = 0; k < kTabU4 / kThreadsT; ++k) cp_async16(tdst + k * kThreadsT, tsrc + k * kThreadsT, true);
        T* dst0 = Zs + (t % kStagesT) * NKV * ZS;
        const int t0 = k0 + t * kTile;
        const TileAt at = tile_at(p.pm, b, t0);
        if constexpr (Q4) {
            for (int j = 0; j < NKV; ++j) {
                const int kvh = kv0 + j;
                load_q4_key_tile(Rw + ((t % kStagesT) * NKV + j) * RAW, q4_key_rows(p, at, kvh),
                                 q4_key_scales(p, at, kvh), p.rpad[kvh], 0, k_end - t0, tid, kThreadsT);
            }
        } else if constexpr (kZIter == 1) {
            // Every head's offsets from the tile's first row in its page are fixed.
            const T* page = static_cast<const T*>(p.k_lat) + at.page * p.page_elems;
#pragma unroll
            for (int j = 0; j < kQbMax; ++j) {
                if (zdst[j] >= 0) {
                    const bool ok = t0 + zrow[j] < k_end;
                    cp_async16(dst0 + zdst[j], ok ? page + zsrc[j] + at.row * zstep[j] : page, ok);
                }
            }
        } else {
            for (int j = 0; j < NKV; ++j) {
                const int R = p.rpad[kv0 + j], per_row = R / 8;
                const T* src = key_rows<T>(p, at, kv0 + j);
#pragma unroll
                for (int k = 0; k < kZIter; ++k) {
                    const int e = tid + k * kThreadsT;
                    if (e < kTile * per_row) {
                        const int row = piece_row(e, per_row), col = e - row * per_row;
                        const bool ok = t0 + row < k_end;
                        cp_async16(dst0 + j * ZS + row * (R + kPad) + col * 8, ok ? src + e * 8 : src, ok);
                    }
                }
            }
        }
    };
    load(0);
    cp_async_commit();

    // M of each query head, rank-major: M[k][i] = A0_i[k], M[k][NP + i] = B0_i[k] (scale and log2 e
    // in), head j's rows at j * RM, zero past its rank and for heads past QB. A thread owns one pair i
    // (its two dimensions and query values) and every (256 / NP)-th pair of ranks.
    for (int e = tid; e < kQbMax * RM * HD / 8; e += kThreadsT) reinterpret_cast<uint4*>(Ms)[e] = make_uint4(0, 0, 0, 0);
    __syncthreads();
    {
        const int i = tid % NP, kq = tid / NP;
        int a, bb;
        rope_pair_dims(i, p.rope_dims, tp.half_split, a, bb);
        for (int j = 0; j < QB; ++j) {
            const int hq = hq0 + j, kvh = hq / G, R = p.rpad[kvh];
            const T* ua_row = static_cast<const T*>(p.k_u) + static_cast<size_t>(HD) * p.roff[kvh] + a * R;
            const T* ub_row = ua_row + (bb - a) * R;
            const float* q = p.q + (static_cast<size_t>(b) * p.n_head + hq) * HD;
            const float qa = p.scale_log2 * q[a], qb = p.scale_log2 * q[bb];
            for (int k = 2 * kq; k < R; k += 2 * (kThreadsT / NP)) {
                const float2 ua = half2_bits_to_float2(*reinterpret_cast<const uint32_t*>(ua_row + k),
                                                       static_cast<T*>(nullptr));
                const float2 ub = half2_bits_to_float2(*reinterpret_cast<const uint32_t*>(ub_row + k),
                                                       static_cast<T*>(nullptr));
                const int n = j * RM + k;
                Ms[cm_off<HD>(n, i)] = __float2half_rn(qa * ua.x + qb * ub.x);
                Ms[cm_off<HD>(n + 1, i)] = __float2half_rn(qa * ua.y + qb * ub.y);
                Ms[cm_off<HD>(n, NP + i)] = __float2half_rn(qb * ua.x - qa * ub.x);
                Ms[cm_off<HD>(n + 1, NP + i)] = __float2half_rn(qb * ua.y - qa * ub.y);
            }
        }
    }
#if STARKV_WGMMA
    fence_proxy_async();  // M (generic-proxy stores) visible to wgmma after the barrier below
#endif

    const int rr = lane / 4, x = 2 * (lane % 4);
    const int R0 = slab * 16 + rr, R1 = R0 + 8;
    // ldmatrix.x4 lane addresses of the core-matrix layouts (matrix mi = lane / 8, its row lane % 8):
    // A (table): rows 8 (2 slab + mi % 2).., channels 8 (2 ks + mi / 2)..; B (M): rows (ranks)
    // 8 (2 np + mi / 2).., channels 8 (2 ks + mi % 2)..
    const int mi = lane / 8, r8 = lane % 8;
    const int a_off = (mi / 2) * 64 * 8 + (2 * slab + mi % 2) * 64 + r8 * 8;  // + ks * 2 * 64 * 8 halves
    const int b_lane = (mi / 2) * (HD / 8) * 64 + (mi % 2) * 64 + r8 * 8;     // + nb * (HD/8) * 64 + ks * 128
    // This warp's two heads, hoisted out of the tile loop (R = 0: no such head).
    int hR[2], hZ[2], hM[2];
    float* hS[2];
    float m[2], l[2];
#pragma unroll
    for (int jj = 0; jj < 2; ++jj) {
        const int j = 2 * hh + jj;
        const int kvh = j < QB ? (hq0 + j) / G : kv0;
        hR[jj] = j < QB ? p.rpad[kvh] : 0;
        hZ[jj] = (kvh - kv0) * ZS;
        hM[jj] = (j * RM / 8) * (HD / 8) * 64 + b_lane;
        hS[jj] = p.scores + (static_cast<size_t>(b) * p.n_head + hq0 + j) * p.keys_pad;
        m[jj] = -INFINITY;
        l[jj] = 0.0f;
    }

    for (int t = 0; t < n_tiles; ++t) {
        cp_async_wait<0>();
#if STARKV_WGMMA
        fence_proxy_async();  // the table tile (cp.async, generic proxy) visible to wgmma
#endif
        __syncthreads();  // tile t (and M) visible; the other stage no longer read
        if (t + 1 < n_tiles) load(t + 1);
        cp_async_commit();

        if constexpr (Q4) {
            for (int j = 0; j < NKV; ++j)
                dequant_q4_key_tile(reinterpret_cast<__half*>(Zs) + j * ZS, p.rpad[kv0 + j] + kPad,
                                    Rw + ((t % kStagesT) * NKV + j) * RAW, p.rpad[kv0 + j], tid, kThreadsT);
            __syncthreads();  // the fp16 tiles visible
        }
        const __half* Tt = reinterpret_cast<const __half*>(Ts + (t % kStagesT) * kTabU4);
#if STARKV_WGMMA
        // W of this warpgroup's two heads for the whole 64-key tile: 64 x 2 RM x HD, wgmma from shared
        // memory (table K-major: LBO = the channel-block stride, SBO = the row-block stride; M K-major:
        // LBO = 128 bytes, SBO = one rank block of HD channels).
        float wg[kWG ? RM : 1];
        if constexpr (kWG) {
            wg_fence();
#pragma unroll
            for (int ks = 0; ks < KS; ++ks) {
                const uint64_t da = wg_desc(Tt + ks * 2 * 64 * 8, 64 * 8 * 2, 128);
                const uint64_t db = wg_desc(Ms + (2 * hh * RM / 8) * (HD / 8) * 64 + ks * 128, 128, (HD / 8) * 128);
                wgmma_f16<2 * RM>(wg, da, db, ks > 0);
            }
            wg_commit();
            wg_wait0();
        }
#endif
        uint32_t af[kWG ? 1 : KS][4];
        if constexpr (!kWG) {
#pragma unroll
            for (int ks = 0; ks < KS; ++ks) ldsm_x4(af[ks], Tt + a_off + ks * 2 * 64 * 8);
        }
        const T* Zt = Zs + (Q4 ? 0 : t % kStagesT) * NKV * ZS;
        const int t0 = k0 + t * kTile;
        const bool v0 = t0 + R0 < k_end, v1 = t0 + R1 < k_end;
#pragma unroll
        for (int g0 = 0; g0 < 2; g0 += NH) {
            float w[NH][JPM][2][4];
#pragma unroll
            for (int h = 0; h < NH; ++h)
#pragma unroll
                for (int jp = 0; jp < JPM; ++jp)
#pragma unroll
                    for (int c = 0; c < 2; ++c)
#pragma unroll
                        for (int i = 0; i < 4; ++i) {
#if STARKV_WGMMA
                            // wgmma accumulators: 8-column tile nt = (g0 + h) RM / 8 + 2 jp + c, 4 values each,
                            // in the mma layout of this warp's 16 rows.
                            if constexpr (kWG) {
                                w[h][jp][c][i] = wg[((g0 + h) * (RM / 8) + 2 * jp + c) * 4 + i];
                                continue;
                            }
#endif
                            w[h][jp][c][i] = 0.0f;
                        }
#pragma unroll
            for (int ks = 0; ks < (kWG ? 0 : KS); ++ks) {
#pragma unroll
                for (int h = 0; h < NH; ++h) {
#pragma unroll
                    for (int jp = 0; jp < JPM; ++jp) {
                        if (16 * jp < hR[g0 + h]) {
                            uint32_t bf[4];
                            ldsm_x4(bf, Ms + hM[g0 + h] + 2 * jp * (HD / 8) * 64 + ks * 128);
                            mma<__half>(w[h][jp][0], af[ks], bf[0], bf[1]);
                            mma<__half>(w[h][jp][1], af[ks], bf[2], bf[3]);
                        }
                    }
                }
            }
#pragma unroll
            for (int h = 0; h < NH; ++h) {
                const int jj = g0 + h;
                if (hR[jj] == 0) continue;
                const T* Z = Zt + hZ[jj];
                const int RS = hR[jj] + kPad;
                float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
                for (int jp = 0; jp < JPM; ++jp) {
                    if (16 * jp < hR[jj]) {
#pragma unroll
                        for (int c2 = 0; c2 < 2; ++c2) {
                            const int col = 16 * jp + 8 * c2 + x;
                            const float2 z0 = half2_bits_to_float2(
                                *reinterpret_cast<const uint32_t*>(Z + R0 * RS + col), static_cast<T*>(nullptr));
                            const float2 z1 = half2_bits_to_float2(
                                *reinterpret_cast<const uint32_t*>(Z + R1 * RS + col), static_cast<T*>(nullptr));
                            s0 = fmaf(w[h][jp][c2][0], z0.x, fmaf(w[h][jp][c2][1], z0.y, s0));
                            s1 = fmaf(w[h][jp][c2][2], z1.x, fmaf(w[h][jp][c2][3], z1.y, s1));
                        }
                    }
                }
                s0 += __shfl_xor_sync(0xffffffffu, s0, 1);
                s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
                s1 += __shfl_xor_sync(0xffffffffu, s1, 1);
                s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
                if (lane % 4 == jj && v0) hS[jj][t0 + R0] = s0;
                if (lane % 4 == jj && v1) hS[jj][t0 + R1] = s1;
                // Online softmax, rescaled only when the running max grows.
                const float a0 = v0 ? s0 : -INFINITY, a1 = v1 ? s1 : -INFINITY;
                const float mx = fmaxf(a0, a1);
                if (mx > m[jj]) {  // also the first valid key (m = -inf: l is 0, 2^-inf = 0)
                    l[jj] *= fast_exp2(m[jj] - mx);
                    m[jj] = mx;
                }
                if (mx > -INFINITY) l[jj] += fast_exp2(a0 - m[jj]) + fast_exp2(a1 - m[jj]);
            }
        }
    }
    cp_async_wait<0>();

    // Every lane of a quad holds the same row statistics; merge the 8 row groups, then the 4 slabs.
#pragma unroll
    for (int jj = 0; jj < 2; ++jj) {
        if (hR[jj] > 0) {
            for (int off = 4; off < 32; off *= 2) {
                const float mo = __shfl_xor_sync(0xffffffffu, m[jj], off);
                const float lo = __shfl_xor_sync(0xffffffffu, l[jj], off);
                merge_ml(m[jj], l[jj], mo, lo);
            }
            if (lane == 0) red[warp * kQbMax + 2 * hh + jj] = make_float2(m[jj], l[jj]);
        }
    }
    __syncthreads();
    if (tid < QB) {
        const int h2 = tid / 2;
        float mm = -INFINITY, ll = 0.0f;
        for (int sl = 0; sl < 4; ++sl) {
            const float2 v = red[(h2 * 4 + sl) * kQbMax + tid];
            merge_ml(mm, ll, v.x, v.y);
        }
        ml_out[static_cast<size_t>(tid) * p.n_chunk] = make_float2(mm, ll);
    }
}

// ---- v11: keys rebuilt once per KV head, rotated with the angle table, scored on tensor cores ----
// (LatentScoresKernel::KeyTable; GQA, half-split RoPE over all 128 dimensions.) Per 16-key slab and
// 16-dimension step s: Y = Z U^T for dimensions 16 s.. and their rotation partners 64 + 16 s.. (tensor
// cores), the rotation with cos/sin from the table fragments, which sit in exactly the accumulator
// layout (table k-step s holds cos, s + 4 sin, of the pairs of those dimensions), and the rotated keys,
// repacked in registers as the A operand, times the group's queries (B operand, 8 heads) on the
// tensor cores. Per KV head and key: R x 128 + 128 x 8 multiply-adds on tensor cores and ~4 fp32
// operations per dimension, for all of the group's query heads at once.
constexpr int kStagesKT = 2;

__host__ __device__ inline size_t score_kt_smem_bytes(int R, size_t elem, bool q4 = false) {
    const size_t keys = q4 ? static_cast<size_t>(kStagesKT) * q4_key_raw_bytes(R) + kTile * (R + kPad) * sizeof(__half)
                           : static_cast<size_t>(kStagesKT) * kTile * (R + kPad) * elem;
    return static_cast<size_t>(kStagesKT) * kTile * 128 * sizeof(__half) + keys +
           static_cast<size_t>(128) * (R + kPad) * elem + 8 * (128 + kPad) * sizeof(__half) +
           4 * 8 * sizeof(float2);
}

template <typename T, int RJ, bool Q4>
__global__ void __launch_bounds__(kThreads, 3) latent_scores_kt_kernel(TableScoreParams tp) {
    constexpr int HD = 128, KS = HD / 16, kTabU4 = kTile / 16 * KS * 32;
    constexpr int R = RJ * 16, RS = R + kPad, QS = HD + kPad;
    constexpr int kZIter = kTile * R / 8 / kThreads;  // 16-byte pieces per thread and tile
    const ScoreParams& p = tp.sp;
    const int G = p.G;
    const int chunk = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
    const int n = min(p.n_keys[b], p.max_keys);
    const int k0 = chunk * p.chunk, k_end = min(n, k0 + p.chunk);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    float2* ml_out = p.ml + (static_cast<size_t>(b) * p.n_head + static_cast<size_t>(kvh) * G) * p.n_chunk + chunk;
    if (k0 >= k_end) {
        if (tid < G) ml_out[static_cast<size_t>(tid) * p.n_chunk] = make_float2(-INFINITY, 0.0f);
        return;
    }
    const int Rh = p.rpad[kvh];  // <= R; the ranks past Rh are zero in U and never loaded

    extern __shared__ __align__(16) unsigned char smem[];
    uint4* Ts = reinterpret_cast<uint4*>(smem);                  // [stage][kTabU4]
    const int RAW = static_cast<int>(q4_key_raw_bytes(R));       // Q4: raw tiles [stage], one fp16 tile
    unsigned char* Rw = reinterpret_cast<unsigned char*>(Ts + kStagesKT * kTabU4);
    T* Zs = reinterpret_cast<T*>(Q4 ? Rw + kStagesKT * RAW : Rw);  // [stage or 1][kTile][RS]
    T* Us = Zs + (Q4 ? 1 : kStagesKT) * kTile * RS;              // [HD][RS]
    __half* Qs = reinterpret_cast<__half*>(Us + HD * RS);        // [8][QS]
    float2* red = reinterpret_cast<float2*>(Qs + 8 * QS);        // [4][8]

    const uint4* tab0 = tp.tab + static_cast<size_t>(k0 / 16) * KS * 32 + tid;
    const int per_row = Rh / 8;
    const int n_tiles = (k_end - k0 + kTile - 1) / kTile;
    auto load = [&](int t) {
        const int t0 = k0 + t * kTile;
        const uint4* tsrc = tab0 + static_cast<size_t>(t) * kTabU4;
        uint4* tdst = Ts + (t % kStagesKT) * kTabU4 + tid;
#pragma unroll
        for (int k = 0; k < kTabU4 / kThreads; ++k) cp_async16(tdst + k * kThreads, tsrc + k * kThreads, true);
        const TileAt at = tile_at(p.pm, b, t0);
        if constexpr (Q4) {
            load_q4_key_tile(Rw + (t % kStagesKT) * RAW, q4_key_rows(p, at, kvh), q4_key_scales(p, at, kvh), Rh, 0,
                             k_end - t0, tid, kThreads);
            return;
        }
        T* dst = Zs + (t % kStagesKT) * kTile * RS;
        const T* src = key_rows<T>(p, at, kvh);
#pragma unroll
        for (int k = 0; k < kZIter; ++k) {
            const int e = tid + k * kThreads;
            if (e < kTile * per_row) {
                const int row = e / per_row, col = e - row * per_row;
                const bool ok = t0 + row < k_end;
                cp_async16(dst + row * RS + col * 8, ok ? src + e * 8 : src, ok);
            }
        }
    };
#pragma unroll
    for (int s = 0; s < kStagesKT - 1; ++s) {
        if (s < n_tiles) load(s);
        cp_async_commit();
    }
    // U_h (zero past its rank and in the padding) and the group's queries (scale and log2 e in).
    const T* usrc = static_cast<const T*>(p.k_u) + static_cast<size_t>(HD) * p.roff[kvh];
    for (int e = tid; e < HD * R; e += kThreads) {
        const int d = e / R, k = e % R;
        Us[d * RS + k] = k < Rh ? usrc[d * Rh + k] : from_float<T>(0.0f);
    }
    const float* qsrc = p.q + (static_cast<size_t>(b) * p.n_head + static_cast<size_t>(kvh) * G) * HD;
    for (int e = tid; e < 8 * HD; e += kThreads) {
        const int g = e / HD, d = e % HD;
        Qs[g * QS + d] = __float2half_rn(g < G ? p.scale_log2 * qsrc[g * HD + d] : 0.0f);
    }
    __syncthreads();
    // Query B fragments (k = dimension, n = head), all 8 k-steps: 16 registers for the whole block.
    uint32_t qf[KS][2];
#pragma unroll
    for (int kp = 0; kp < KS / 2; ++kp) {
        uint32_t r4[4];
        ldsm_x4(r4, Qs + (lane % 8) * QS + kp * 32 + (lane / 8) * 8);
        qf[2 * kp][0] = r4[0];
        qf[2 * kp][1] = r4[1];
        qf[2 * kp + 1][0] = r4[2];
        qf[2 * kp + 1][1] = r4[3];
    }
    const int g8 = lane / 4, c2 = 2 * (lane % 4);
    const int R0 = warp * 16 + g8;
    const int u_off = ((lane / 16) * 8 + lane % 8) * RS + ((lane / 8) % 2) * 8;  // B (U) fragment rows
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};                       // heads c2, c2 + 1
    float* sc_out = p.scores + (static_cast<size_t>(b) * p.n_head + static_cast<size_t>(kvh) * G) * p.keys_pad;

    for (int t = 0; t < n_tiles; ++t) {
        cp_async_wait<kStagesKT - 2>();
        __syncthreads();
        {
            const int nt = t + kStagesKT - 1;
            if (nt < n_tiles) load(nt);
            cp_async_commit();
        }
        if constexpr (Q4) {
            dequant_q4_key_tile(reinterpret_cast<__half*>(Zs), RS, Rw + (t % kStagesKT) * RAW, Rh, tid, kThreads);
            // Columns Rh..R of the fp16 tile are never read (the rank steps past Rh are skipped).
            __syncthreads();
        }
        const T* Z = Zs + (Q4 ? 0 : t % kStagesKT) * kTile * RS;
        const uint4* Tt = Ts + (t % kStagesKT) * kTabU4 + warp * KS * 32 + lane;
        uint32_t zf[RJ][4];
#pragma unroll
        for (int jr = 0; jr < RJ; ++jr) ldsm_x4(zf[jr], Z + (warp * 16 + lane % 16) * RS + jr * 16 + (lane / 16) * 8);
        float sa[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};  // two chains, added at the end
#pragma unroll
        for (int s = 0; s < KS / 2; ++s) {
            // y[0..1]: dimensions 16 s + (0..7, 8..15); y[2..3]: their partners 64 + 16 s + ...
            float y[4][4];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) y[i][e] = 0.0f;
#pragma unroll
            for (int jr = 0; jr < RJ; ++jr) {
                if (jr * 16 < Rh) {
                    uint32_t lo[4], hi[4];
                    ldsm_x4(lo, Us + (16 * s) * RS + u_off + jr * 16);
                    ldsm_x4(hi, Us + (64 + 16 * s) * RS + u_off + jr * 16);
                    mma<T>(y[0], zf[jr], lo[0], lo[1]);
                    mma<T>(y[1], zf[jr], lo[2], lo[3]);
                    mma<T>(y[2], zf[jr], hi[0], hi[1]);
                    mma<T>(y[3], zf[jr], hi[2], hi[3]);
                }
            }
            const uint4 cv = Tt[s * 32], sv = Tt[(s + KS / 2) * 32];
            const uint32_t cw[4] = {cv.x, cv.y, cv.z, cv.w}, sw[4] = {sv.x, sv.y, sv.z, sv.w};
            uint32_t alo[4], ahi[4];
#pragma unroll
            for (int j = 0; j < 2; ++j) {      // n-tile 2s + j
#pragma unroll
                for (int rw = 0; rw < 2; ++rw) {  // rows g8 (e = 0, 1) and g8 + 8 (e = 2, 3)
                    const float2 c = __half22float2(*reinterpret_cast<const __half2*>(&cw[2 * j + rw]));
                    const float2 sn = __half22float2(*reinterpret_cast<const __half2*>(&sw[2 * j + rw]));
                    const float y0 = y[j][2 * rw], y1 = y[j][2 * rw + 1];
                    const float z0 = y[j + 2][2 * rw], z1 = y[j + 2][2 * rw + 1];
                    alo[2 * j + rw] = pack_half2(c.x * y0 - sn.x * z0, c.y * y1 - sn.y * z1);
                    ahi[2 * j + rw] = pack_half2(sn.x * y0 + c.x * z0, sn.y * y1 + c.y * z1);
                }
            }
            // A fragment order: (g, k 0-7), (g + 8, k 0-7), (g, k 8-15), (g + 8, k 8-15).
            const uint32_t a_lo[4] = {alo[0], alo[1], alo[2], alo[3]};
            const uint32_t a_hi[4] = {ahi[0], ahi[1], ahi[2], ahi[3]};
            mma<__half>(sa[0], a_lo, qf[s][0], qf[s][1]);
            mma<__half>(sa[1], a_hi, qf[s + KS / 2][0], qf[s + KS / 2][1]);
        }
        const int t0 = k0 + t * kTile;
        const bool v0 = t0 + R0 < k_end, v1 = t0 + R0 + 8 < k_end;
        // sa: (key R0, heads c2, c2 + 1), (key R0 + 8, heads c2, c2 + 1).
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            const int g = c2 + hh;
            const float s0 = sa[0][hh] + sa[1][hh], s1 = sa[0][2 + hh] + sa[1][2 + hh];
            if (g < G) {
                if (v0) sc_out[static_cast<size_t>(g) * p.keys_pad + t0 + R0] = s0;
                if (v1) sc_out[static_cast<size_t>(g) * p.keys_pad + t0 + R0 + 8] = s1;
                const float a0 = v0 ? s0 : -INFINITY, a1 = v1 ? s1 : -INFINITY;
                const float mx = fmaxf(a0, a1);
                if (mx > m[hh]) {
                    l[hh] *= fast_exp2(m[hh] - mx);
                    m[hh] = mx;
                }
                if (mx > -INFINITY) l[hh] += fast_exp2(a0 - m[hh]) + fast_exp2(a1 - m[hh]);
            }
        }
    }
    cp_async_wait<0>();
    // Merge the 8 row groups (lanes with the same lane % 4), then the 4 warps.
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
        for (int off = 4; off < 32; off *= 2) {
            const float mo = __shfl_xor_sync(0xffffffffu, m[hh], off);
            const float lo = __shfl_xor_sync(0xffffffffu, l[hh], off);
            merge_ml(m[hh], l[hh], mo, lo);
        }
        if (lane < 4) red[warp * 8 + c2 + hh] = make_float2(m[hh], l[hh]);
    }
    __syncthreads();
    if (tid < G) {
        float mm = -INFINITY, ll = 0.0f;
        for (int w = 0; w < 4; ++w) merge_ml(mm, ll, red[w * 8 + tid].x, red[w * 8 + tid].y);
        ml_out[static_cast<size_t>(tid) * p.n_chunk] = make_float2(mm, ll);
    }
}

// ---- pass 2: probability-weighted value latents ----

struct ValueParams {
    const float* scores;
    const float2* ml;
    const void* v_lat;    // Q4: the codes
    const void* v_scale;  // Q4: (scale, min) per token and 128 channels
    const int* n_keys;
    float* part;  // [n_seq][n_chunk2][n_head][v_rank]
    int n_head, v_rank, max_keys, keys_pad, chunk, n_chunk, n_chunk1;
    PageMap pm;
};

constexpr int kPCols = kTile + kPad;

// Q4: a raw value tile (codes of 128 channels, one (scale, min) per row) per stage; a quarter of the
// bytes of an fp16 tile, so twice the stages keep about as many bytes in flight.
constexpr int kQ4ValueRaw = kTile * (kSlice / 2 + 4);
constexpr int kStagesVQ = 6;

__host__ __device__ inline size_t value_smem_bytes(size_t elem, int hp, bool q4 = false) {
    const size_t tiles = q4 ? static_cast<size_t>(kStagesVQ) * kQ4ValueRaw + kTile * (kSlice + kPad) * elem
                            : static_cast<size_t>(kStagesV) * kTile * (kSlice + kPad) * elem;
    return tiles + 2 * static_cast<size_t>(hp) * kPCols * elem +
           2 * kLatMaxHeads * sizeof(float);
}

// Block: (slice of the value rank, chunk of keys, sequence). Each tile:
// P[heads][keys] = 2^(s - M) / L (the global softmax, from pass 1's chunk
// partials), then acc[heads][slice] += P x Vlat[keys][slice]. The scores of
// tile t+2 are loaded into registers while tile t is multiplied. MT: 16-row
// tiles of heads (P rows, padded with zeros).
template <typename T, int MT, bool Q4>
__global__ void __launch_bounds__(kThreads, MT <= 2 ? 3 : 2) latent_values_kernel(ValueParams p) {
    constexpr int HP = MT * 16;
    constexpr int kPRegs = HP * kTile / kThreads;
    constexpr int NSV = Q4 ? kStagesVQ : kStagesV;  // tiles in flight
    const int slice = blockIdx.x, chunk = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int n = min(p.n_keys[b], p.max_keys);
    const int k0 = chunk * p.chunk, k_end = min(n, k0 + p.chunk);
    const int n_tiles = k_end > k0 ? (k_end - k0 + kTile - 1) / kTile : 0;

    extern __shared__ __align__(16) unsigned char smem[];
    unsigned char* Rv = smem;  // Q4: raw tiles [stage]
    T* Vs = reinterpret_cast<T*>(Q4 ? smem + NSV * kQ4ValueRaw : smem);  // [stage, or 1 for Q4][kTile][kSlice + kPad]
    T* Ps = Vs + (Q4 ? 1 : NSV) * kTile * (kSlice + kPad);              // [2][HP][kPCols]
    float* Ms = reinterpret_cast<float*>(Ps + 2 * HP * kPCols);
    float* iL = Ms + kLatMaxHeads;

    const int c0 = slice * kSlice;
    // Tile at t0 into stage st (Q4: 4 x 16 bytes of codes and a 4-byte (scale, min) per row).
    auto load_v = [&](int st, int t0) {
        const TileAt at = tile_at(p.pm, b, t0);
        const size_t row0 = at.page * p.pm.rows + at.row;  // cache row of t0
        if constexpr (Q4) {
            const unsigned char* codes = static_cast<const unsigned char*>(p.v_lat) + row0 * (p.v_rank / 2);
            const uint32_t* sc = static_cast<const uint32_t*>(p.v_scale) + row0 * (p.v_rank / kSlice);
            unsigned char* raw = Rv + st * kQ4ValueRaw;
            for (int e = tid; e < kTile * 4; e += kThreads) {
                const int row = e / 4, c = e % 4;
                const bool ok = t0 + row < k_end;
                cp_async16(raw + e * 16,
                           ok ? codes + static_cast<size_t>(row) * (p.v_rank / 2) + c0 / 2 + c * 16 : codes, ok);
            }
            uint32_t* sdst = reinterpret_cast<uint32_t*>(raw + kTile * kSlice / 2);
            for (int e = tid; e < kTile; e += kThreads) {
                const bool ok = t0 + e < k_end;
                cp_async_small<4>(sdst + e, ok ? sc + static_cast<size_t>(e) * (p.v_rank / kSlice) + slice : sc, ok);
            }
        } else {
            load_value_tile(Vs + st * kTile * (kSlice + kPad), static_cast<const T*>(p.v_lat) + row0 * p.v_rank,
                            p.v_rank, c0, 0, k_end - t0);
        }
    };
#pragma unroll
    for (int s = 0; s < NSV - 1; ++s) {
        if (s < n_tiles) load_v(s, k0 + s * kTile);
        cp_async_commit();
    }
    // The softmax of each head over the whole context, from the chunk partials.
    if (tid < p.n_head) {
        const float2* src = p.ml + (static_cast<size_t>(b) * p.n_head + tid) * p.n_chunk1;
        float mm = -INFINITY, ll = 0.0f;
        for (int c = 0; c < p.n_chunk1; ++c) merge_ml(mm, ll, src[c].x, src[c].y);
        Ms[tid] = mm;
        iL[tid] = ll > 0.0f ? 1.0f / ll : 0.0f;
    }
    __syncthreads();

    const float* ssrc = p.scores + static_cast<size_t>(b) * p.n_head * p.keys_pad;
    float sreg[kPRegs];
    auto fetch = [&](int t) {  // scores of tile t into registers
        const int t0 = k0 + t * kTile;
#pragma unroll
        for (int k = 0; k < kPRegs; ++k) {
            const int e = tid + k * kThreads, head = e / kTile, key = t0 + e % kTile;
            sreg[k] = (head < p.n_head && t < n_tiles && key < k_end)
                          ? ssrc[static_cast<size_t>(head) * p.keys_pad + key]
                          : -INFINITY;
        }
    };
    auto store_p = [&](int buf) {  // P of the fetched tile into Ps[buf]
#pragma unroll
        for (int k = 0; k < kPRegs; ++k) {
            const int e = tid + k * kThreads, head = e / kTile, key = e % kTile;
            const float v = sreg[k] == -INFINITY ? 0.0f : exp2f(sreg[k] - Ms[head]) * iL[head];
            Ps[(buf * HP + head) * kPCols + key] = from_float<T>(v);
        }
    };
    if (n_tiles > 0) {
        fetch(0);
        store_p(0);
        fetch(1);
    }

    float acc[MT][4][4];
#pragma unroll
    for (int a = 0; a < MT; ++a)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[a][j][i] = 0.0f;

    for (int t = 0; t < n_tiles; ++t) {
        cp_async_wait<NSV - 2>();
        __syncthreads();  // V tile t and Ps[t & 1] visible; tile t-1 no longer read
        {
            const int nt = t + NSV - 1;
            if (nt < n_tiles) load_v(nt % NSV, k0 + nt * kTile);
            cp_async_commit();
        }
        if (t + 1 < n_tiles) {
            store_p((t + 1) & 1);
            fetch(t + 2);
        }
        if constexpr (Q4) {  // the raw tile -> the fp16 tile (rows past k_end: zero codes and scales -> 0)
            const unsigned char* raw = Rv + (t % NSV) * kQ4ValueRaw;
            const uint32_t* sc = reinterpret_cast<const uint32_t*>(raw + kTile * kSlice / 2);
            for (int e = tid; e < kTile * kSlice / 8; e += kThreads) {
                const int row = e / (kSlice / 8), c = e % (kSlice / 8);
                const uint32_t codes = *reinterpret_cast<const uint32_t*>(raw + row * (kSlice / 2) + c * 4);
                *reinterpret_cast<uint4*>(Vs + row * (kSlice + kPad) + c * 8) = dequant8(codes, sc[row]);
            }
            __syncthreads();
        }
        const T* V = Vs + (Q4 ? 0 : t % NSV) * kTile * (kSlice + kPad);
        const T* P = Ps + (t & 1) * HP * kPCols;
        pv_tile_mma<T, MT>(acc, P, kPCols, V, kSlice + kPad, warp, lane);
    }
    cp_async_wait<0>();

    float* dst = p.part + (static_cast<size_t>(b) * p.n_chunk + chunk) * p.n_head * p.v_rank + c0;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int col = warp * 32 + j * 8 + 2 * (lane % 4);
            const int h0 = mt * 16 + lane / 4, h1 = h0 + 8;
            if (h0 < p.n_head)
                *reinterpret_cast<float2*>(dst + static_cast<size_t>(h0) * p.v_rank + col) =
                    make_float2(acc[mt][j][0], acc[mt][j][1]);
            if (h1 < p.n_head)
                *reinterpret_cast<float2*>(dst + static_cast<size_t>(h1) * p.v_rank + col) =
                    make_float2(acc[mt][j][2], acc[mt][j][3]);
        }
    }
}

// ---- 3: sum the chunks; acc[kvh][b * G + g][r] ----

__global__ void latent_reduce_kernel(const float* part, float* acc, int n_seq, int n_head, int G, int v_rank,
                                     int n_chunk) {
    const size_t total = static_cast<size_t>(n_seq) * n_head * (v_rank / 4);
    for (size_t e = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; e < total;
         e += static_cast<size_t>(gridDim.x) * blockDim.x) {
        const int r4 = static_cast<int>(e % (v_rank / 4));
        const int hq = static_cast<int>((e / (v_rank / 4)) % n_head);
        const int b = static_cast<int>(e / (static_cast<size_t>(v_rank / 4) * n_head));
        float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int c = 0; c < n_chunk; ++c) {
            const float4 v = *reinterpret_cast<const float4*>(
                part + ((static_cast<size_t>(b) * n_chunk + c) * n_head + hq) * v_rank + 4 * r4);
            s.x += v.x;
            s.y += v.y;
            s.z += v.z;
            s.w += v.w;
        }
        const int kvh = hq / G, g = hq % G;
        *reinterpret_cast<float4*>(acc + ((static_cast<size_t>(kvh) * n_seq + b) * G + g) * v_rank + 4 * r4) = s;
    }
}

// ---- 4: o[b][kvh*G+g][d] = U_v[kvh*hd + d] . acc[kvh][b*G+g] ----
// Block: (KV head, 16 rows of U_v); warp w holds rows 2w, 2w+1 in registers
// (lane: columns 128k + 4 lane ..), the batch's acc rows staged in shared memory.

constexpr int kExpandRows = 16;
constexpr int kMaxVRank = 2048;

__device__ inline float2 to_float2(uint32_t v, __nv_bfloat16*) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v));
}
__device__ inline float2 to_float2(uint32_t v, __half*) { return __half22float2(*reinterpret_cast<const __half2*>(&v)); }

// NK: v_rank / 128 rounded up to a power of two (the U rows held in registers); blockIdx.z: a slice
// of at most nc of the N = n_seq * G rows of acc (one shared-memory pass per block, slices in parallel).
template <typename T, int NK>
__global__ void __launch_bounds__(256) latent_expand_kernel(const T* vu, const float* acc, float* out, int n_seq,
                                                            int n_head, int G, int hd, int v_rank, int nc) {
    extern __shared__ __align__(16) float As[];  // [nc][v_rank]
    const int kvh = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int d0 = blockIdx.y * kExpandRows + warp * 2;
    const int N = n_seq * G, nk = v_rank / 128;
    uint2 u[2][NK];
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int k = 0; k < NK; ++k)
            u[r][k] = (k < nk && d0 + r < hd) ? *reinterpret_cast<const uint2*>(
                                                     vu + (static_cast<size_t>(kvh) * hd + d0 + r) * v_rank + 128 * k +
                                                     4 * lane)
                                               : make_uint2(0u, 0u);
    const float* a = acc + static_cast<size_t>(kvh) * N * v_rank;
    const int n0 = blockIdx.z * nc, cnt = min(nc, N - n0);
    if (cnt <= 0) return;
    for (int e = threadIdx.x; e < cnt * v_rank / 4; e += blockDim.x)
        reinterpret_cast<float4*>(As)[e] = reinterpret_cast<const float4*>(a + static_cast<size_t>(n0) * v_rank)[e];
    __syncthreads();
    for (int nn = 0; nn < cnt; ++nn) {
        float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
        for (int k = 0; k < NK; ++k) {
            if (k < nk) {
                const float4 av = *reinterpret_cast<const float4*>(As + nn * v_rank + 128 * k + 4 * lane);
                const float2 u00 = to_float2(u[0][k].x, static_cast<T*>(nullptr)),
                             u01 = to_float2(u[0][k].y, static_cast<T*>(nullptr));
                const float2 u10 = to_float2(u[1][k].x, static_cast<T*>(nullptr)),
                             u11 = to_float2(u[1][k].y, static_cast<T*>(nullptr));
                s0 += u00.x * av.x + u00.y * av.y + u01.x * av.z + u01.y * av.w;
                s1 += u10.x * av.x + u10.y * av.y + u11.x * av.z + u11.y * av.w;
            }
        }
        for (int off = 16; off > 0; off >>= 1) {
            s0 += __shfl_xor_sync(0xffffffffu, s0, off);
            s1 += __shfl_xor_sync(0xffffffffu, s1, off);
        }
        if (lane == 0) {
            const int n = n0 + nn, b = n / G, g = n % G;
            float* o = out + (static_cast<size_t>(b) * n_head + kvh * G + g) * hd;
            if (d0 < hd) o[d0] = s0;
            if (d0 + 1 < hd) o[d0 + 1] = s1;
        }
    }
}

// ---- host side ----

struct Plan {
    int G = 0, HP = 0, chunk1 = 0, n_chunk1 = 0, chunk2 = 0, n_chunk2 = 0, n_slice = 0, keys_pad = 0;
    int max_r = 16;
    LatentScoresKernel kernel = LatentScoresKernel::KeyRotation;  // resolved: never Auto
    int QB = 1, NKV = 1;                                          // RopeTable: query / KV heads per block
    long long page_elems = 0;  // key-latent elements per page (every KV head)
    int page_rows = 0;         // positions per page (ctx_cap without a page table)
    int roff[kLatMaxKvHeads] = {};
    size_t off_ml = 0, off_part = 0, off_acc = 0, off_tab = 0, total = 0;
};

// The folded-rotation scores kernel while its shared memory (M0 and M(p0) per query head) leaves room
// for 2 blocks per SM; else the key-side rotation kernel.
constexpr size_t kScoreWMaxSmem = 112 * 1024;

// RopeTable: the most query heads per block (4, 3, 2, 1) that keep whole groups or stay inside one,
// divide n_head, and leave room for 2 blocks per SM. false: none fits.
bool pick_table_heads(const LatentAttnShape& s, int G, int max_r, size_t elem, int* QB, int* NKV) {
    for (int qb = kQbMax; qb >= 1; --qb) {
        if (s.n_head % qb != 0 || (qb % G != 0 && G % qb != 0)) continue;
        const int nkv = qb >= G ? qb / G : 1;
        if (score_t_smem_bytes(s.head_dim, max_r, nkv, elem) > kScoreWMaxSmem) continue;
        *QB = qb;
        *NKV = nkv;
        return true;
    }
    return false;
}

size_t align256(size_t x) { return (x + 255) / 256 * 256; }
int ceil_div(long long a, long long b) { return static_cast<int>((a + b - 1) / b); }

void lay_out(const LatentAttnShape& s, Plan* pl);

bool make_plan(const LatentAttnShape& s, Plan* pl) {
    if (s.n_seq <= 0 || s.n_kv <= 0 || s.n_kv > kLatMaxKvHeads || s.n_head <= 0 || s.n_head > kLatMaxHeads ||
        s.n_head % s.n_kv != 0)
        return false;
    pl->G = s.n_head / s.n_kv;
    if (pl->G > kLatMaxGroup) return false;
    if (s.head_dim != 64 && s.head_dim != 128) return false;
    if (s.rope_dims < 0 || s.rope_dims > s.head_dim || s.rope_dims % 16 != 0) return false;
    if (s.v_rank <= 0 || s.v_rank % kSlice != 0 || s.v_rank > kMaxVRank) return false;
    if (s.max_keys < 0) return false;
    if (s.page_rows > 0) {  // paged: whole tiles per page, enough pages per sequence
        if (s.page_rows % kTile != 0 || s.pages_per_seq <= 0 ||
            static_cast<long long>(s.pages_per_seq) * s.page_rows < s.max_keys)
            return false;
        pl->page_rows = s.page_rows;
    } else {
        if (s.ctx_cap < s.max_keys || s.ctx_cap <= 0) return false;
        pl->page_rows = s.ctx_cap;
    }
    if (s.format != LatentFormat::F16 && s.format != LatentFormat::BF16 && s.format != LatentFormat::Q4) return false;
    long long sum = 0;
    for (int h = 0; h < s.n_kv; ++h) {
        if (s.k_rank[h] <= 0 || s.k_rank[h] > kLatMaxKeyRank) return false;
        pl->roff[h] = static_cast<int>(sum);
        sum += latent_rank_pad(s.k_rank[h]);
    }
    pl->page_elems = sum * pl->page_rows;
    for (int h = 0; h < s.n_kv; ++h) pl->max_r = std::max(pl->max_r, latent_rank_pad(s.k_rank[h]));
    // Measured (H100, docs/perf/attention.md): the fold-table kernel wins for MHA at 4K-32K, the
    // key-table kernel for GQA.
    const size_t elem = 2;
    // (The fold-table kernel keeps a sequence's latent offsets in 32-bit integers.)
    const bool table_ok = pl->page_elems < (1LL << 31) && pick_table_heads(s, pl->G, pl->max_r, elem, &pl->QB, &pl->NKV);
    const bool key_table_ok = s.head_dim == 128 && s.rope_half_split && s.rope_dims == 128 && pl->max_r <= 64;
    const bool fold_ok = score_w_smem_bytes(s.head_dim, pl->max_r, pl->G, elem) <= kScoreWMaxSmem;
    switch (s.scores_kernel) {
        case LatentScoresKernel::SmallBatch:  // a shape the single pass does not take
        case LatentScoresKernel::Auto:
            pl->kernel = key_table_ok && pl->G > 1 ? LatentScoresKernel::KeyTable
                         : table_ok                ? LatentScoresKernel::RopeTable
                                                   : LatentScoresKernel::KeyRotation;
            break;
        case LatentScoresKernel::RopeTable:
            pl->kernel = table_ok ? LatentScoresKernel::RopeTable : LatentScoresKernel::KeyRotation;
            break;
        case LatentScoresKernel::KeyTable:
            pl->kernel = key_table_ok ? LatentScoresKernel::KeyTable : LatentScoresKernel::KeyRotation;
            break;
        case LatentScoresKernel::QueryFold:
            pl->kernel = fold_ok ? LatentScoresKernel::QueryFold : LatentScoresKernel::KeyRotation;
            break;
        case LatentScoresKernel::KeyRotation: pl->kernel = LatentScoresKernel::KeyRotation; break;
    }
    const int score_blocks_per_chunk =
        pl->kernel == LatentScoresKernel::RopeTable ? s.n_head / pl->QB : s.n_kv;
    int dev = 0, sms = 132;
    if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    const long long target = 16LL * sms;  // blocks per pass: enough waves that the tail is small
    const int keys = s.max_keys > 0 ? s.max_keys : 1;
    const int max_chunks = ceil_div(keys, kTile);
    auto split = [&](long long pairs, int cap, int* chunk, int* n_chunk, long long want = 0) {
        const long long blocks = want > 0 ? want : target;
        int c = static_cast<int>(std::min<long long>(std::max<long long>(ceil_div(blocks, pairs), 1), cap));
        c = std::min(c, max_chunks);
        *chunk = ceil_div(ceil_div(keys, c), kTile) * kTile;
        *n_chunk = ceil_div(keys, *chunk);
    };
    // The table kernel builds M per block: fewer, longer chunks (about 4 waves of 2 blocks per SM).
    split(static_cast<long long>(s.n_seq) * score_blocks_per_chunk, max_chunks, &pl->chunk1, &pl->n_chunk1,
          pl->kernel == LatentScoresKernel::RopeTable ? 8LL * sms : 0);
    pl->n_slice = s.v_rank / kSlice;
    // Each value chunk writes n_head * v_rank fp32 partials; keep them a few % of the latents read,
    // but give a small batch at least two blocks per SM (at batch 1 the pass is latency-bound).
    const long long value_pairs = static_cast<long long>(s.n_seq) * pl->n_slice;
    split(value_pairs, std::max({1, keys / (24 * s.n_head), ceil_div(2LL * sms, value_pairs)}), &pl->chunk2,
          &pl->n_chunk2);
    pl->HP = (s.n_head + 15) / 16 * 16;
    pl->keys_pad = ceil_div(keys, kTile) * kTile;
    const bool uses_table = pl->kernel == LatentScoresKernel::RopeTable || pl->kernel == LatentScoresKernel::KeyTable;
    if (s.format == LatentFormat::Q4 && !uses_table) return false;  // Q4: the table kernels only
    lay_out(s, pl);
    return true;
}

// The workspace's parts for the plan's chunk counts.
void lay_out(const LatentAttnShape& s, Plan* pl) {
    const size_t scores = static_cast<size_t>(s.n_seq) * s.n_head * pl->keys_pad * sizeof(float);
    pl->off_ml = align256(scores);
    pl->off_part = pl->off_ml + align256(static_cast<size_t>(s.n_seq) * s.n_head * pl->n_chunk1 * sizeof(float2));
    pl->off_acc =
        pl->off_part + align256(static_cast<size_t>(s.n_seq) * pl->n_chunk2 * s.n_head * s.v_rank * sizeof(float));
    pl->off_tab = pl->off_acc + align256(static_cast<size_t>(s.n_seq) * s.n_head * s.v_rank * sizeof(float));
    const bool uses_table = pl->kernel == LatentScoresKernel::RopeTable || pl->kernel == LatentScoresKernel::KeyTable;
    const size_t tab = uses_table ? static_cast<size_t>(pl->keys_pad) * s.head_dim * sizeof(__half) : 0;
    pl->total = pl->off_tab + align256(tab);
}

template <typename T, int HD, bool HALF, int GM>
cudaError_t launch_scores_g(const ScoreParams& p, dim3 grid, int max_r, cudaStream_t st) {
    const size_t smem = score_smem_bytes(HD, HALF, max_r, p.G, sizeof(T));
    const cudaError_t e =
        cudaFuncSetAttribute(latent_scores_kernel<T, HD, HALF, GM>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem));
    if (e != cudaSuccess) return e;
    latent_scores_kernel<T, HD, HALF, GM><<<grid, kThreads, smem, st>>>(p);
    return cudaGetLastError();
}

template <typename T, int HD, bool HALF>
cudaError_t launch_scores(const ScoreParams& p, dim3 grid, int max_r, cudaStream_t st) {
    if (p.G == 1) return launch_scores_g<T, HD, HALF, 1>(p, grid, max_r, st);
    if (p.G == 2) return launch_scores_g<T, HD, HALF, 2>(p, grid, max_r, st);
    if (p.G <= 4) return launch_scores_g<T, HD, HALF, 4>(p, grid, max_r, st);
    return launch_scores_g<T, HD, HALF, 8>(p, grid, max_r, st);
}

template <typename T, int HD, int GM>
cudaError_t launch_scores_w_g(const ScoreParams& p, bool half, dim3 grid, int max_r, cudaStream_t st) {
    const bool two_buf = score_w_smem_bytes(HD, max_r, p.G, sizeof(T), 2) <= kScoreWMaxSmem;
    const size_t smem = score_w_smem_bytes(HD, max_r, p.G, sizeof(T), two_buf ? 2 : 1);
    const cudaError_t e = cudaFuncSetAttribute(latent_scores_w_kernel<T, HD, GM>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
    latent_scores_w_kernel<T, HD, GM><<<grid, kThreads, smem, st>>>(p, half, two_buf);
    return cudaGetLastError();
}

template <typename T, int HD>
cudaError_t launch_scores_w(const ScoreParams& p, bool half, dim3 grid, int max_r, cudaStream_t st) {
    if (p.G == 1) return launch_scores_w_g<T, HD, 1>(p, half, grid, max_r, st);
    if (p.G == 2) return launch_scores_w_g<T, HD, 2>(p, half, grid, max_r, st);
    if (p.G <= 4) return launch_scores_w_g<T, HD, 4>(p, half, grid, max_r, st);
    return launch_scores_w_g<T, HD, 8>(p, half, grid, max_r, st);
}

// Grid of a table build: one thread per 16-byte entry (keys_pad x hd halves), at most 8192 blocks.
int table_blocks(int keys_pad, int hd) {
    const long long entries = static_cast<long long>(keys_pad) * hd / 8;
    return static_cast<int>(std::min<long long>((entries + 255) / 256, 8192));
}

template <typename T, int HD, bool Q4>
cudaError_t launch_scores_t(const TableScoreParams& tp, const Plan& pl, const double* inv_freq, int n_seq,
                            cudaStream_t st) {
    latent_rope_table_cm_kernel<HD><<<table_blocks(pl.keys_pad, HD), 256, 0, st>>>(const_cast<uint4*>(tp.tab), inv_freq,
                                                              tp.sp.rope_dims / 2, pl.keys_pad / kTile);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    const size_t smem = score_t_smem_bytes(HD, pl.max_r, tp.NKV, sizeof(T), Q4);
    const dim3 grid(pl.n_chunk1, tp.sp.n_head / tp.QB, n_seq);
    auto go = [&](auto kernel) {
        const cudaError_t r =
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
        if (r != cudaSuccess) return r;
        kernel<<<grid, kThreadsT, smem, st>>>(tp);
        return cudaGetLastError();
    };
    if (pl.max_r <= 16) return go(latent_scores_t_kernel<T, HD, 1, Q4>);
    if (pl.max_r <= 32) return go(latent_scores_t_kernel<T, HD, 2, Q4>);
    if (pl.max_r <= 64) return go(latent_scores_t_kernel<T, HD, 4, Q4>);
    return go(latent_scores_t_kernel<T, HD, 8, Q4>);
}

template <typename T, bool Q4>
cudaError_t launch_scores_kt(const TableScoreParams& tp, const Plan& pl, const double* inv_freq, int n_seq, int n_kv,
                             cudaStream_t st) {
    latent_rope_table_kernel<128><<<table_blocks(pl.keys_pad, 128), 256, 0, st>>>(const_cast<uint4*>(tp.tab),
                                                                                  inv_freq, 64, pl.keys_pad / 16);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    const int R = pl.max_r <= 16 ? 16 : pl.max_r <= 32 ? 32 : 64;
    const size_t smem = score_kt_smem_bytes(R, sizeof(T), Q4);
    const dim3 grid(pl.n_chunk1, n_kv, n_seq);
    auto go = [&](auto kernel) {
        const cudaError_t r =
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
        if (r != cudaSuccess) return r;
        kernel<<<grid, kThreads, smem, st>>>(tp);
        return cudaGetLastError();
    };
    if (R == 16) return go(latent_scores_kt_kernel<T, 1, Q4>);
    if (R == 32) return go(latent_scores_kt_kernel<T, 2, Q4>);
    return go(latent_scores_kt_kernel<T, 4, Q4>);
}

template <typename T, int MT, bool Q4>
cudaError_t launch_values(const ValueParams& p, dim3 grid, cudaStream_t st) {
    const size_t smem = value_smem_bytes(sizeof(T), MT * 16, Q4);
    const cudaError_t e = cudaFuncSetAttribute(latent_values_kernel<T, MT, Q4>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
    latent_values_kernel<T, MT, Q4><<<grid, kThreads, smem, st>>>(p);
    return cudaGetLastError();
}

template <typename T, bool Q4>
cudaError_t run_all(const LatentAttnShape& s, const Plan& pl, const LatentAttnArgs& a, unsigned char* ws,
                    cudaStream_t st, cudaEvent_t e1, cudaEvent_t e2, cudaEvent_t e3) {
    float* scores = reinterpret_cast<float*>(ws);
    float2* ml = reinterpret_cast<float2*>(ws + pl.off_ml);
    float* part = reinterpret_cast<float*>(ws + pl.off_part);
    float* acc = reinterpret_cast<float*>(ws + pl.off_acc);

    ScoreParams sp{};
    sp.q = a.q;
    sp.k_lat = a.k_lat;
    sp.k_scale = a.k_scale;
    sp.k_u = a.k_u;
    sp.n_keys = a.n_keys;
    sp.inv_freq = a.inv_freq;
    sp.scores = scores;
    sp.ml = ml;
    sp.n_head = s.n_head;
    sp.n_kv = s.n_kv;
    sp.G = pl.G;
    sp.rope_dims = s.rope_dims;
    sp.pm = PageMap{a.page_table, pl.page_rows, s.pages_per_seq};
    sp.max_keys = s.max_keys;
    sp.keys_pad = pl.keys_pad;
    sp.chunk = pl.chunk1;
    sp.n_chunk = pl.n_chunk1;
    sp.page_elems = pl.page_elems;
    sp.scale_log2 = a.scale * kLog2e;
    for (int h = 0; h < s.n_kv; ++h) {
        sp.rpad[h] = latent_rank_pad(s.k_rank[h]);
        sp.roff[h] = pl.roff[h];
    }
    const int max_r = pl.max_r;
    const dim3 g1(pl.n_chunk1, s.n_kv, s.n_seq);
    cudaError_t e;
    if (pl.kernel == LatentScoresKernel::KeyTable) {
        TableScoreParams tp{};
        tp.sp = sp;
        tp.tab = reinterpret_cast<const uint4*>(ws + pl.off_tab);
        tp.half_split = true;
        e = launch_scores_kt<T, Q4>(tp, pl, a.inv_freq, s.n_seq, s.n_kv, st);
    } else if (pl.kernel == LatentScoresKernel::RopeTable) {
        TableScoreParams tp{};
        tp.sp = sp;
        tp.tab = reinterpret_cast<const uint4*>(ws + pl.off_tab);
        tp.QB = pl.QB;
        tp.NKV = pl.NKV;
        tp.half_split = s.rope_half_split;
        e = s.head_dim == 128 ? launch_scores_t<T, 128, Q4>(tp, pl, a.inv_freq, s.n_seq, st)
                              : launch_scores_t<T, 64, Q4>(tp, pl, a.inv_freq, s.n_seq, st);
    } else if (pl.kernel == LatentScoresKernel::QueryFold)
        e = s.head_dim == 128 ? launch_scores_w<T, 128>(sp, s.rope_half_split, g1, max_r, st)
                              : launch_scores_w<T, 64>(sp, s.rope_half_split, g1, max_r, st);
    else if (s.head_dim == 128)
        e = s.rope_half_split ? launch_scores<T, 128, true>(sp, g1, max_r, st)
                              : launch_scores<T, 128, false>(sp, g1, max_r, st);
    else
        e = s.rope_half_split ? launch_scores<T, 64, true>(sp, g1, max_r, st)
                              : launch_scores<T, 64, false>(sp, g1, max_r, st);
    if (e != cudaSuccess) return e;
    if (e1 && (e = cudaEventRecord(e1, st)) != cudaSuccess) return e;

    ValueParams vp{};
    vp.scores = scores;
    vp.ml = ml;
    vp.v_lat = a.v_lat;
    vp.v_scale = a.v_scale;
    vp.n_keys = a.n_keys;
    vp.part = part;
    vp.n_head = s.n_head;
    vp.v_rank = s.v_rank;
    vp.pm = sp.pm;
    vp.max_keys = s.max_keys;
    vp.keys_pad = pl.keys_pad;
    vp.chunk = pl.chunk2;
    vp.n_chunk = pl.n_chunk2;
    vp.n_chunk1 = pl.n_chunk1;
    const dim3 g2(pl.n_slice, pl.n_chunk2, s.n_seq);
    switch (pl.HP / 16) {
        case 1: e = launch_values<T, 1, Q4>(vp, g2, st); break;
        case 2: e = launch_values<T, 2, Q4>(vp, g2, st); break;
        case 3: e = launch_values<T, 3, Q4>(vp, g2, st); break;
        default: e = launch_values<T, 4, Q4>(vp, g2, st); break;
    }
    if (e != cudaSuccess) return e;
    if (e2 && (e = cudaEventRecord(e2, st)) != cudaSuccess) return e;

    const size_t n4 = static_cast<size_t>(s.n_seq) * s.n_head * (s.v_rank / 4);
    const int rblocks = static_cast<int>(std::min<size_t>((n4 + 255) / 256, 4096));
    latent_reduce_kernel<<<rblocks, 256, 0, st>>>(part, acc, s.n_seq, s.n_head, pl.G, s.v_rank, pl.n_chunk2);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
    if (e3 && (e = cudaEventRecord(e3, st)) != cudaSuccess) return e;

    // Expand: at most 8 rows of acc per block (one shared-memory pass, <= 64 KB), the slices of N in
    // parallel (blockIdx.z); U's rows in registers sized for the rank (NK), so blocks stay small.
    const int N = s.n_seq * pl.G;
    const int nc = std::max(1, std::min({N, 8, 16384 / s.v_rank}));
    const dim3 ge(s.n_kv, (s.head_dim + kExpandRows - 1) / kExpandRows, (N + nc - 1) / nc);
    const size_t esm = static_cast<size_t>(nc) * s.v_rank * sizeof(float);
    auto expand = [&](auto kernel) {
        if (esm > 48 * 1024) {
            const cudaError_t r =
                cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(esm));
            if (r != cudaSuccess) return r;
        }
        kernel<<<ge, 256, esm, st>>>(static_cast<const T*>(a.v_u), acc, a.out, s.n_seq, s.n_head, pl.G, s.head_dim,
                                     s.v_rank, nc);
        return cudaGetLastError();
    };
    const int nk = s.v_rank / 128;
    if (nk <= 1) return expand(latent_expand_kernel<T, 1>);
    if (nk <= 2) return expand(latent_expand_kernel<T, 2>);
    if (nk <= 4) return expand(latent_expand_kernel<T, 4>);
    if (nk <= 8) return expand(latent_expand_kernel<T, 8>);
    return expand(latent_expand_kernel<T, 16>);
}

// The small-batch single pass: asked for, or Auto at a small batch, where the shape fits it.
bool use_small(const LatentAttnShape& s) {
    const bool want = s.scores_kernel == LatentScoresKernel::SmallBatch ||
                      (s.scores_kernel == LatentScoresKernel::Auto && s.n_seq <= s.small_batch_max);
    return want && latent_small_supported(s);
}

cudaError_t run(const LatentAttnShape& s, const LatentAttnArgs& a, void* ws, size_t ws_bytes, cudaStream_t st,
                cudaEvent_t e1, cudaEvent_t e2, cudaEvent_t e3) {
    if (use_small(s)) return latent_small_attention(s, a, ws, ws_bytes, st, e1, e2, e3);
    Plan pl;
    if (!make_plan(s, &pl) || ws_bytes < pl.total || !ws || !a.q || !a.k_lat || !a.k_u || !a.v_lat || !a.v_u ||
        !a.n_keys || !a.out || (s.rope_dims > 0 && !a.inv_freq) || (s.page_rows > 0) != (a.page_table != nullptr))
        return cudaErrorInvalidValue;
    auto* w = static_cast<unsigned char*>(ws);
    if (s.format == LatentFormat::Q4) {
        if (!a.k_scale || !a.v_scale) return cudaErrorInvalidValue;
        return run_all<__half, true>(s, pl, a, w, st, e1, e2, e3);
    }
    return s.format == LatentFormat::BF16 ? run_all<__nv_bfloat16, false>(s, pl, a, w, st, e1, e2, e3)
                                          : run_all<__half, false>(s, pl, a, w, st, e1, e2, e3);
}

}  // namespace

size_t latent_attention_workspace(const LatentAttnShape& shape) {
    if (use_small(shape)) return latent_small_workspace(shape);
    Plan pl;
    return make_plan(shape, &pl) ? pl.total : 0;
}

size_t latent_attention_workspace_bound(const LatentAttnShape& shape) {
    Plan pl;
    if (!make_plan(shape, &pl)) return 0;
    // Every chunk one tile: no plan of a smaller call has more chunks.
    pl.n_chunk1 = pl.n_chunk2 = ceil_div(std::max(shape.max_keys, 1), kTile);
    lay_out(shape, &pl);
    // Calls small enough for the single pass use its workspace instead.
    LatentAttnShape small = shape;
    if (shape.scores_kernel == LatentScoresKernel::Auto) small.n_seq = std::min(shape.n_seq, shape.small_batch_max);
    const size_t small_bytes =
        small.n_seq > 0 && use_small(small) ? latent_small_workspace_bound(small) : 0;
    return std::max(pl.total, small_bytes);
}

cudaError_t latent_attention(const LatentAttnShape& shape, const LatentAttnArgs& args, void* workspace,
                             size_t workspace_bytes, cudaStream_t s) {
    return run(shape, args, workspace, workspace_bytes, s, nullptr, nullptr, nullptr);
}

cudaError_t latent_attention_timed(const LatentAttnShape& shape, const LatentAttnArgs& args, void* workspace,
                                   size_t workspace_bytes, cudaStream_t s, cudaEvent_t after_scores,
                                   cudaEvent_t after_values, cudaEvent_t after_reduce) {
    return run(shape, args, workspace, workspace_bytes, s, after_scores, after_values, after_reduce);
}

}  // namespace starkv::cuda
