#include "attention.cuh"

#include <cfloat>

namespace starkv::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kPerLane = kMaxHeadDim / 32;

__device__ inline float load(const float* p) { return *p; }
__device__ inline float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }

// One block per (token, query head). Each warp walks every kWarps-th key with
// an online softmax; lane l holds dimensions l, l+32, ...; the warps' partial
// results are merged at the end.
template <typename T>
__global__ void attention_kernel(const float* q, const T* kc, const T* vc, float* out, int n_head, int n_kv, int hd,
                                 int n_ctx, int pos0, const int32_t* pos0_dev) {
    if (pos0_dev) pos0 = *pos0_dev;
    const int h = blockIdx.x, t = blockIdx.y;
    const int group = n_head / n_kv;
    const int kvh = h / group;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const size_t qd = static_cast<size_t>(n_head) * hd;
    const float* qh = q + t * qd + static_cast<size_t>(h) * hd;
    const T* kh = kc + static_cast<size_t>(kvh) * n_ctx * hd;
    const T* vh = vc + static_cast<size_t>(kvh) * n_ctx * hd;
    const float scale = 1.0f / sqrtf(static_cast<float>(hd));
    const int n_keys = pos0 + t + 1;

    float qr[kPerLane], acc[kPerLane];
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
        const int d = lane + 32 * j;
        qr[j] = d < hd ? qh[d] : 0.0f;
        acc[j] = 0.0f;
    }
    float m = -FLT_MAX, l = 0.0f;
    for (int key = warp; key < n_keys; key += kWarps) {
        const T* kr = kh + static_cast<size_t>(key) * hd;
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < kPerLane; ++j) {
            const int d = lane + 32 * j;
            if (d < hd) dot += qr[j] * load(kr + d);
        }
        for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
        const float sc = dot * scale;
        const float m_new = fmaxf(m, sc);
        const float corr = expf(m - m_new), p = expf(sc - m_new);
        l = l * corr + p;
        const T* vr = vh + static_cast<size_t>(key) * hd;
#pragma unroll
        for (int j = 0; j < kPerLane; ++j) {
            const int d = lane + 32 * j;
            acc[j] = acc[j] * corr + (d < hd ? p * load(vr + d) : 0.0f);
        }
        m = m_new;
    }

    __shared__ float sm[kWarps], sl[kWarps];
    __shared__ float sacc[kWarps][kMaxHeadDim];
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
        const int d = lane + 32 * j;
        if (d < hd) sacc[warp][d] = acc[j];
    }
    __syncthreads();
    float M = -FLT_MAX;
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, sm[w]);
    float L = 0.0f, f[kWarps];
    for (int w = 0; w < kWarps; ++w) {
        f[w] = sl[w] > 0.0f ? expf(sm[w] - M) : 0.0f;  // a warp that saw no key adds nothing
        L += sl[w] * f[w];
    }
    float* o = out + t * qd + static_cast<size_t>(h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < kWarps; ++w) v += sacc[w][d] * f[w];
        o[d] = v / L;
    }
}

// ---- split-K decode ----

constexpr int kDecThreads = 128;
constexpr int kMaxGroup = 8;

// 8 consecutive elements (16 or 32 bytes, aligned) as floats.
__device__ inline void load8(const float* p, float* x) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
}
__device__ inline void load8(const __nv_bfloat16* p, float* x) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 f = __bfloat1622float2(h[i]);
        x[2 * i] = f.x, x[2 * i + 1] = f.y;
    }
}
__device__ inline float2 load2(const float* p) { return *reinterpret_cast<const float2*>(p); }
__device__ inline float2 load2(const __nv_bfloat16* p) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}

// Block: (chunk, KV head). Scores: thread j takes keys j and j + 128 of the
// chunk, reading each key row once for the G query heads (q in shared memory,
// pre-scaled into base 2); softmax of the chunk per head; values: thread
// (slice, pair) sums dims 2 pair, 2 pair + 1 over every slice-th key, rows
// read coalesced. Partial (m, l) and unnormalised sums go to the workspace.
template <typename T, int HD, int G>
__global__ void __launch_bounds__(kDecThreads) attention_decode_kernel(const float* q, const T* kc, const T* vc,
                                                                       float* part, float2* ml, int n_head, int n_ctx,
                                                                       int n_chunk, int pos0, const int32_t* pos0_dev) {
    constexpr int kPairs = HD / 2, kSlices = kDecThreads / kPairs;
    const int chunk = blockIdx.x, kvh = blockIdx.y, tid = threadIdx.x;
    const int n_keys = (pos0_dev ? *pos0_dev : pos0) + 1;
    const int k0 = chunk * kDecodeChunk, k1 = min(n_keys, k0 + kDecodeChunk);
    const int h0 = kvh * G;
    if (k0 >= k1) {
        if (tid < G) ml[(static_cast<size_t>(h0) + tid) * n_chunk + chunk] = make_float2(-INFINITY, 0.0f);
        return;
    }
    __shared__ float qs[G][HD];
    __shared__ float ps[G][kDecodeChunk];
    __shared__ float red[G][kDecThreads / 32];
    __shared__ float vacc[kSlices][G][HD];
    const float scale = rsqrtf(static_cast<float>(HD)) * 1.4426950408889634f;  // log2(e)
    for (int i = tid; i < G * HD; i += kDecThreads) qs[i / HD][i % HD] = q[static_cast<size_t>(h0) * HD + i] * scale;
    __syncthreads();
    const T* kh = kc + static_cast<size_t>(kvh) * n_ctx * HD;
    const T* vh = vc + static_cast<size_t>(kvh) * n_ctx * HD;
    // Scores.
    for (int j = tid; j < kDecodeChunk; j += kDecThreads) {
        const int key = k0 + j;
        float s[G];
#pragma unroll
        for (int g = 0; g < G; ++g) s[g] = 0.0f;
        if (key < k1) {
            const T* kr = kh + static_cast<size_t>(key) * HD;
#pragma unroll 4
            for (int d = 0; d < HD; d += 8) {
                float kx[8];
                load8(kr + d, kx);
#pragma unroll
                for (int g = 0; g < G; ++g)
#pragma unroll
                    for (int i = 0; i < 8; ++i) s[g] += qs[g][d + i] * kx[i];
            }
        }
#pragma unroll
        for (int g = 0; g < G; ++g) ps[g][j] = key < k1 ? s[g] : -INFINITY;
    }
    __syncthreads();
    // Softmax of the chunk, per head: max, then 2^(s - m) and its sum.
    const int warp = tid / 32, lane = tid % 32;
    float m[G], l[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        float x = -INFINITY;
        for (int j = tid; j < kDecodeChunk; j += kDecThreads) x = fmaxf(x, ps[g][j]);
        for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
        if (lane == 0) red[g][warp] = x;
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < G; ++g) {
        m[g] = red[g][0];
        for (int w = 1; w < kDecThreads / 32; ++w) m[g] = fmaxf(m[g], red[g][w]);
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < G; ++g) {
        float x = 0.0f;
        for (int j = tid; j < kDecodeChunk; j += kDecThreads) {
            const float p = exp2f(ps[g][j] - m[g]);  // 2^-inf = 0 past the keys
            ps[g][j] = p;
            x += p;
        }
        for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
        if (lane == 0) red[g][warp] = x;
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < G; ++g) {
        l[g] = 0.0f;
        for (int w = 0; w < kDecThreads / 32; ++w) l[g] += red[g][w];
    }
    // Values.
    const int pair = tid % kPairs, slice = tid / kPairs;
    float a0[G], a1[G];
#pragma unroll
    for (int g = 0; g < G; ++g) a0[g] = a1[g] = 0.0f;
    for (int j = slice; j < k1 - k0; j += kSlices) {
        const float2 v2 = load2(vh + static_cast<size_t>(k0 + j) * HD + 2 * pair);
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const float p = ps[g][j];
            a0[g] += p * v2.x;
            a1[g] += p * v2.y;
        }
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
        vacc[slice][g][2 * pair] = a0[g];
        vacc[slice][g][2 * pair + 1] = a1[g];
    }
    __syncthreads();
    for (int i = tid; i < G * HD; i += kDecThreads) {
        const int g = i / HD, d = i % HD;
        float x = 0.0f;
#pragma unroll
        for (int sl = 0; sl < kSlices; ++sl) x += vacc[sl][g][d];
        part[((static_cast<size_t>(h0) + g) * n_chunk + chunk) * HD + d] = x;
    }
    if (tid < G) ml[(static_cast<size_t>(h0) + tid) * n_chunk + chunk] = make_float2(m[tid], l[tid]);
}

// Block per query head: out = sum_c 2^(m_c - M) acc_c / sum_c 2^(m_c - M) l_c.
__global__ void attention_combine_kernel(const float* part, const float2* ml, float* out, int hd, int n_chunk,
                                         int pos0, const int32_t* pos0_dev) {
    const int h = blockIdx.x;
    const int used = ((pos0_dev ? *pos0_dev : pos0) + 1 + kDecodeChunk - 1) / kDecodeChunk;
    const float2* mh = ml + static_cast<size_t>(h) * n_chunk;
    float M = -INFINITY;
    for (int c = 0; c < used; ++c) M = fmaxf(M, mh[c].x);
    float L = 0.0f;
    for (int c = 0; c < used; ++c) L += mh[c].y * exp2f(mh[c].x - M);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float x = 0.0f;
        for (int c = 0; c < used; ++c) x += part[(static_cast<size_t>(h) * n_chunk + c) * hd + d] * exp2f(mh[c].x - M);
        out[static_cast<size_t>(h) * hd + d] = x / L;
    }
}

template <typename T, int HD>
cudaError_t launch_decode(const float* q, const T* kc, const T* vc, float* part, float2* ml, int n_head, int n_kv,
                          int n_ctx, int n_chunk, int pos0, const int32_t* pos0_dev, cudaStream_t s) {
    const dim3 grid(n_chunk, n_kv);
    auto go = [&](auto kernel) {
        kernel<<<grid, kDecThreads, 0, s>>>(q, kc, vc, part, ml, n_head, n_ctx, n_chunk, pos0, pos0_dev);
        return cudaGetLastError();
    };
    switch (n_head / n_kv) {
        case 1: return go(attention_decode_kernel<T, HD, 1>);
        case 2: return go(attention_decode_kernel<T, HD, 2>);
        case 3: return go(attention_decode_kernel<T, HD, 3>);
        case 4: return go(attention_decode_kernel<T, HD, 4>);
        case 5: return go(attention_decode_kernel<T, HD, 5>);
        case 6: return go(attention_decode_kernel<T, HD, 6>);
        case 7: return go(attention_decode_kernel<T, HD, 7>);
        case 8: return go(attention_decode_kernel<T, HD, 8>);
        default: return cudaErrorInvalidValue;
    }
}

bool decode_shape_ok(int n_head, int n_kv, int hd, int n_ctx) {
    return (hd == 64 || hd == 128) && n_kv > 0 && n_head % n_kv == 0 && n_head / n_kv <= kMaxGroup && n_ctx > 0;
}

}  // namespace

size_t attention_decode_workspace(int n_head, int n_kv, int hd, int n_ctx) {
    if (!decode_shape_ok(n_head, n_kv, hd, n_ctx)) return 0;
    const size_t n_chunk = (static_cast<size_t>(n_ctx) + kDecodeChunk - 1) / kDecodeChunk;
    return static_cast<size_t>(n_head) * n_chunk * (static_cast<size_t>(hd) * sizeof(float) + sizeof(float2));
}

template <typename T>
cudaError_t attention_decode(const float* q, const T* k_cache, const T* v_cache, float* out, int n_head, int n_kv,
                             int hd, int n_ctx, int pos0, const int32_t* pos0_dev, void* ws, size_t ws_bytes,
                             cudaStream_t s) {
    if (!decode_shape_ok(n_head, n_kv, hd, n_ctx) || !ws || ws_bytes < attention_decode_workspace(n_head, n_kv, hd, n_ctx) ||
        (!pos0_dev && (pos0 < 0 || pos0 >= n_ctx)))
        return cudaErrorInvalidValue;
    const int n_chunk = (n_ctx + kDecodeChunk - 1) / kDecodeChunk;
    float* part = static_cast<float*>(ws);
    float2* ml = reinterpret_cast<float2*>(part + static_cast<size_t>(n_head) * n_chunk * hd);
    const cudaError_t e = hd == 128 ? launch_decode<T, 128>(q, k_cache, v_cache, part, ml, n_head, n_kv, n_ctx, n_chunk, pos0, pos0_dev, s)
                                    : launch_decode<T, 64>(q, k_cache, v_cache, part, ml, n_head, n_kv, n_ctx, n_chunk, pos0, pos0_dev, s);
    if (e != cudaSuccess) return e;
    attention_combine_kernel<<<n_head, 128, 0, s>>>(part, ml, out, hd, n_chunk, pos0, pos0_dev);
    return cudaGetLastError();
}

template cudaError_t attention_decode<float>(const float*, const float*, const float*, float*, int, int, int, int, int,
                                             const int32_t*, void*, size_t, cudaStream_t);
template cudaError_t attention_decode<__nv_bfloat16>(const float*, const __nv_bfloat16*, const __nv_bfloat16*, float*,
                                                     int, int, int, int, int, const int32_t*, void*, size_t,
                                                     cudaStream_t);

template <typename T>
cudaError_t attention(const float* q, const T* k_cache, const T* v_cache, float* out, int n, int n_head, int n_kv,
                      int hd, int n_ctx, int pos0, cudaStream_t s, const int32_t* pos0_dev) {
    if (hd > kMaxHeadDim || n_kv <= 0 || n_head % n_kv != 0) return cudaErrorInvalidValue;
    if (n <= 0) return cudaSuccess;
    attention_kernel<T><<<dim3(n_head, n), kWarps * 32, 0, s>>>(q, k_cache, v_cache, out, n_head, n_kv, hd, n_ctx,
                                                                pos0, pos0_dev);
    return cudaGetLastError();
}

template cudaError_t attention<float>(const float*, const float*, const float*, float*, int, int, int, int, int, int,
                                      cudaStream_t, const int32_t*);
template cudaError_t attention<__nv_bfloat16>(const float*, const __nv_bfloat16*, const __nv_bfloat16*, float*, int,
                                              int, int, int, int, int, cudaStream_t, const int32_t*);

}  // namespace starkv::cuda
