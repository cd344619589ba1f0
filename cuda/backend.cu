// libstarkv_cuda: the whole Llama forward pass on one NVIDIA GPU, behind the C
// table of src/backend/backend_api.h. Nothing here throws across the table:
// every entry point catches and returns a status with a one-line message.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "attention.cuh"
#include "backend/backend_api.h"
#include "elementwise.cuh"
#include "gemm.cuh"
#include "starkv/starkv.h"

#define STARKV_CUDA_EXPORT extern "C" __attribute__((visibility("default")))

namespace starkv::cuda {
namespace {

// Device memory owned by RAII; move-only.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    ~DeviceBuffer() { if (p_) cudaFree(p_); }
    DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr; o.bytes_ = 0; }
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
        std::swap(p_, o.p_);
        std::swap(bytes_, o.bytes_);
        return *this;
    }
    cudaError_t alloc(size_t bytes) {
        bytes_ = bytes;
        return cudaMalloc(&p_, bytes ? bytes : 1);
    }
    template <typename T> T* as() const { return static_cast<T*>(p_); }
    size_t bytes() const { return bytes_; }

private:
    void* p_ = nullptr;
    size_t bytes_ = 0;
};

// Failure inside the backend; caught at the table's edge.
struct Fail {
    int32_t status;
    std::string message;
};

void check(cudaError_t e, const char* what) {
    if (e == cudaSuccess) return;
    const int32_t st = e == cudaErrorMemoryAllocation ? STARKV_ERR_OUT_OF_MEMORY : STARKV_ERR_INTERNAL;
    throw Fail{st, std::string(what) + ": " + cudaGetErrorString(e)};
}

struct Layer {
    DeviceBuffer attn_norm, ffn_norm, wq, wk, wv, wo, w_gate, w_up, w_down, k_cache, v_cache;
};

class Model {
public:
    explicit Model(const starkv_backend_model& d) : d_(d) {}
    ~Model() {
        if (stream_) cudaStreamDestroy(stream_);
    }

    void create() {
        check(cudaSetDevice(d_.device), "cudaSetDevice");
        check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
        std::string why;
        if (!gemm_.init(32u << 20, &why)) throw Fail{STARKV_ERR_INTERNAL, why};
        bf16_ = d_.weight_dtype == STARKV_DTYPE_BF16;
        kv_bf16_ = d_.kv_dtype == STARKV_DTYPE_BF16;
        const size_t E = d_.n_embd, F = d_.n_ff, V = d_.n_vocab, hd = d_.head_dim;
        const size_t qd = d_.n_head * hd, kvd = d_.n_head_kv * hd;
        upload_f32(tok_embd_, d_.tok_embd, V * E);
        upload_f32(output_norm_, d_.output_norm, E);
        upload_matrix(output_, d_.output, V * E);
        layers_.resize(static_cast<size_t>(d_.n_layer));
        const size_t kv_elems = static_cast<size_t>(d_.n_head_kv) * d_.n_ctx * hd;
        for (int l = 0; l < d_.n_layer; ++l) {
            const starkv_backend_layer& s = d_.layers[l];
            Layer& L = layers_[static_cast<size_t>(l)];
            upload_f32(L.attn_norm, s.attn_norm, E);
            upload_f32(L.ffn_norm, s.ffn_norm, E);
            upload_matrix(L.wq, s.wq, qd * E);
            upload_matrix(L.wk, s.wk, kvd * E);
            upload_matrix(L.wv, s.wv, kvd * E);
            upload_matrix(L.wo, s.wo, E * qd);
            upload_matrix(L.w_gate, s.w_gate, F * E);
            upload_matrix(L.w_up, s.w_up, F * E);
            upload_matrix(L.w_down, s.w_down, E * F);
            const size_t kv_bytes = kv_elems * (kv_bf16_ ? 2 : 4);
            alloc(L.k_cache, kv_bytes);
            alloc(L.v_cache, kv_bytes);
        }
        const size_t T = static_cast<size_t>(d_.max_tokens);
        alloc(tokens_, T * sizeof(int32_t));
        alloc(x_, T * E * 4);
        alloc(xn_, T * E * 4);
        alloc(q_, T * qd * 4);
        alloc(k_, T * kvd * 4);
        alloc(v_, T * kvd * 4);
        alloc(attn_, T * qd * 4);
        alloc(proj_, T * E * 4);
        alloc(gate_, T * F * 4);
        alloc(up_, T * F * 4);
        alloc(logits_, T * V * 4);
        // bf16 copy of whichever activation feeds a GEMM (widest: n_ff).
        alloc(act16_, T * std::max(std::max(E, F), qd) * 2);
        alloc(inv_freq_, static_cast<size_t>(d_.rope_n_dims / 2) * sizeof(double));
        check(cudaMemcpy(inv_freq_.as<void>(), d_.rope_inv_freq, inv_freq_.bytes(), cudaMemcpyHostToDevice),
              "upload rope table");
        d_.layers = nullptr;  // host pointers are not kept past create
    }

    void forward(const int32_t* tokens, int n, int pos0, bool all_logits, float* logits) {
        if (n <= 0 || n > d_.max_tokens || pos0 < 0 || pos0 + n > d_.n_ctx)
            throw Fail{STARKV_ERR_INVALID_ARGUMENT, "tokens outside the device buffers"};
        const int E = d_.n_embd, F = d_.n_ff, hd = d_.head_dim;
        const int qd = d_.n_head * hd, kvd = d_.n_head_kv * hd;
        cudaStream_t s = stream_;
        check(cudaSetDevice(d_.device), "cudaSetDevice");
        check(cudaMemcpyAsync(tokens_.as<void>(), tokens, n * sizeof(int32_t), cudaMemcpyHostToDevice, s),
              "upload tokens");
        check(embed_gather(tok_embd_.as<float>(), tokens_.as<int32_t>(), n, E, x_.as<float>(), s), "embed");
        const bool half = d_.rope_layout == STARKV_ROPE_HALF_SPLIT;
        for (int l = 0; l < d_.n_layer; ++l) {
            Layer& L = layers_[static_cast<size_t>(l)];
            check(rms_norm(x_.as<float>(), L.attn_norm.as<float>(), xn_.as<float>(), n, E, d_.rms_eps, s), "rms_norm");
            const void* xin = gemm_input(xn_, static_cast<size_t>(n) * E, s);
            matmul(L.wq, xin, q_, qd, E, n, s);
            matmul(L.wk, xin, k_, kvd, E, n, s);
            matmul(L.wv, xin, v_, kvd, E, n, s);
            check(rope(q_.as<float>(), n, d_.n_head, hd, qd, d_.rope_n_dims, inv_freq_.as<double>(), half, pos0, s),
                  "rope q");
            check(rope(k_.as<float>(), n, d_.n_head_kv, hd, kvd, d_.rope_n_dims, inv_freq_.as<double>(), half, pos0,
                       s),
                  "rope k");
            if (kv_bf16_) {
                using B = __nv_bfloat16;
                check(kv_store(k_.as<float>(), L.k_cache.as<B>(), n, d_.n_head_kv, hd, d_.n_ctx, pos0, s), "kv k");
                check(kv_store(v_.as<float>(), L.v_cache.as<B>(), n, d_.n_head_kv, hd, d_.n_ctx, pos0, s), "kv v");
                check(attention(q_.as<float>(), L.k_cache.as<B>(), L.v_cache.as<B>(), attn_.as<float>(), n, d_.n_head,
                                d_.n_head_kv, hd, d_.n_ctx, pos0, s),
                      "attention");
            } else {
                check(kv_store(k_.as<float>(), L.k_cache.as<float>(), n, d_.n_head_kv, hd, d_.n_ctx, pos0, s), "kv k");
                check(kv_store(v_.as<float>(), L.v_cache.as<float>(), n, d_.n_head_kv, hd, d_.n_ctx, pos0, s), "kv v");
                check(attention(q_.as<float>(), L.k_cache.as<float>(), L.v_cache.as<float>(), attn_.as<float>(), n,
                                d_.n_head, d_.n_head_kv, hd, d_.n_ctx, pos0, s),
                      "attention");
            }
            matmul(L.wo, gemm_input(attn_, static_cast<size_t>(n) * qd, s), proj_, E, qd, n, s);
            check(add_inplace(x_.as<float>(), proj_.as<float>(), static_cast<size_t>(n) * E, s), "residual");
            check(rms_norm(x_.as<float>(), L.ffn_norm.as<float>(), xn_.as<float>(), n, E, d_.rms_eps, s), "rms_norm");
            const void* xf = gemm_input(xn_, static_cast<size_t>(n) * E, s);
            matmul(L.w_gate, xf, gate_, F, E, n, s);
            matmul(L.w_up, xf, up_, F, E, n, s);
            check(swiglu(gate_.as<float>(), up_.as<float>(), gate_.as<float>(), static_cast<size_t>(n) * F, s),
                  "swiglu");
            matmul(L.w_down, gemm_input(gate_, static_cast<size_t>(n) * F, s), proj_, E, F, n, s);
            check(add_inplace(x_.as<float>(), proj_.as<float>(), static_cast<size_t>(n) * E, s), "residual");
        }
        if (logits) {
            const int first = all_logits ? 0 : n - 1, n_out = n - first;
            const float* xlast = x_.as<float>() + static_cast<size_t>(first) * E;
            check(rms_norm(xlast, output_norm_.as<float>(), xn_.as<float>(), n_out, E, d_.rms_eps, s), "rms_norm");
            matmul(output_, gemm_input(xn_, static_cast<size_t>(n_out) * E, s), logits_, d_.n_vocab, E, n_out, s);
            check(cudaMemcpyAsync(logits, logits_.as<void>(), static_cast<size_t>(n_out) * d_.n_vocab * 4,
                                  cudaMemcpyDeviceToHost, s),
                  "download logits");
        }
        check(cudaStreamSynchronize(s), "forward");
    }

    uint64_t device_bytes() const { return bytes_; }

private:
    void alloc(DeviceBuffer& b, size_t bytes) {
        check(b.alloc(bytes), "cudaMalloc");
        bytes_ += bytes;
    }
    void upload_f32(DeviceBuffer& b, const float* src, size_t n) {
        alloc(b, n * 4);
        check(cudaMemcpy(b.as<void>(), src, n * 4, cudaMemcpyHostToDevice), "upload");
    }
    // Matrices in the GEMM's input type: bf16 converted on the device.
    void upload_matrix(DeviceBuffer& b, const float* src, size_t n) {
        if (!bf16_) return upload_f32(b, src, n);
        DeviceBuffer tmp;
        check(tmp.alloc(n * 4), "cudaMalloc");
        check(cudaMemcpy(tmp.as<void>(), src, n * 4, cudaMemcpyHostToDevice), "upload");
        alloc(b, n * 2);
        check(to_bf16(tmp.as<float>(), b.as<__nv_bfloat16>(), n, stream_), "to bf16");
        check(cudaStreamSynchronize(stream_), "to bf16");
    }
    const void* gemm_input(const DeviceBuffer& x, size_t n, cudaStream_t s) {
        if (!bf16_) return x.as<void>();
        check(to_bf16(x.as<float>(), act16_.as<__nv_bfloat16>(), n, s), "to bf16");
        return act16_.as<void>();
    }
    void matmul(const DeviceBuffer& w, const void* x, DeviceBuffer& y, int rows, int cols, int n, cudaStream_t s) {
        std::string why;
        if (!gemm_.run(w.as<void>(), x, y.as<float>(), rows, cols, n, bf16_, s, &why))
            throw Fail{STARKV_ERR_INTERNAL, why};
    }

    starkv_backend_model d_;
    bool bf16_ = false, kv_bf16_ = false;
    cudaStream_t stream_ = nullptr;
    Gemm gemm_;
    uint64_t bytes_ = 0;
    DeviceBuffer tok_embd_, output_norm_, output_, inv_freq_, tokens_;
    DeviceBuffer x_, xn_, q_, k_, v_, attn_, proj_, gate_, up_, logits_, act16_;
    std::vector<Layer> layers_;
};

void set_msg(char* msg, size_t cap, const std::string& s) {
    if (!msg || cap == 0) return;
    std::snprintf(msg, cap, "%s", s.c_str());
}

// Runs fn; a Fail, bad_alloc or anything else becomes a status and message.
template <typename Fn>
int32_t guarded(char* msg, size_t cap, Fn&& fn) noexcept {
    try {
        fn();
        return STARKV_OK;
    } catch (const Fail& f) {
        set_msg(msg, cap, f.message);
        return f.status;
    } catch (const std::bad_alloc&) {
        set_msg(msg, cap, "out of host memory");
        return STARKV_ERR_OUT_OF_MEMORY;
    } catch (...) {
        set_msg(msg, cap, "internal error in the CUDA backend");
        return STARKV_ERR_INTERNAL;
    }
}

int32_t api_probe(int32_t device, char* msg, size_t cap) {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        set_msg(msg, cap, std::string("no CUDA device: ") + cudaGetErrorString(e));
        return STARKV_ERR_NO_DEVICE;
    }
    if (device < 0 || device >= count) {
        set_msg(msg, cap, "no CUDA device " + std::to_string(device) + " (" + std::to_string(count) + " present)");
        return STARKV_ERR_NO_DEVICE;
    }
    return STARKV_OK;
}

int32_t api_create(const starkv_backend_model* d, void** out, char* msg, size_t cap) {
    if (!d || !out || d->struct_size < sizeof(starkv_backend_model)) {
        set_msg(msg, cap, "bad model description");
        return STARKV_ERR_INVALID_ARGUMENT;
    }
    *out = nullptr;
    if (d->head_dim > kMaxHeadDim || d->n_head_kv <= 0 || d->n_head % d->n_head_kv != 0) {
        set_msg(msg, cap, "head_dim " + std::to_string(d->head_dim) + " above " + std::to_string(kMaxHeadDim) +
                              " or bad head counts");
        return STARKV_ERR_UNSUPPORTED;
    }
    return guarded(msg, cap, [&] {
        auto m = std::make_unique<Model>(*d);
        m->create();
        *out = m.release();
    });
}

int32_t api_forward(void* h, const int32_t* tokens, int32_t n, int32_t pos0, int32_t all_logits, float* logits,
                    char* msg, size_t cap) {
    if (!h || !tokens) {
        set_msg(msg, cap, "null handle or tokens");
        return STARKV_ERR_INVALID_ARGUMENT;
    }
    return guarded(msg, cap, [&] { static_cast<Model*>(h)->forward(tokens, n, pos0, all_logits != 0, logits); });
}

uint64_t api_device_bytes(const void* h) { return h ? static_cast<const Model*>(h)->device_bytes() : 0; }

void api_destroy(void* h) { delete static_cast<Model*>(h); }

const starkv_backend_api kApi = {STARKV_BACKEND_ABI_VERSION, sizeof(starkv_backend_api), "cuda", api_probe,
                                 api_create, api_forward, api_device_bytes, api_destroy};

}  // namespace
}  // namespace starkv::cuda

STARKV_CUDA_EXPORT const starkv_backend_api* starkv_cuda_backend_api(void) { return &starkv::cuda::kApi; }
