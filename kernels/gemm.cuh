// Projections through cuBLASLt: Y[n][rows] = X[n][cols] * W^T for a row-major
// weight W[rows][cols], fp32 accumulate. The algorithm comes from cuBLASLt's
// heuristic once per shape and is cached; one workspace serves every call.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <string>
#include <tuple>

namespace starkv::cuda {

// Input type of W and X (the values of STARKV_DTYPE_*): fp32, bf16 or fp16.
enum GemmInput : int { kGemmF32 = 0, kGemmBf16 = 1, kGemmF16 = 2 };

class Gemm {
public:
    Gemm() = default;
    ~Gemm();
    Gemm(const Gemm&) = delete;
    Gemm& operator=(const Gemm&) = delete;

    // Creates the handle and workspace; false with *why on failure.
    bool init(size_t workspace_bytes, std::string* why);
    // input kGemmBf16 / kGemmF16: W and X are __nv_bfloat16 / __half (fp32
    // accumulate); kGemmF32: both fp32 with exact fp32 compute (no TF32). Y is
    // fp32. Returns false with *why.
    bool run(const void* w, const void* x, float* y, int rows, int cols, int n, int input, cudaStream_t s,
             std::string* why);

private:
    struct Plan {
        cublasLtMatmulDesc_t op = nullptr;
        cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
        cublasLtMatmulAlgo_t algo{};
    };
    bool plan(int rows, int cols, int n, int input, Plan** out, std::string* why);

    cublasLtHandle_t handle_ = nullptr;
    void* workspace_ = nullptr;
    size_t workspace_bytes_ = 0;
    std::map<std::tuple<int, int, int, int>, Plan> plans_;
};

}  // namespace starkv::cuda
