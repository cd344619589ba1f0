#include "sampling.cuh"

#include <cfloat>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>

namespace starkv::cuda {
namespace {

constexpr int kThreads = 1024;       // argmax
constexpr int kFilterThreads = 256;  // the filter's block (its double scans need registers)

// One block per row; (value, index) pairs reduced so the lowest index wins ties.
__global__ void argmax_kernel(const float* logits, int n, int32_t* out) {
    const float* row = logits + static_cast<size_t>(blockIdx.x) * n;
    float best = -FLT_MAX;
    int idx = n;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        if (idx == n || row[i] > best) {  // strictly greater: a thread keeps its first maximum
            best = row[i];
            idx = i;
        }
    for (int off = 16; off > 0; off >>= 1) {
        const float b = __shfl_xor_sync(0xffffffffu, best, off);
        const int j = __shfl_xor_sync(0xffffffffu, idx, off);
        if (b > best || (b == best && j < idx)) {
            best = b;
            idx = j;
        }
    }
    __shared__ float sb[32];
    __shared__ int si[32];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
        sb[warp] = best;
        si[warp] = idx;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w)
            if (sb[w] > best || (sb[w] == best && si[w] < idx)) {
                best = sb[w];
                idx = si[w];
            }
        out[blockIdx.x] = idx;
    }
}

__global__ void iota_kernel(int32_t* ids, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) ids[i] = i;
}

using Scan = cub::BlockScan<double, kFilterThreads>;

// Inclusive prefix sums of f(i) for i < count, in chunks of kFilterThreads, in
// double as the CPU; stops at the first i with prefix >= target, returning
// count when none. Every thread gets the result.
template <typename F>
__device__ int first_reaching(int count, double target, F f, Scan::TempStorage& tmp, double* total_out) {
    __shared__ int found;
    __shared__ double carry;
    if (threadIdx.x == 0) {
        found = count;
        carry = 0.0;
    }
    __syncthreads();
    for (int c0 = 0; c0 < count; c0 += kFilterThreads) {
        const int i = c0 + threadIdx.x;
        const double v = i < count ? f(i) : 0.0;
        double incl, chunk;
        Scan(tmp).InclusiveSum(v, incl, chunk);
        incl += carry;
        if (i < count && incl >= target) atomicMin(&found, i);
        __syncthreads();
        if (threadIdx.x == 0) carry += chunk;
        __syncthreads();
        if (found < count) break;
    }
    if (total_out) *total_out = carry;
    const int r = found;
    __syncthreads();
    return r;
}

// Single block over the sorted candidates: the filters, the distribution and the draw.
__global__ void __launch_bounds__(kFilterThreads) filter_kernel(const float* sorted, const int32_t* ids, int n, SampleParams p, double u, float* probs,
                              int32_t* token) {
    __shared__ Scan::TempStorage tmp;
    const float l0 = sorted[0];
    int keep = p.top_k > 0 && p.top_k < n ? p.top_k : n;
    if (p.top_p < 1.0f && keep > 1) {
        double total = 0.0;  // sum over the top-k, then the first prefix reaching p of it
        first_reaching(keep, 2.0 * n, [&](int i) { return exp(static_cast<double>(sorted[i]) - l0); }, tmp, &total);
        const double target = static_cast<double>(p.top_p) * total;
        keep = max(1, min(keep, 1 + first_reaching(keep, target,
                                                   [&](int i) { return exp(static_cast<double>(sorted[i]) - l0); },
                                                   tmp, nullptr)));
    }
    if (p.min_p > 0.0f && keep > 1) {
        const float threshold = fminf(l0, l0 + logf(p.min_p));
        // sorted: the kept ones are a prefix; count those at or above the threshold
        __shared__ int count;
        if (threadIdx.x == 0) count = 0;
        __syncthreads();
        int mine = 0;
        for (int i = threadIdx.x; i < keep; i += blockDim.x) mine += sorted[i] >= threshold;
        atomicAdd(&count, mine);
        __syncthreads();
        keep = count;
        __syncthreads();
    }
    const double t = p.temperature > 0 ? p.temperature : 1.0;
    auto weight = [&](int i) { return exp((static_cast<double>(sorted[i]) - l0) / t); };
    double sum = 0.0;
    first_reaching(keep, 2.0 * n, weight, tmp, &sum);
    if (probs) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) probs[ids[i]] = i < keep ? static_cast<float>(weight(i) / sum) : 0.0f;
    }
    // The draw: first kept candidate whose cumulative probability exceeds u.
    const int pick = first_reaching(keep, u * sum, [&](int i) { return weight(i); }, tmp, nullptr);
    if (threadIdx.x == 0) *token = ids[pick < keep ? pick : keep - 1];
}

}  // namespace

cudaError_t argmax_rows(const float* logits, int n_rows, int n, int32_t* out, cudaStream_t s) {
    if (n_rows <= 0 || n <= 0) return n <= 0 ? cudaErrorInvalidValue : cudaSuccess;
    argmax_kernel<<<n_rows, kThreads, 0, s>>>(logits, n, out);
    return cudaGetLastError();
}

Sampling::~Sampling() {
    cudaFree(temp_);
    cudaFree(keys_);
    cudaFree(ids_in_);
    cudaFree(ids_);
}

cudaError_t Sampling::init(int n) {
    n_ = n;
    if (cudaError_t e = cub::DeviceRadixSort::SortPairsDescending(nullptr, temp_bytes_, keys_, keys_, ids_in_, ids_, n);
        e != cudaSuccess)
        return e;
    const size_t bytes = static_cast<size_t>(n) * 4;
    cudaError_t e = cudaMalloc(&temp_, temp_bytes_ ? temp_bytes_ : 1);
    if (e == cudaSuccess) e = cudaMalloc(&keys_, bytes);
    if (e == cudaSuccess) e = cudaMalloc(&ids_in_, bytes);
    if (e == cudaSuccess) e = cudaMalloc(&ids_, bytes);
    if (e != cudaSuccess) return e;
    iota_kernel<<<(n + 255) / 256, 256>>>(ids_in_, n);
    if (e = cudaGetLastError(); e != cudaSuccess) return e;
    return cudaDeviceSynchronize();
}

cudaError_t Sampling::sample(const float* logits, const SampleParams& p, double u, float* probs, int32_t* token,
                             cudaStream_t s) {
    if (n_ <= 0) return cudaErrorInvalidValue;
    // Radix sort is stable: equal logits keep ascending ids, the CPU's tie order.
    if (cudaError_t e = cub::DeviceRadixSort::SortPairsDescending(temp_, temp_bytes_, logits, keys_, ids_in_, ids_, n_,
                                                                  0, 32, s);
        e != cudaSuccess)
        return e;
    filter_kernel<<<1, kFilterThreads, 0, s>>>(keys_, ids_, n_, p, u, probs, token);
    return cudaGetLastError();
}

}  // namespace starkv::cuda
