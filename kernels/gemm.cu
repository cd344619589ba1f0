#include "gemm.cuh"

namespace starkv::cuda {
namespace {

std::string lt_error(const char* what, cublasStatus_t st) {
    return std::string(what) + " failed: cublas status " + std::to_string(static_cast<int>(st));
}

}  // namespace

Gemm::~Gemm() {
    for (auto& [key, p] : plans_) {
        if (p.a) cublasLtMatrixLayoutDestroy(p.a);
        if (p.b) cublasLtMatrixLayoutDestroy(p.b);
        if (p.c) cublasLtMatrixLayoutDestroy(p.c);
        if (p.op) cublasLtMatmulDescDestroy(p.op);
    }
    if (workspace_) cudaFree(workspace_);
    if (handle_) cublasLtDestroy(handle_);
}

bool Gemm::init(size_t workspace_bytes, std::string* why) {
    if (cublasStatus_t st = cublasLtCreate(&handle_); st != CUBLAS_STATUS_SUCCESS) {
        *why = lt_error("cublasLtCreate", st);
        return false;
    }
    if (cudaError_t e = cudaMalloc(&workspace_, workspace_bytes); e != cudaSuccess) {
        workspace_ = nullptr;
        *why = std::string("workspace: ") + cudaGetErrorString(e);
        return false;
    }
    workspace_bytes_ = workspace_bytes;
    return true;
}

// Column-major view: W row-major [rows][cols] is A (cols x rows), ld cols, used
// transposed; X is B (cols x n), ld cols; Y is C (rows x n), ld rows.
bool Gemm::plan(int rows, int cols, int n, int input, Plan** out, std::string* why) {
    const auto key = std::make_tuple(rows, cols, n, input);
    if (auto it = plans_.find(key); it != plans_.end()) {
        *out = &it->second;
        return true;
    }
    Plan p;
    const cudaDataType_t in = input == kGemmBf16 ? CUDA_R_16BF : input == kGemmF16 ? CUDA_R_16F : CUDA_R_32F;
    cublasStatus_t st = cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatrixLayoutCreate(&p.a, in, cols, rows, cols);
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatrixLayoutCreate(&p.b, in, cols, n, cols);
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, rows, n, rows);
    cublasLtMatmulPreference_t pref = nullptr;
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceCreate(&pref);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                                  sizeof workspace_bytes_);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
        *why = st != CUBLAS_STATUS_SUCCESS ? lt_error("cuBLASLt plan", st)
                                           : "cuBLASLt has no algorithm for " + std::to_string(rows) + "x" +
                                                 std::to_string(cols) + "x" + std::to_string(n);
        if (p.a) cublasLtMatrixLayoutDestroy(p.a);
        if (p.b) cublasLtMatrixLayoutDestroy(p.b);
        if (p.c) cublasLtMatrixLayoutDestroy(p.c);
        if (p.op) cublasLtMatmulDescDestroy(p.op);
        return false;
    }
    p.algo = result.algo;
    *out = &plans_.emplace(key, p).first->second;
    return true;
}

bool Gemm::run(const void* w, const void* x, float* y, int rows, int cols, int n, int input, cudaStream_t s,
               std::string* why) {
    if (n <= 0) return true;
    Plan* p = nullptr;
    if (!plan(rows, cols, n, input, &p, why)) return false;
    const float alpha = 1.0f, beta = 0.0f;
    cublasStatus_t st = cublasLtMatmul(handle_, p->op, &alpha, w, p->a, x, p->b, &beta, y, p->c, y, p->c, &p->algo,
                                       workspace_, workspace_bytes_, s);
    if (st != CUBLAS_STATUS_SUCCESS) {
        *why = lt_error("cublasLtMatmul", st);
        return false;
    }
    return true;
}

}  // namespace starkv::cuda
