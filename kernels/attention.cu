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

}  // namespace

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
