// PTX helpers of the latent-attention kernels (sm_80+: cp.async, ldmatrix,
// mma.sync m16n8k16) and the fp16/bf16 conversions they use; one copy for
// every kernel file (latent_attention.cu, latent_decode_small.cu).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace starkv::cuda {

__device__ inline void cp_async16(void* smem, const void* gmem, bool valid) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    const int n = valid ? 16 : 0;  // 0 source bytes: the 16 bytes are zero-filled
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ inline void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// 4- or 8-byte copies (.ca: sizes below 16); 0 source bytes zero-fill.
template <int N>
__device__ inline void cp_async_small(void* smem, const void* gmem, bool valid) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    const int n = valid ? N : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(s), "l"(gmem), "n"(N), "r"(n) : "memory");
}

__device__ inline void ldsm_x4(uint32_t (&r)[4], const void* p) {
    const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
}
__device__ inline void ldsm_x4_t(uint32_t (&r)[4], const void* p) {
    const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
}

// c += a * b, fp32 accumulate; b holds one 16x8 fragment (b0, b1).
template <typename T>
__device__ inline void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ inline void mma<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ inline void mma<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <typename T>
__device__ inline T from_float(float x);
template <>
__device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}
template <>
__device__ inline __half from_float<__half>(float x) {
    return __float2half_rn(x);
}

__device__ inline float2 half2_bits_to_float2(uint32_t v, __half*) {
    return __half22float2(*reinterpret_cast<const __half2*>(&v));
}
__device__ inline float2 half2_bits_to_float2(uint32_t v, __nv_bfloat16*) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v));
}

// acc[mt][n] += P x V over one tile of 64 keys, on tensor cores: P holds 16 x MT rows of
// probabilities (row stride p_stride, the tile's first key at P[0]), V the tile's 64 rows of
// value latents (row stride v_stride); the warp owns V's columns [32 warp, 32 warp + 32), as
// four n-tiles of 8 (acc[mt][0..3], the mma.sync C fragments).
template <typename T, int MT>
__device__ inline void pv_tile_mma(float (&acc)[MT][4][4], const T* P, int p_stride, const T* V, int v_stride,
                                   int warp, int lane) {
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
        uint32_t bf[2][4];
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int row = ks * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
            const int col = warp * 32 + j * 16 + (lane / 16) * 8;
            ldsm_x4_t(bf[j], V + row * v_stride + col);
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            uint32_t af[4];
            ldsm_x4(af, P + (mt * 16 + lane % 16) * p_stride + ks * 16 + (lane / 16) * 8);
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                mma<T>(acc[mt][2 * j], af, bf[j][0], bf[j][1]);
                mma<T>(acc[mt][2 * j + 1], af, bf[j][2], bf[j][3]);
            }
        }
    }
}

}  // namespace starkv::cuda
