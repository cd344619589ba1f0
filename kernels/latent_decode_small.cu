#include "latent_decode_small.cuh"
#include "mma_ptx.cuh"

#include <algorithm>
#include <cstdint>

namespace starkv::cuda {
namespace {

constexpr int kTile = 64;       // keys per tile
constexpr int kThreads = 256;   // 8 warps
constexpr int kPad = 8;         // elements added to each shared row: ldmatrix rows hit distinct banks
constexpr int kVCols = 256;     // value-rank columns per value piece (8 warps x 32)
constexpr int kCombCols = 64;   // value-rank columns per combine block
constexpr float kLog2e = 1.4426950408889634f;
constexpr double kInv2Pi = 0.15915494309189533577;

struct SmallParams {
    const float* q;
    const void* k_lat;
    const void* k_u;
    const void* v_lat;
    const int* n_keys;
    const double* inv_freq;
    float* out;
    float* part;  // [n_seq][n_chunk][n_head][v_rank]: the chunk's sum_j 2^(s_j - m) v_j
    float2* ml;   // [n_seq][n_chunk][n_head]: the chunk's (m, sum_j 2^(s_j - m)), base 2
    const int* page_table;
    long long page_elems;  // key-latent elements per page, every KV head
    int page_rows, pages_per_seq;
    int n_head, n_kv, G, hd, rope_dims, half_split, v_rank, max_keys;
    int chunk, n_chunk, kv_per_block, n_stage, stage_elems;
    float scale_log2;
    int rpad[kLatMaxKvHeads];
    int roff[kLatMaxKvHeads];
};

// Shared memory of the pass, in this order (all 16-byte aligned).
struct SmallLayout {
    size_t qs, f2pi, cs, S, P, ring, total;
};
__host__ __device__ inline int cs_stride(int rope_dims) { return rope_dims / 2 + 2; }  // float2; +2: banks
__host__ __device__ inline SmallLayout small_layout(int HB, int hd, int rope_dims, int CK, int MT, int n_stage,
                                                    int stage_elems) {
    SmallLayout l{};
    auto a16 = [](size_t x) { return (x + 15) / 16 * 16; };
    l.qs = 0;
    l.f2pi = a16(l.qs + static_cast<size_t>(HB) * hd * sizeof(float));
    l.cs = a16(l.f2pi + 64 * sizeof(double));
    l.S = a16(l.cs + static_cast<size_t>(kTile) * cs_stride(rope_dims) * sizeof(float2));
    l.P = a16(l.S + static_cast<size_t>(HB) * CK * sizeof(float));
    l.ring = a16(l.P + static_cast<size_t>(MT) * 16 * (CK + kPad) * 2);
    l.total = l.ring + static_cast<size_t>(n_stage) * stage_elems * 2;
    return l;
}

// The page and the row of a tile's first key (chunks and pages start at multiples of kTile).
struct TileAt {
    size_t page;
    int row;
};
__device__ inline TileAt tile_at(const SmallParams& p, int b, int t0) {
    if (!p.page_table) return {static_cast<size_t>(b), t0};
    return {static_cast<size_t>(__ldg(p.page_table + static_cast<size_t>(b) * p.pages_per_seq + t0 / p.page_rows)),
            t0 % p.page_rows};
}

// Block (chunk, KV-head group, sequence). The chunk's work is a list of pieces streamed through
// a ring of n_stage shared-memory stages by cp.async: first, per tile of 64 keys, the key latents
// of KP KV heads at a time; then, per 256 value columns, the chunk's value-latent tiles.
// KP: KV heads per key piece (8 for padded ranks <= 32, 4 for <= 64, 2 for <= 128); a head's
// 64 keys are scored by 8 / KP warps of SPW 16-key slabs each. MT: 16-row tiles of the block's
// query heads (P rows, zero-padded).
template <typename T, int KP, int MT>
__global__ void __launch_bounds__(kThreads, 1) latent_small_pass_kernel(SmallParams p) {
    constexpr int WPH = 8 / KP;      // warps per KV head
    constexpr int SPW = 4 / WPH;     // 16-key slabs per warp
    constexpr int RJ = 16 / KP;      // 16-rank steps at most (padded rank <= 16 * RJ)
    constexpr int GMAX = kLatMaxGroup;
    const int chunk = blockIdx.x, b = blockIdx.z;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int kv0 = blockIdx.y * p.kv_per_block, HB = p.kv_per_block * p.G, hq0 = kv0 * p.G;
    const int HD = p.hd, CK = p.chunk, PS = CK + kPad;

    // The combine kernel adds into out: the first chunk's blocks zero it (stream order covers
    // the combine that follows).
    if (chunk == 0)
        for (int e = tid; e < HB * HD; e += kThreads)
            p.out[(static_cast<size_t>(b) * p.n_head + hq0) * HD + e] = 0.0f;
    const int n = min(p.n_keys[b], p.max_keys);
    const int k0 = chunk * CK;
    if (k0 >= n) return;
    const int k_end = min(n, k0 + CK);
    const int nt = (k_end - k0 + kTile - 1) / kTile;

    extern __shared__ __align__(16) unsigned char smem[];
    const SmallLayout L = small_layout(HB, HD, p.rope_dims, CK, MT, p.n_stage, p.stage_elems);
    float* qs = reinterpret_cast<float*>(smem + L.qs);        // [HB][HD], x scale x log2 e
    double* f2pi = reinterpret_cast<double*>(smem + L.f2pi);  // inv_freq / 2 pi
    float2* cs = reinterpret_cast<float2*>(smem + L.cs);      // [64 keys][cs_stride] (cos, sin) of the tile
    float* S = reinterpret_cast<float*>(smem + L.S);          // [HB][CK] scores, base 2
    T* P = reinterpret_cast<T*>(smem + L.P);                  // [MT * 16][PS] 2^(s - m)
    T* ring = reinterpret_cast<T*>(smem + L.ring);            // [n_stage][stage_elems]
    const int npairs = p.rope_dims / 2, css = cs_stride(p.rope_dims);

    for (int e = tid; e < HB * HD; e += kThreads)
        qs[e] = p.q[(static_cast<size_t>(b) * p.n_head + hq0) * HD + e] * p.scale_log2;
    for (int i = tid; i < npairs; i += kThreads) f2pi[i] = p.inv_freq[i] * kInv2Pi;
    for (int e = tid; e < (MT * 16 - HB) * PS; e += kThreads) P[HB * PS + e] = from_float<T>(0.0f);

    const int npk = (p.kv_per_block + KP - 1) / KP;      // key pieces per tile
    const int nkey_pieces = nt * npk;
    const int n_pieces = nkey_pieces + (p.v_rank + kVCols - 1) / kVCols * nt;

    // Piece i into ring stage st: rows past k_end are zero-filled (never read from the cache).
    auto issue = [&](int i) {
        if (i >= n_pieces) return;
        T* dst = ring + static_cast<size_t>(i % p.n_stage) * p.stage_elems;
        if (i < nkey_pieces) {
            const int t = i / npk, kp = i % npk, t0 = k0 + t * kTile;
            const TileAt at = tile_at(p, b, t0);
            const int lim = k_end - t0;
            const int h_end = min(kv0 + (kp + 1) * KP, kv0 + p.kv_per_block);
            for (int h = kv0 + kp * KP; h < h_end; ++h) {
                const int rp = p.rpad[h], per_row = rp / 8;
                const T* src = static_cast<const T*>(p.k_lat) + at.page * p.page_elems +
                               static_cast<size_t>(p.page_rows) * p.roff[h] + static_cast<size_t>(at.row) * rp;
                for (int e = tid; e < kTile * per_row; e += kThreads) {
                    const int row = e / per_row, c = e % per_row;
                    const bool ok = row < lim;
                    cp_async16(dst + row * (rp + kPad) + c * 8, ok ? src + row * rp + c * 8 : src, ok);
                }
                dst += kTile * (rp + kPad);
            }
        } else {
            const int v = i - nkey_pieces, vs = v / nt, t = v % nt, t0 = k0 + t * kTile;
            const TileAt at = tile_at(p, b, t0);
            const int c0 = vs * kVCols, per_row = min(kVCols, p.v_rank - c0) / 8, lim = k_end - t0;
            const T* src = static_cast<const T*>(p.v_lat) + (at.page * p.page_rows + at.row) * p.v_rank + c0;
            for (int e = tid; e < kTile * per_row; e += kThreads) {
                const int row = e / per_row, c = e % per_row;
                const bool ok = row < lim;
                cp_async16(dst + row * (kVCols + kPad) + c * 8, ok ? src + static_cast<size_t>(row) * p.v_rank + c * 8 : src,
                           ok);
            }
        }
    };
    for (int s = 0; s < p.n_stage - 1; ++s) {
        issue(s);
        cp_async_commit();
    }
    // Waits for piece i, frees the stage of piece i - 1, prefetches piece i + n_stage - 1.
    auto next_piece = [&](int i) {
        if (p.n_stage == 3)
            cp_async_wait<1>();
        else
            cp_async_wait<0>();
        __syncthreads();
        issue(i + p.n_stage - 1);
        cp_async_commit();
    };

    // ---- scores: per tile, KP KV heads per piece ----
    const bool half = p.half_split != 0;
    const int nrot = p.rope_dims == 0 ? 0 : (half ? p.rope_dims / 16 : p.rope_dims / 8);
    const int nunits = nrot + (HD - p.rope_dims) / 8;  // n-tile units: a rotation pair's tiles, or a plain tile
    for (int i = 0; i < nkey_pieces; ++i) {
        next_piece(i);
        const int t = i / npk, kp = i % npk, t0 = k0 + t * kTile;
        if (kp == 0) {  // cos/sin of this tile's absolute positions, shared by every head
            for (int e = tid; e < kTile * npairs; e += kThreads) {
                const int key = e / npairs, pi = e % npairs;
                double x = static_cast<double>(t0 + key) * f2pi[pi];
                x -= rint(x);  // turns in [-1/2, 1/2]: the fast sin/cos is accurate there
                float sn, cn;
                __sincosf(static_cast<float>(x) * 6.283185307179586f, &sn, &cn);
                cs[key * css + pi] = make_float2(cn, sn);
            }
            __syncthreads();
        }
        const int kk = warp / WPH, sg = warp % WPH, h = kv0 + kp * KP + kk;
        if (h >= kv0 + p.kv_per_block) continue;
        const T* Z = ring + static_cast<size_t>(i % p.n_stage) * p.stage_elems;
        for (int k = kv0 + kp * KP; k < h; ++k) Z += kTile * (p.rpad[k] + kPad);
        const int rp = p.rpad[h], rj = rp / 16;
        uint32_t A[SPW][RJ][4];
#pragma unroll
        for (int sp = 0; sp < SPW; ++sp)
#pragma unroll
            for (int ks = 0; ks < RJ; ++ks)
                if (ks < rj)
                    ldsm_x4(A[sp][ks], Z + ((sg * SPW + sp) * 16 + lane % 16) * (rp + kPad) + ks * 16 + (lane / 16) * 8);
        const T* U = static_cast<const T*>(p.k_u) + static_cast<size_t>(HD) * p.roff[h] +
                     static_cast<size_t>(lane / 4) * rp + 2 * (lane % 4);
        auto unit_tiles = [&](int u, int& ja, int& jb) {
            if (u < nrot) {
                ja = u;
                jb = half ? u + p.rope_dims / 16 : -1;
            } else {
                ja = p.rope_dims / 8 + (u - nrot);
                jb = -1;
            }
        };
        // U_h's B fragments (rows = head dims of n-tile j) straight from global memory (L1/L2):
        // the next unit's are loaded while this one's are used.
        auto load_b = [&](int j, uint32_t (&bf)[RJ][2]) {
            const T* row = U + static_cast<size_t>(j) * 8 * rp;
#pragma unroll
            for (int ks = 0; ks < RJ; ++ks)
                if (ks < rj) {
                    bf[ks][0] = __ldg(reinterpret_cast<const unsigned*>(row + ks * 16));
                    bf[ks][1] = __ldg(reinterpret_cast<const unsigned*>(row + ks * 16 + 8));
                }
        };
        float sc[SPW][2][GMAX];
#pragma unroll
        for (int sp = 0; sp < SPW; ++sp)
#pragma unroll
            for (int r2 = 0; r2 < 2; ++r2)
#pragma unroll
                for (int g = 0; g < GMAX; ++g) sc[sp][r2][g] = 0.0f;
        const float* qh = qs + (h - kv0) * p.G * HD;
        uint32_t ba[RJ][2], bb[RJ][2], na[RJ][2], nb[RJ][2];
        int ja, jb;
        unit_tiles(0, ja, jb);
        if (nunits > 0) {
            load_b(ja, ba);
            if (jb >= 0) load_b(jb, bb);
        }
        for (int u = 0; u < nunits; ++u) {
            int ja2 = -1, jb2 = -1;
            if (u + 1 < nunits) {
                unit_tiles(u + 1, ja2, jb2);
                load_b(ja2, na);
                if (jb2 >= 0) load_b(jb2, nb);
            }
            const int ca = ja * 8 + 2 * (lane % 4);
#pragma unroll
            for (int sp = 0; sp < SPW; ++sp) {
                float ya[4] = {0.0f, 0.0f, 0.0f, 0.0f}, yb[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                for (int ks = 0; ks < RJ; ++ks)
                    if (ks < rj) {
                        mma<T>(ya, A[sp][ks], ba[ks][0], ba[ks][1]);
                        if (jb >= 0) mma<T>(yb, A[sp][ks], bb[ks][0], bb[ks][1]);
                    }
#pragma unroll
                for (int r2 = 0; r2 < 2; ++r2) {
                    const int key = (sg * SPW + sp) * 16 + lane / 4 + 8 * r2;
                    const float y0 = ya[2 * r2], y1 = ya[2 * r2 + 1];
                    if (jb >= 0) {  // half-split pairs (ca, ca + D/2), (ca + 1, ca + 1 + D/2)
                        const float4 c = *reinterpret_cast<const float4*>(cs + key * css + ca);
                        const float z0 = yb[2 * r2], z1 = yb[2 * r2 + 1];
                        const float ka0 = y0 * c.x - z0 * c.y, kb0 = y0 * c.y + z0 * c.x;
                        const float ka1 = y1 * c.z - z1 * c.w, kb1 = y1 * c.w + z1 * c.z;
                        const int cb = ca + p.rope_dims / 2;
#pragma unroll
                        for (int g = 0; g < GMAX; ++g)
                            if (g < p.G) {
                                const float2 qa = *reinterpret_cast<const float2*>(qh + g * HD + ca);
                                const float2 qb = *reinterpret_cast<const float2*>(qh + g * HD + cb);
                                sc[sp][r2][g] += qa.x * ka0 + qa.y * ka1 + qb.x * kb0 + qb.y * kb1;
                            }
                    } else {
                        float k0v = y0, k1v = y1;
                        if (u < nrot) {  // adjacent pair (ca, ca + 1)
                            const float2 c = cs[key * css + ca / 2];
                            k0v = y0 * c.x - y1 * c.y;
                            k1v = y0 * c.y + y1 * c.x;
                        }
#pragma unroll
                        for (int g = 0; g < GMAX; ++g)
                            if (g < p.G) {
                                const float2 qa = *reinterpret_cast<const float2*>(qh + g * HD + ca);
                                sc[sp][r2][g] += qa.x * k0v + qa.y * k1v;
                            }
                    }
                }
            }
            if (u + 1 < nunits) {
                ja = ja2;
                jb = jb2;
#pragma unroll
                for (int ks = 0; ks < RJ; ++ks) {
                    ba[ks][0] = na[ks][0];
                    ba[ks][1] = na[ks][1];
                    bb[ks][0] = nb[ks][0];
                    bb[ks][1] = nb[ks][1];
                }
            }
        }
        // The quad's four lanes hold a row's partial dots: sum them, one lane writes.
#pragma unroll
        for (int sp = 0; sp < SPW; ++sp)
#pragma unroll
            for (int r2 = 0; r2 < 2; ++r2)
#pragma unroll
                for (int g = 0; g < GMAX; ++g)
                    if (g < p.G) {
                        float v = sc[sp][r2][g];
                        v += __shfl_xor_sync(0xffffffffu, v, 1);
                        v += __shfl_xor_sync(0xffffffffu, v, 2);
                        const int key = (sg * SPW + sp) * 16 + lane / 4 + 8 * r2;
                        if (lane % 4 == 0)
                            S[((h - kv0) * p.G + g) * CK + t * kTile + key] = t0 + key < k_end ? v : -INFINITY;
                    }
    }

    // ---- values: per 256 columns, the chunk's tiles; P x Vlat on tensor cores ----
    const int nvk = nt * kTile;
    float acc[MT][4][4] = {};
    for (int i = nkey_pieces; i < n_pieces; ++i) {
        next_piece(i);
        const int v = i - nkey_pieces, vs = v / nt, t = v % nt;
        if (v == 0) {  // every score of the chunk is in S: its softmax (max, sum) and P
            for (int hl = warp; hl < HB; hl += kThreads / 32) {
                float m = -INFINITY;
                for (int k = lane; k < nvk; k += 32) m = fmaxf(m, S[hl * CK + k]);
                for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
                float l = 0.0f;
                for (int k = lane; k < nvk; k += 32) {
                    const float s = S[hl * CK + k];
                    const float e = s == -INFINITY ? 0.0f : exp2f(s - m);
                    l += e;
                    P[hl * PS + k] = from_float<T>(e);
                }
                for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
                if (lane == 0)
                    p.ml[(static_cast<size_t>(b) * p.n_chunk + chunk) * p.n_head + hq0 + hl] = make_float2(m, l);
            }
            __syncthreads();
        }
        if (t == 0) {
#pragma unroll
            for (int a = 0; a < MT; ++a)
#pragma unroll
                for (int j = 0; j < 4; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[a][j][e] = 0.0f;
        }
        const int c0 = vs * kVCols, width = min(kVCols, p.v_rank - c0);
        if (warp * 32 < width) {
            const T* V = ring + static_cast<size_t>(i % p.n_stage) * p.stage_elems;
            pv_tile_mma<T, MT>(acc, P + t * kTile, PS, V, kVCols + kPad, warp, lane);
            if (t == nt - 1) {
                float* dst = p.part + ((static_cast<size_t>(b) * p.n_chunk + chunk) * p.n_head + hq0) * p.v_rank + c0;
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        const int col = warp * 32 + j * 8 + 2 * (lane % 4);
                        const int h0 = mt * 16 + lane / 4, h1 = h0 + 8;
                        if (h0 < HB)
                            *reinterpret_cast<float2*>(dst + static_cast<size_t>(h0) * p.v_rank + col) =
                                make_float2(acc[mt][j][0], acc[mt][j][1]);
                        if (h1 < HB)
                            *reinterpret_cast<float2*>(dst + static_cast<size_t>(h1) * p.v_rank + col) =
                                make_float2(acc[mt][j][2], acc[mt][j][3]);
                    }
            }
        }
    }
    cp_async_wait<0>();
}

// Block (64 value columns, KV head, sequence): for each query head g of the group, the chunk
// weights w_c = 2^(m_c - M) / L (the global softmax), acc = sum_c w_c part_c over its columns,
// then out[d] += U_v[kvh * hd + d][cols] . acc (one atomic add per (head, d) and block).
template <typename T>
__global__ void __launch_bounds__(kThreads) latent_small_combine_kernel(const float* part, const float2* ml,
                                                                        const T* vu, const int* n_keys, float* out,
                                                                        int n_head, int G, int hd, int v_rank,
                                                                        int max_keys, int chunk, int n_chunk) {
    extern __shared__ __align__(16) float cm[];  // w [G][n_chunk], red [256] float4, acc [G][64]
    const int c0 = blockIdx.x * kCombCols, kvh = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int n = min(n_keys[b], max_keys);
    const int nc = (n + chunk - 1) / chunk;
    if (nc <= 0) return;  // no keys: out stays zero
    float* w = cm;
    float4* red = reinterpret_cast<float4*>(cm + (G * n_chunk + 3) / 4 * 4);
    float* acc = reinterpret_cast<float*>(red + kThreads);
    for (int g = warp; g < G; g += kThreads / 32) {
        const float2* src = ml + static_cast<size_t>(b) * n_chunk * n_head + kvh * G + g;
        float M = -INFINITY;
        for (int c = lane; c < nc; c += 32) M = fmaxf(M, src[static_cast<size_t>(c) * n_head].x);
        for (int off = 16; off > 0; off >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, off));
        float l = 0.0f;
        for (int c = lane; c < nc; c += 32) {
            const float2 v = src[static_cast<size_t>(c) * n_head];
            const float e = exp2f(v.x - M);
            w[g * n_chunk + c] = e;
            l += v.y * e;
        }
        for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
        const float il = l > 0.0f ? 1.0f / l : 0.0f;
        __syncwarp();
        for (int c = lane; c < nc; c += 32) w[g * n_chunk + c] *= il;
    }
    __syncthreads();
    // items (g, 4 columns); each item's chunks split over `split` threads, summed through red.
    const int items = G * (kCombCols / 4), split = kThreads / items;
    if (tid < items * split) {
        const int it = tid % items, sp = tid / items, g = it / (kCombCols / 4), c4 = it % (kCombCols / 4);
        const float* src = part + (static_cast<size_t>(b) * n_chunk * n_head + kvh * G + g) * v_rank + c0 + 4 * c4;
        float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int c = sp; c < nc; c += split) {
            const float4 v = *reinterpret_cast<const float4*>(src + static_cast<size_t>(c) * n_head * v_rank);
            const float wc = w[g * n_chunk + c];
            s.x += wc * v.x;
            s.y += wc * v.y;
            s.z += wc * v.z;
            s.w += wc * v.w;
        }
        red[tid] = s;
    }
    __syncthreads();
    if (tid < items) {
        float4 s = red[tid];
        for (int k = 1; k < split; ++k) {
            const float4 v = red[k * items + tid];
            s.x += v.x;
            s.y += v.y;
            s.z += v.z;
            s.w += v.w;
        }
        reinterpret_cast<float4*>(acc)[tid] = s;  // acc[g][4 c4 ..]
    }
    __syncthreads();
    for (int d = warp; d < hd; d += kThreads / 32) {
        const float2 u = half2_bits_to_float2(
            __ldg(reinterpret_cast<const unsigned*>(vu + (static_cast<size_t>(kvh) * hd + d) * v_rank + c0 + 2 * lane)),
            static_cast<T*>(nullptr));
        for (int g = 0; g < G; ++g) {
            const float2 a = *reinterpret_cast<const float2*>(acc + g * kCombCols + 2 * lane);
            float s = u.x * a.x + u.y * a.y;
            for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
            if (lane == 0) atomicAdd(out + (static_cast<size_t>(b) * n_head + kvh * G + g) * hd + d, s);
        }
    }
}

// ---- host side ----

int g_tune_chunk = 0, g_tune_split = 0;

struct SmallPlan {
    int G = 0, CK = 0, n_chunk = 0, hsplit = 1, kvb = 0, KP = 8, MT = 1, n_stage = 3, stage_elems = 0;
    int page_rows = 0;
    long long page_elems = 0;
    int roff[kLatMaxKvHeads] = {};
    size_t smem = 0, comb_smem = 0, off_ml = 0, total = 0;
};

int ceil_div(long long a, long long b) { return static_cast<int>((a + b - 1) / b); }
size_t align256(size_t x) { return (x + 255) / 256 * 256; }

int device_attr(cudaDeviceAttr a, int fallback) {
    int dev = 0, v = fallback;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, a, dev) != cudaSuccess) return fallback;
    return v;
}

// chunk_keys, head_split: 0 = choose. n_chunk_cap > 0: plan as if every chunk were one tile (bounds).
bool small_plan(const LatentAttnShape& s, SmallPlan* pl, bool bound = false) {
    if (s.format != LatentFormat::F16 && s.format != LatentFormat::BF16) return false;
    if (s.n_seq <= 0 || s.n_kv <= 0 || s.n_kv > kLatMaxKvHeads || s.n_head <= 0 || s.n_head > kLatMaxHeads ||
        s.n_head % s.n_kv != 0)
        return false;
    pl->G = s.n_head / s.n_kv;
    if (pl->G > kLatMaxGroup) return false;
    if (s.head_dim != 64 && s.head_dim != 128) return false;
    if (s.rope_dims < 0 || s.rope_dims > s.head_dim || s.rope_dims % 16 != 0) return false;
    if (s.v_rank <= 0 || s.v_rank % 128 != 0 || s.v_rank > 2048) return false;
    if (s.max_keys < 0) return false;
    if (s.page_rows > 0) {
        if (s.page_rows % kTile != 0 || s.pages_per_seq <= 0 ||
            static_cast<long long>(s.pages_per_seq) * s.page_rows < s.max_keys)
            return false;
        pl->page_rows = s.page_rows;
    } else {
        if (s.ctx_cap < s.max_keys || s.ctx_cap <= 0) return false;
        pl->page_rows = s.ctx_cap;
    }
    long long sum = 0;
    int max_r = 16;
    for (int h = 0; h < s.n_kv; ++h) {
        if (s.k_rank[h] <= 0 || s.k_rank[h] > kLatMaxKeyRank) return false;
        pl->roff[h] = static_cast<int>(sum);
        sum += latent_rank_pad(s.k_rank[h]);
        max_r = std::max(max_r, latent_rank_pad(s.k_rank[h]));
    }
    pl->page_elems = sum * pl->page_rows;
    pl->KP = max_r <= 32 ? 8 : max_r <= 64 ? 4 : 2;
    const int sms = device_attr(cudaDevAttrMultiProcessorCount, 132);
    const int smem_max = device_attr(cudaDevAttrMaxSharedMemoryPerBlockOptin, 227 * 1024);
    // KV-head groups per chunk: 1 unless asked (each group re-reads the chunk's value latents).
    pl->hsplit = g_tune_split > 0 && s.n_kv % g_tune_split == 0 ? g_tune_split : 1;
    pl->kvb = s.n_kv / pl->hsplit;
    const int HB = pl->kvb * pl->G;
    pl->MT = HB <= 16 ? 1 : HB <= 32 ? 2 : 4;
    pl->stage_elems = std::max(pl->KP * kTile * (max_r + kPad), kTile * (kVCols + kPad));
    const int tiles = std::max(1, ceil_div(s.max_keys, kTile));
    // One wave: chunks of whole tiles so that sequences x chunks x head groups <= the SM count
    // (one block per SM: the pass holds ~200 KB of shared memory).
    int cpt = bound ? 1 : ceil_div(static_cast<long long>(tiles) * s.n_seq * pl->hsplit, sms);
    if (!bound && g_tune_chunk >= kTile) cpt = g_tune_chunk / kTile;
    cpt = std::min(cpt, tiles);
    for (;; --cpt) {  // the longest chunk that fits shared memory (3 stages, else 2)
        if (cpt < 1) return false;
        pl->CK = cpt * kTile;
        pl->n_stage = 3;
        SmallLayout l = small_layout(HB, s.head_dim, s.rope_dims, pl->CK, pl->MT, 3, pl->stage_elems);
        if (l.total > static_cast<size_t>(smem_max)) {
            pl->n_stage = 2;
            l = small_layout(HB, s.head_dim, s.rope_dims, pl->CK, pl->MT, 2, pl->stage_elems);
        }
        if (l.total <= static_cast<size_t>(smem_max)) {
            pl->smem = l.total;
            break;
        }
    }
    pl->n_chunk = ceil_div(std::max(s.max_keys, 1), pl->CK);
    // The combine holds every chunk's weight per query head.
    pl->comb_smem = ((static_cast<size_t>(pl->G) * pl->n_chunk + 3) / 4 * 4 + kThreads * 4 + pl->G * kCombCols) *
                    sizeof(float);
    if (pl->comb_smem > 96 * 1024) return false;
    const size_t part = static_cast<size_t>(s.n_seq) * pl->n_chunk * s.n_head * s.v_rank * sizeof(float);
    pl->off_ml = align256(part);
    pl->total = pl->off_ml + align256(static_cast<size_t>(s.n_seq) * pl->n_chunk * s.n_head * sizeof(float2));
    return true;
}

template <typename T, int KP, int MT>
cudaError_t launch_pass(const SmallParams& p, const SmallPlan& pl, int n_seq, cudaStream_t st) {
    auto kernel = latent_small_pass_kernel<T, KP, MT>;
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(pl.smem));
    if (e != cudaSuccess) return e;
    kernel<<<dim3(pl.n_chunk, pl.hsplit, n_seq), kThreads, pl.smem, st>>>(p);
    return cudaGetLastError();
}

template <typename T, int KP>
cudaError_t launch_pass_mt(const SmallParams& p, const SmallPlan& pl, int n_seq, cudaStream_t st) {
    if (pl.MT == 1) return launch_pass<T, KP, 1>(p, pl, n_seq, st);
    if (pl.MT == 2) return launch_pass<T, KP, 2>(p, pl, n_seq, st);
    return launch_pass<T, KP, 4>(p, pl, n_seq, st);
}

template <typename T>
cudaError_t run_small(const LatentAttnShape& s, const SmallPlan& pl, const LatentAttnArgs& a, unsigned char* ws,
                      cudaStream_t st, const cudaEvent_t (&after_pass)[3]) {
    SmallParams p{};
    p.q = a.q;
    p.k_lat = a.k_lat;
    p.k_u = a.k_u;
    p.v_lat = a.v_lat;
    p.n_keys = a.n_keys;
    p.inv_freq = a.inv_freq;
    p.out = a.out;
    p.part = reinterpret_cast<float*>(ws);
    p.ml = reinterpret_cast<float2*>(ws + pl.off_ml);
    p.page_table = a.page_table;
    p.page_elems = pl.page_elems;
    p.page_rows = pl.page_rows;
    p.pages_per_seq = s.pages_per_seq;
    p.n_head = s.n_head;
    p.n_kv = s.n_kv;
    p.G = pl.G;
    p.hd = s.head_dim;
    p.rope_dims = s.rope_dims;
    p.half_split = s.rope_half_split ? 1 : 0;
    p.v_rank = s.v_rank;
    p.max_keys = s.max_keys;
    p.chunk = pl.CK;
    p.n_chunk = pl.n_chunk;
    p.kv_per_block = pl.kvb;
    p.n_stage = pl.n_stage;
    p.stage_elems = pl.stage_elems;
    p.scale_log2 = a.scale * kLog2e;
    for (int h = 0; h < s.n_kv; ++h) {
        p.rpad[h] = latent_rank_pad(s.k_rank[h]);
        p.roff[h] = pl.roff[h];
    }
    cudaError_t e = pl.KP == 8   ? launch_pass_mt<T, 8>(p, pl, s.n_seq, st)
                    : pl.KP == 4 ? launch_pass_mt<T, 4>(p, pl, s.n_seq, st)
                                 : launch_pass_mt<T, 2>(p, pl, s.n_seq, st);
    if (e != cudaSuccess) return e;
    for (cudaEvent_t ev : after_pass)
        if (ev && (e = cudaEventRecord(ev, st)) != cudaSuccess) return e;
    auto comb = latent_small_combine_kernel<T>;
    if (pl.comb_smem > 48 * 1024 &&
        (e = cudaFuncSetAttribute(comb, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(pl.comb_smem))) !=
            cudaSuccess)
        return e;
    comb<<<dim3(s.v_rank / kCombCols, s.n_kv, s.n_seq), kThreads, pl.comb_smem, st>>>(
        p.part, p.ml, static_cast<const T*>(a.v_u), a.n_keys, a.out, s.n_head, pl.G, s.head_dim, s.v_rank, s.max_keys,
        pl.CK, pl.n_chunk);
    return cudaGetLastError();
}

}  // namespace

bool latent_small_supported(const LatentAttnShape& shape) {
    SmallPlan pl;
    return small_plan(shape, &pl);
}

size_t latent_small_workspace(const LatentAttnShape& shape) {
    SmallPlan pl;
    return small_plan(shape, &pl) ? pl.total : 0;
}

size_t latent_small_workspace_bound(const LatentAttnShape& shape) {
    SmallPlan pl;
    return small_plan(shape, &pl, true) ? pl.total : 0;  // every chunk one tile: the most chunks
}

cudaError_t latent_small_attention(const LatentAttnShape& shape, const LatentAttnArgs& args, void* workspace,
                                   size_t workspace_bytes, cudaStream_t s, cudaEvent_t after_pass,
                                   cudaEvent_t after_pass2, cudaEvent_t after_pass3) {
    SmallPlan pl;
    if (!small_plan(shape, &pl) || workspace_bytes < pl.total || !workspace || !args.q || !args.k_lat || !args.k_u ||
        !args.v_lat || !args.v_u || !args.n_keys || !args.out || (shape.rope_dims > 0 && !args.inv_freq) ||
        (shape.page_rows > 0) != (args.page_table != nullptr))
        return cudaErrorInvalidValue;
    auto* w = static_cast<unsigned char*>(workspace);
    const cudaEvent_t ev[3] = {after_pass, after_pass2, after_pass3};
    return shape.format == LatentFormat::BF16 ? run_small<__nv_bfloat16>(shape, pl, args, w, s, ev)
                                              : run_small<__half>(shape, pl, args, w, s, ev);
}

void latent_small_tune(int chunk_keys, int head_split) {
    g_tune_chunk = chunk_keys;
    g_tune_split = head_split;
}

}  // namespace starkv::cuda
