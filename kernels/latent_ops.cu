#include "latent_ops.cuh"

#include <cfloat>

namespace starkv::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 256;  // keys scored per round of the online softmax

__device__ inline int read_pos0(int pos0, const int32_t* pos0_dev) { return pos0_dev ? *pos0_dev : pos0; }

__global__ void latent_store_kernel(const float* lat, float* cache, int n, int R, int pos0, const int32_t* pos0_dev) {
    const size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
    if (idx >= static_cast<size_t>(n) * R) return;
    const size_t p0 = static_cast<size_t>(read_pos0(pos0, pos0_dev));
    cache[p0 * R + idx] = lat[idx];
}

__global__ void latent_store_f16_kernel(const float* lat, int n, int R, const int32_t* col_head,
                                        const int32_t* col_in, const int32_t* k_roff, const int32_t* k_pad, int v_off,
                                        int v_pad, __half* k16, __half* v16, int cap, int pos0,
                                        const int32_t* pos0_dev) {
    const size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
    if (idx >= static_cast<size_t>(n) * R) return;
    const int t = static_cast<int>(idx / R), c = static_cast<int>(idx % R);
    const size_t pos = static_cast<size_t>(read_pos0(pos0, pos0_dev) + t);
    const __half x = __float2half_rn(lat[idx]);
    const int h = col_head[c];
    if (h >= 0)
        k16[static_cast<size_t>(k_roff[h]) * cap + pos * k_pad[h] + col_in[c]] = x;
    else
        v16[pos * v_pad + (c - v_off)] = x;
}

__global__ void causal_key_counts_kernel(int32_t* n_keys, int n, int first, int pos0, const int32_t* pos0_dev) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) n_keys[i] = read_pos0(pos0, pos0_dev) + first + i + 1;
}

// One block per position (grid-stride, so a fixed grid serves any length):
// first every (head, dim) of the rebuilt keys, then the rotation of each pair,
// angle and its cos/sin in double as on the CPU.
__global__ void latent_keys_kernel(const float* cache, int R, const float* k_u, const int32_t* k_off,
                                   const int32_t* k_rank, int n_kv, int hd, int half, const double* inv_freq,
                                   bool half_split, float* keys, int n_ctx, int n, int pos0, const int32_t* pos0_dev) {
    const int n_pos = read_pos0(pos0, pos0_dev) + n;
    for (int p = blockIdx.x; p < n_pos; p += gridDim.x) {
        const float* z = cache + static_cast<size_t>(p) * R;
        for (int idx = threadIdx.x; idx < n_kv * hd; idx += blockDim.x) {
            const int h = idx / hd, d = idx % hd;
            const int r = k_rank[h];
            const float* u = k_u + static_cast<size_t>(hd) * k_off[h] + static_cast<size_t>(d) * r;
            const float* zh = z + k_off[h];
            float acc = 0.0f;
            for (int j = 0; j < r; ++j) acc += u[j] * zh[j];
            keys[(static_cast<size_t>(h) * n_ctx + p) * hd + d] = acc;
        }
        __syncthreads();
        for (int idx = threadIdx.x; idx < n_kv * half; idx += blockDim.x) {
            const int h = idx / half, i = idx % half;
            double sn, cs;
            sincos(static_cast<double>(p) * inv_freq[i], &sn, &cs);
            const float c = static_cast<float>(cs), s = static_cast<float>(sn);
            float* v = keys + (static_cast<size_t>(h) * n_ctx + p) * hd;
            float* a = half_split ? v + i : v + 2 * i;
            float* b = half_split ? v + i + half : v + 2 * i + 1;
            const float x0 = *a, x1 = *b;
            *a = x0 * c - x1 * s;
            *b = x0 * s + x1 * c;
        }
        __syncthreads();
    }
}

// Max (is_max) or sum over the block; every thread gets the result.
__device__ float block_reduce(float v, float* red, bool is_max) {
    for (int off = 16; off > 0; off >>= 1) {
        const float o = __shfl_xor_sync(0xffffffffu, v, off);
        v = is_max ? fmaxf(v, o) : v + o;
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float r = is_max ? -FLT_MAX : 0.0f;
    for (int w = 0; w < static_cast<int>(blockDim.x + 31) / 32; ++w) r = is_max ? fmaxf(r, red[w]) : r + red[w];
    __syncthreads();
    return r;
}

// One block per (query head, token): scores of a chunk of keys (a thread per
// key), online-softmax rescale of the latent sum held in shared memory (a
// thread per latent dimension), and at the end the expansion by U_v (a warp
// per output dimension).
__global__ void latent_attention_kernel(const float* q, const float* keys, const float* cache, int R, int v_off,
                                        int rv, const float* v_u, float* out, int n_head, int n_kv, int hd, int n_ctx,
                                        int pos0, const int32_t* pos0_dev) {
    extern __shared__ float smem[];
    float* sq = smem;
    float* ss = sq + hd;
    float* sacc = ss + kChunk;
    float* red = sacc + rv;
    const int qh = blockIdx.x, t = blockIdx.y;
    const int kvh = qh / (n_head / n_kv);
    const int n_keys = read_pos0(pos0, pos0_dev) + t + 1;
    const size_t qd = static_cast<size_t>(n_head) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) sq[d] = q[t * qd + static_cast<size_t>(qh) * hd + d];
    for (int r = threadIdx.x; r < rv; r += blockDim.x) sacc[r] = 0.0f;
    __syncthreads();
    const float scale = 1.0f / sqrtf(static_cast<float>(hd));
    const float* kh = keys + static_cast<size_t>(kvh) * n_ctx * hd;
    float m = -FLT_MAX, l = 0.0f;
    for (int c0 = 0; c0 < n_keys; c0 += kChunk) {
        const int cn = min(kChunk, n_keys - c0);
        float lmax = -FLT_MAX;
        for (int j = threadIdx.x; j < cn; j += blockDim.x) {
            const float* kr = kh + static_cast<size_t>(c0 + j) * hd;
            float dot = 0.0f;
            for (int d = 0; d < hd; ++d) dot += sq[d] * kr[d];
            ss[j] = dot * scale;
            lmax = fmaxf(lmax, ss[j]);
        }
        const float m_new = fmaxf(m, block_reduce(lmax, red, true));
        const float corr = expf(m - m_new);
        float lsum = 0.0f;
        for (int j = threadIdx.x; j < cn; j += blockDim.x) {
            const float p = expf(ss[j] - m_new);
            ss[j] = p;
            lsum += p;
        }
        l = l * corr + block_reduce(lsum, red, false);
        const float* z = cache + static_cast<size_t>(c0) * R + v_off;
        for (int r = threadIdx.x; r < rv; r += blockDim.x) {
            float a = sacc[r] * corr;
            for (int j = 0; j < cn; ++j) a += ss[j] * z[static_cast<size_t>(j) * R + r];
            sacc[r] = a;
        }
        __syncthreads();
        m = m_new;
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
    const float inv_l = 1.0f / l;
    for (int d = warp; d < hd; d += n_warps) {
        const float* u = v_u + (static_cast<size_t>(kvh) * hd + d) * rv;
        float acc = 0.0f;
        for (int r = lane; r < rv; r += 32) acc += u[r] * sacc[r];
        for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (lane == 0) out[t * qd + static_cast<size_t>(qh) * hd + d] = acc * inv_l;
    }
}

}  // namespace

cudaError_t latent_store_f16(const float* lat, int n, int R, const int32_t* col_head, const int32_t* col_in,
                             const int32_t* k_roff, const int32_t* k_pad, int v_off, int v_pad, __half* k16,
                             __half* v16, int cap, int pos0, const int32_t* pos0_dev, cudaStream_t s) {
    if (n <= 0 || R <= 0 || cap <= 0) return cudaErrorInvalidValue;
    const size_t total = static_cast<size_t>(n) * R;
    latent_store_f16_kernel<<<static_cast<unsigned>((total + kThreads - 1) / kThreads), kThreads, 0, s>>>(
        lat, n, R, col_head, col_in, k_roff, k_pad, v_off, v_pad, k16, v16, cap, pos0, pos0_dev);
    return cudaGetLastError();
}

cudaError_t causal_key_counts(int32_t* n_keys, int n, int first, int pos0, const int32_t* pos0_dev, cudaStream_t s) {
    if (n <= 0) return cudaErrorInvalidValue;
    causal_key_counts_kernel<<<(n + kThreads - 1) / kThreads, kThreads, 0, s>>>(n_keys, n, first, pos0, pos0_dev);
    return cudaGetLastError();
}

cudaError_t latent_store(const float* lat, float* cache, int n, int R, int n_ctx, int pos0, const int32_t* pos0_dev,
                         cudaStream_t s) {
    const size_t total = static_cast<size_t>(n) * R;
    if (total == 0) return cudaSuccess;
    if (!pos0_dev && pos0 + n > n_ctx) return cudaErrorInvalidValue;
    latent_store_kernel<<<static_cast<unsigned>((total + kThreads - 1) / kThreads), kThreads, 0, s>>>(lat, cache, n, R,
                                                                                                    pos0, pos0_dev);
    return cudaGetLastError();
}

cudaError_t latent_keys(const float* cache, int R, const float* k_u, const int32_t* k_off, const int32_t* k_rank,
                        int n_kv, int hd, int n_dims, const double* inv_freq, bool half_split, float* keys, int n_ctx,
                        int n, int pos0, const int32_t* pos0_dev, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    // With the position on the device the grid cannot depend on it: a fixed
    // grid strides over the positions.
    const int n_pos = pos0_dev ? n_ctx : pos0 + n;
    const unsigned grid = static_cast<unsigned>(n_pos < 1024 ? n_pos : 1024);
    latent_keys_kernel<<<grid, 128, 0, s>>>(cache, R, k_u, k_off, k_rank, n_kv, hd, n_dims / 2, inv_freq, half_split,
                                            keys, n_ctx, n, pos0, pos0_dev);
    return cudaGetLastError();
}

cudaError_t latent_attention_ref(const float* q, const float* keys, const float* cache, int R, int v_off, int v_rank,
                                 const float* v_u, float* out, int n, int n_head, int n_kv, int hd, int n_ctx,
                                 int pos0, const int32_t* pos0_dev, cudaStream_t s) {
    if (n_kv <= 0 || n_head % n_kv != 0) return cudaErrorInvalidValue;
    if (n <= 0) return cudaSuccess;
    const size_t shared = static_cast<size_t>(hd + kChunk + v_rank + 32) * sizeof(float);
    if (shared > 48 * 1024) {
        if (cudaError_t e = cudaFuncSetAttribute(latent_attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(shared));
            e != cudaSuccess)
            return e;
    }
    latent_attention_kernel<<<dim3(n_head, n), kThreads, shared, s>>>(q, keys, cache, R, v_off, v_rank, v_u, out,
                                                                      n_head, n_kv, hd, n_ctx, pos0, pos0_dev);
    return cudaGetLastError();
}

}  // namespace starkv::cuda
