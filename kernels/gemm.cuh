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

class Gemm {
public:
    Gemm() = default;
    ~Gemm();
    Gemm(const Gemm&) = delete;
    Gemm& operator=(const Gemm&) = delete;

    // Creates the handle and workspace; false with *why on failure.
    bool init(size_t workspace_bytes, std::string* why);
    // bf16: W and X are __nv_bfloat16 (fp32 accumulate); else both fp32 with
    // exact fp32 compute (no TF32). Y is fp32. Returns false with *why.
    bool run(const void* w, const void* x, float* y, int rows, int cols, int n, bool bf16, cudaStream_t s,
             std::string* why);

private:
    struct Plan {
        cublasLtMatmulDesc_t op = nullptr;
        cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
        cublasLtMatmulAlgo_t algo{};
    };
    bool plan(int rows, int cols, int n, bool bf16, Plan** out, std::string* why);

    cublasLtHandle_t handle_ = nullptr;
    void* workspace_ = nullptr;
    size_t workspace_bytes_ = 0;
    std::map<std::tuple<int, int, int, bool>, Plan> plans_;
};

}  // namespace starkv::cuda
