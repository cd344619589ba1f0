#include "elementwise.cuh"

namespace starkv::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(size_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

__global__ void embed_kernel(const float* table, const int32_t* tokens, int E, float* out) {
    const float* row = table + static_cast<size_t>(tokens[blockIdx.x]) * E;
    float* o = out + static_cast<size_t>(blockIdx.x) * E;
    for (int i = threadIdx.x; i < E; i += blockDim.x) o[i] = row[i];
}

// One block per row; the sum of squares in double, as the CPU reference.
__global__ void rms_norm_kernel(const float* x, const float* w, float* out, int E, float eps) {
    const float* xr = x + static_cast<size_t>(blockIdx.x) * E;
    float* o = out + static_cast<size_t>(blockIdx.x) * E;
    double ss = 0.0;
    for (int i = threadIdx.x; i < E; i += blockDim.x) ss += static_cast<double>(xr[i]) * xr[i];
    for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
    __shared__ double part[32];
    __shared__ float scale;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) part[warp] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int i = 0; i < (blockDim.x + 31) / 32; ++i) t += part[i];
        scale = static_cast<float>(1.0 / sqrt(t / E + eps));
    }
    __syncthreads();
    for (int i = threadIdx.x; i < E; i += blockDim.x) o[i] = xr[i] * scale * w[i];
}

// One thread per (token, head, pair); angle and its cos/sin in double as on the CPU.
__global__ void rope_kernel(float* x, int n, int n_heads, int head_dim, int row_stride, int half,
                            const double* inv_freq, bool half_split, int pos0, const int32_t* pos0_dev) {
    const size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
    const size_t total = static_cast<size_t>(n) * n_heads * half;
    if (idx >= total) return;
    const int i = static_cast<int>(idx % half);
    const int h = static_cast<int>((idx / half) % n_heads);
    const int t = static_cast<int>(idx / (static_cast<size_t>(half) * n_heads));
    double sn, cs;
    if (pos0_dev) pos0 = *pos0_dev;
    sincos(static_cast<double>(pos0 + t) * inv_freq[i], &sn, &cs);
    const float c = static_cast<float>(cs), s = static_cast<float>(sn);
    float* v = x + static_cast<size_t>(t) * row_stride + static_cast<size_t>(h) * head_dim;
    float* a = half_split ? v + i : v + 2 * i;
    float* b = half_split ? v + i + half : v + 2 * i + 1;
    const float x0 = *a, x1 = *b;
    *a = x0 * c - x1 * s;
    *b = x0 * s + x1 * c;
}

__global__ void swiglu_kernel(const float* gate, const float* up, float* out, size_t n) {
    const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
    if (i >= n) return;
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
}

__global__ void add_kernel(float* x, const float* y, size_t n) {
    const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
    if (i < n) x[i] += y[i];
}

__global__ void bf16_kernel(const float* x, __nv_bfloat16* out, size_t n) {
    const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
    if (i < n) out[i] = __float2bfloat16_rn(x[i]);
}

__global__ void f16_kernel(const float* x, __half* out, size_t n) {
    const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
    if (i < n) out[i] = __float2half_rn(x[i]);
}

__device__ inline void store(float* p, float v) { *p = v; }
__device__ inline void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <typename T>
__global__ void kv_store_kernel(const float* src, T* cache, int n, int n_kv, int hd, int n_ctx, int pos0,
                                const int32_t* pos0_dev) {
    const size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
    const size_t row = static_cast<size_t>(n_kv) * hd;
    if (idx >= static_cast<size_t>(n) * row) return;
    const int t = static_cast<int>(idx / row);
    const int h = static_cast<int>((idx % row) / hd);
    const int d = static_cast<int>(idx % hd);
    if (pos0_dev) pos0 = *pos0_dev;
    store(cache + (static_cast<size_t>(h) * n_ctx + pos0 + t) * hd + d, src[idx]);
}

}  // namespace

cudaError_t embed_gather(const float* table, const int32_t* tokens, int n, int E, float* out, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    embed_kernel<<<n, kThreads, 0, s>>>(table, tokens, E, out);
    return cudaGetLastError();
}

cudaError_t rms_norm(const float* x, const float* w, float* out, int n, int E, float eps, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    rms_norm_kernel<<<n, kThreads, 0, s>>>(x, w, out, E, eps);
    return cudaGetLastError();
}

cudaError_t rope(float* x, int n, int n_heads, int head_dim, int row_stride, int n_dims, const double* inv_freq,
                 bool half_split, int pos0, cudaStream_t s, const int32_t* pos0_dev) {
    const size_t total = static_cast<size_t>(n) * n_heads * (n_dims / 2);
    if (total == 0) return cudaSuccess;
    rope_kernel<<<blocks_for(total), kThreads, 0, s>>>(x, n, n_heads, head_dim, row_stride, n_dims / 2, inv_freq,
                                                       half_split, pos0, pos0_dev);
    return cudaGetLastError();
}

cudaError_t swiglu(const float* gate, const float* up, float* out, size_t n, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    swiglu_kernel<<<blocks_for(n), kThreads, 0, s>>>(gate, up, out, n);
    return cudaGetLastError();
}

cudaError_t add_inplace(float* x, const float* y, size_t n, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    add_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, y, n);
    return cudaGetLastError();
}

cudaError_t to_bf16(const float* x, __nv_bfloat16* out, size_t n, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    bf16_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, out, n);
    return cudaGetLastError();
}

cudaError_t to_f16(const float* x, __half* out, size_t n, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    f16_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, out, n);
    return cudaGetLastError();
}

template <typename T>
cudaError_t kv_store(const float* src, T* cache, int n, int n_kv, int hd, int n_ctx, int pos0, cudaStream_t s,
                     const int32_t* pos0_dev) {
    const size_t total = static_cast<size_t>(n) * n_kv * hd;
    if (total == 0) return cudaSuccess;
    kv_store_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(src, cache, n, n_kv, hd, n_ctx, pos0, pos0_dev);
    return cudaGetLastError();
}

template cudaError_t kv_store<float>(const float*, float*, int, int, int, int, int, cudaStream_t, const int32_t*);
template cudaError_t kv_store<__nv_bfloat16>(const float*, __nv_bfloat16*, int, int, int, int, int, cudaStream_t,
                                             const int32_t*);

}  // namespace starkv::cuda
