// libstarkv_cuda: the whole Llama forward pass on one NVIDIA GPU, behind the C
// table of src/backend/backend_api.h. Nothing here throws across the table:
// every entry point catches and returns a status with a one-line message.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "attention.cuh"
#include "backend/backend_api.h"
#include "elementwise.cuh"
#include "gemm.cuh"
#include "latent_attention.cuh"
#include "latent_ops.cuh"
#include "starkv/starkv.h"

#define STARKV_CUDA_EXPORT extern "C" __attribute__((visibility("default")))

namespace starkv::cuda {
namespace {

// Fault injection for tests: while STARKV_CUDA_FAIL_ALLOC_AT=N is set, the N-th
// device or pinned allocation of a create (counted from 1; the count restarts
// at each create) fails as an out-of-memory would, so tests can prove that a
// failed upload frees what it took and leaves the model usable.
std::atomic<int> g_alloc_count{0};
cudaError_t injected_failure() {
    const char* at = std::getenv("STARKV_CUDA_FAIL_ALLOC_AT");  // read each time: tests change it
    if (!at || !*at) return cudaSuccess;
    return ++g_alloc_count == std::atoi(at) ? cudaErrorMemoryAllocation : cudaSuccess;
}

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
        if (cudaError_t e = injected_failure(); e != cudaSuccess) return e;
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

// A layer's weights on the device (shared by every context of the model).
struct Layer {
    DeviceBuffer attn_norm, ffn_norm, wq, wk, wv, wo, w_gate, w_up, w_down;
    // STAR-KV: the stacked projections to every latent ([R][n_embd]: each KV
    // head's key rows, then the value rows), U_h back to back, U_v.
    bool latent = false;
    int R = 0, v_off = 0, v_rank = 0;
    DeviceBuffer lat_a, k_u, v_u, k_off, k_rank;
    // The fused decode kernels' factors (kernels/latent_attention.cuh), when the
    // layer's shape fits them: U_h and U_v in fp16, U_h padded to the 16-rank
    // tile, U_v's rank to a multiple of 128 (zero columns), and where each
    // latent column goes in their caches.
    bool fused = false;
    int v_pad = 0;
    LatentAttnShape shape;  // n_seq, max_keys and paging set per call
    DeviceBuffer k_u16, v_u16, col_head, col_in, k_roff, k_pad;
};

// A context's cache of one layer: keys and values, or the latent cache
// [n_ctx][R] (fp32 whatever kv_dtype says), or the fused kernels' fp16
// latent caches (keys [KV head][cap][pad(rank)], values [cap][v_pad]).
struct LayerCache {
    DeviceBuffer k_cache, v_cache, lat_cache, k16, v16;
    bool fused = false;
};

// A model's weights on one device in one type, uploaded once and shared by its
// contexts (weights_for below).
struct Weights {
    DeviceBuffer tok_embd, output_norm, output;
    std::vector<Layer> layers;
    uint64_t bytes = 0;         // device memory they take
    uint64_t weight_bytes = 0;  // what one decode step reads of them
};

// Live weights by (host embedding table, device, type): the host model is
// immutable and outlives its contexts, so its address names it while any
// context holds the entry; an expired entry is uploaded again.
struct WeightsKey {
    const float* host;
    int32_t device, type;
    bool operator<(const WeightsKey& o) const {
        return host != o.host ? std::less<const float*>()(host, o.host)
                              : device != o.device ? device < o.device : type < o.type;
    }
};
std::mutex g_weights_mu;
std::map<WeightsKey, std::weak_ptr<const Weights>> g_weights;

// Page-locked host memory (async copies, no staging); RAII.
struct PinnedBuffer {
    void* p = nullptr;
    ~PinnedBuffer() { if (p) cudaFreeHost(p); }
    template <typename T> T* as() const { return static_cast<T*>(p); }
};

class Model {
public:
    explicit Model(const starkv_backend_model& d) : d_(d) {}
    ~Model() {
        if (graph_) cudaGraphExecDestroy(graph_);
        if (stream_) cudaStreamDestroy(stream_);
    }

    void create() {
        check(cudaSetDevice(d_.device), "cudaSetDevice");
        check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
        std::string why;
        if (!gemm_.init(32u << 20, &why)) throw Fail{STARKV_ERR_INTERNAL, why};
        if (d_.weight_dtype < STARKV_DTYPE_F32 || d_.weight_dtype > STARKV_DTYPE_F16 ||
            (d_.kv_dtype != STARKV_DTYPE_F32 && d_.kv_dtype != STARKV_DTYPE_BF16))
            throw Fail{STARKV_ERR_UNSUPPORTED, "unsupported weight or KV type"};
        input_ = d_.weight_dtype;
        kv_bf16_ = d_.kv_dtype == STARKV_DTYPE_BF16;
        const size_t E = d_.n_embd, F = d_.n_ff, V = d_.n_vocab, hd = d_.head_dim;
        const size_t qd = d_.n_head * hd, kvd = d_.n_head_kv * hd;
        {
            const WeightsKey key{d_.tok_embd, d_.device, d_.weight_dtype};
            std::lock_guard<std::mutex> lock(g_weights_mu);
            for (auto e = g_weights.begin(); e != g_weights.end();) e = e->second.expired() ? g_weights.erase(e) : std::next(e);
            auto it = g_weights.find(key);
            if (it != g_weights.end()) w_ = it->second.lock();
            if (!w_) {
                w_ = upload_weights();
                g_weights[key] = w_;
            }
        }
        caches_.resize(static_cast<size_t>(d_.n_layer));
        size_t max_r = 0;
        bool rebuilt_keys = false;     // a latent layer on the reference path (keys rebuilt into keys_)
        bool has_plain_layer = false;  // a layer with a plain K/V cache
        const size_t kv_elems = static_cast<size_t>(d_.n_head_kv) * d_.n_ctx * hd;
        // STARKV_CUDA_FUSED_LATENT=0: every latent layer on the reference path (comparisons).
        const char* fe = std::getenv("STARKV_CUDA_FUSED_LATENT");
        const bool want_fused = !(fe && std::strcmp(fe, "0") == 0);
        cap_ = (d_.n_ctx + 63) / 64 * 64;
        for (int l = 0; l < d_.n_layer; ++l) {
            const Layer& L = w_->layers[static_cast<size_t>(l)];
            LayerCache& C = caches_[static_cast<size_t>(l)];
            if (L.latent) {
                max_r = std::max(max_r, static_cast<size_t>(L.R));
                if (want_fused && L.fused) {
                    size_t k_elems = 0;
                    for (int h = 0; h < d_.n_head_kv; ++h) k_elems += latent_rank_pad(L.shape.k_rank[h]);
                    alloc(C.k16, k_elems * cap_ * 2);
                    alloc(C.v16, static_cast<size_t>(cap_) * L.v_pad * 2);
                    // Padding columns are read (times zero columns of U): finite, so zero them once.
                    check(cudaMemset(C.k16.as<void>(), 0, C.k16.bytes()), "cudaMemset");
                    check(cudaMemset(C.v16.as<void>(), 0, C.v16.bytes()), "cudaMemset");
                    C.fused = true;
                    // Every call of a pass: up to kFusedQueries queries, up to cap_ keys.
                    const LatentAttnShape sh = fused_shape(L, std::min(kFusedQueries, d_.max_tokens), cap_);
                    fused_ws_bytes_ = std::max(fused_ws_bytes_, latent_attention_workspace_bound(sh));
                    continue;
                }
                rebuilt_keys = true;
                alloc(C.lat_cache, static_cast<size_t>(d_.n_ctx) * L.R * 4);
                continue;
            }
            has_plain_layer = true;
            const size_t kv_bytes = kv_elems * (kv_bf16_ ? 2 : 4);
            alloc(C.k_cache, kv_bytes);
            alloc(C.v_cache, kv_bytes);
        }
        // The split-K decode kernel's partial sums (plain layers, one token), where it takes the shape.
        if (has_plain_layer) {
            decode_ws_bytes_ = attention_decode_workspace(d_.n_head, d_.n_head_kv, static_cast<int>(hd), d_.n_ctx);
            if (decode_ws_bytes_ > 0) alloc(decode_ws_, decode_ws_bytes_);
        }
        // Keys rebuilt from latents, one layer at a time (reference path only).
        if (rebuilt_keys) alloc(keys_, kv_elems * 4);
        if (max_r > 0) alloc(lat_, static_cast<size_t>(d_.max_tokens) * max_r * 4);
        if (fused_ws_bytes_ > 0) {
            alloc(fused_ws_, fused_ws_bytes_);
            alloc(n_keys_, kFusedQueries * sizeof(int32_t));
            // Every query of a pass reads the one sequence's cache: a page table of one page (0) per query.
            alloc(page_table_, kFusedQueries * sizeof(int32_t));
            check(cudaMemset(page_table_.as<void>(), 0, page_table_.bytes()), "cudaMemset");
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
        alloc(step_, 2 * sizeof(int32_t));
        check(injected_failure(), "cudaMallocHost");
        check(cudaMallocHost(&step_host_.p, 2 * sizeof(int32_t)), "cudaMallocHost");
        check(injected_failure(), "cudaMallocHost");
        check(cudaMallocHost(&logits_host_.p, T * V * 4), "cudaMallocHost");
        const char* g = std::getenv("STARKV_CUDA_GRAPH");
        use_graph_ = !(g && std::strcmp(g, "0") == 0);
        // bf16 copy of whichever activation feeds a GEMM (widest: n_ff).
        alloc(act16_, T * std::max(std::max(E, F), qd) * 2);
        alloc(inv_freq_, static_cast<size_t>(d_.rope_n_dims / 2) * sizeof(double));
        check(cudaMemcpy(inv_freq_.as<void>(), d_.rope_inv_freq, inv_freq_.bytes(), cudaMemcpyHostToDevice),
              "upload rope table");
        d_.layers = nullptr;  // host pointers are not kept past create
    }

    // Every matrix and vector of the model on the device (once per model).
    std::shared_ptr<const Weights> upload_weights() {
        auto w = std::make_shared<Weights>();
        // alloc() and the uploads count into the weights while they are built.
        struct Counting {
            Model& m;
            ~Counting() { m.count_ = &m.bytes_, m.wcount_ = &m.weight_bytes_unused_; }
        } counting{*this};
        count_ = &w->bytes;
        wcount_ = &w->weight_bytes;
        const size_t E = d_.n_embd, F = d_.n_ff, V = d_.n_vocab, hd = d_.head_dim;
        const size_t qd = d_.n_head * hd, kvd = d_.n_head_kv * hd;
        upload_f32(w->tok_embd, d_.tok_embd, V * E);
        upload_f32(w->output_norm, d_.output_norm, E);
        upload_matrix(w->output, d_.output, V * E);
        w->layers.resize(static_cast<size_t>(d_.n_layer));
        for (int l = 0; l < d_.n_layer; ++l) {
            const starkv_backend_layer& s = d_.layers[l];
            Layer& L = w->layers[static_cast<size_t>(l)];
            upload_f32(L.attn_norm, s.attn_norm, E);
            upload_f32(L.ffn_norm, s.ffn_norm, E);
            upload_matrix(L.wq, s.wq, qd * E);
            upload_matrix(L.wo, s.wo, E * qd);
            upload_matrix(L.w_gate, s.w_gate, F * E);
            upload_matrix(L.w_up, s.w_up, F * E);
            upload_matrix(L.w_down, s.w_down, E * F);
            if (s.k_rank) {
                upload_latent(L, s);
                continue;
            }
            upload_matrix(L.wk, s.wk, kvd * E);
            upload_matrix(L.wv, s.wv, kvd * E);
        }
        return w;
    }

    void forward(const int32_t* tokens, int n, int pos0, bool all_logits, float* logits) {
        if (n <= 0 || n > d_.max_tokens || pos0 < 0 || pos0 + n > d_.n_ctx)
            throw Fail{STARKV_ERR_INVALID_ARGUMENT, "tokens outside the device buffers"};
        cudaStream_t s = stream_;
        check(cudaSetDevice(d_.device), "cudaSetDevice");
        const size_t V = static_cast<size_t>(d_.n_vocab);
        size_t n_out = 0;
        if (n == 1 && use_graph_) {
            // Decode: the token and position go to device memory, then one
            // launch replays the whole step captured on the first call.
            step_host_.as<int32_t>()[0] = tokens[0];
            step_host_.as<int32_t>()[1] = pos0;
            check(cudaMemcpyAsync(step_.as<void>(), step_host_.p, 2 * sizeof(int32_t), cudaMemcpyHostToDevice, s),
                  "upload step");
            if (!graph_) capture_decode();
            check(cudaGraphLaunch(graph_, s), "cudaGraphLaunch");
            n_out = logits ? 1 : 0;
        } else {
            check(cudaMemcpyAsync(tokens_.as<void>(), tokens, n * sizeof(int32_t), cudaMemcpyHostToDevice, s),
                  "upload tokens");
            const int first = all_logits ? 0 : n - 1;
            enqueue(tokens_.as<int32_t>(), n, pos0, nullptr, first, logits != nullptr);
            n_out = logits ? static_cast<size_t>(n - first) : 0;
        }
        if (n_out)
            check(cudaMemcpyAsync(logits_host_.p, logits_.as<void>(), n_out * V * 4, cudaMemcpyDeviceToHost, s),
                  "download logits");
        check(cudaStreamSynchronize(s), "forward");
        if (n_out) std::memcpy(logits, logits_host_.p, n_out * V * 4);
    }

    // The weights count in every context that shares them.
    uint64_t device_bytes() const { return bytes_ + (w_ ? w_->bytes : 0); }
    uint64_t weight_bytes() const { return w_ ? w_->weight_bytes : 0; }

private:
    // The decode step (one token, position and token read from step_) as a
    // CUDA graph: ~15 launches per layer become one.
    void capture_decode() {
        check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
        try {
            enqueue(step_.as<int32_t>(), 1, 0, step_.as<int32_t>() + 1, 0, true);
        } catch (...) {
            cudaGraph_t g = nullptr;
            cudaStreamEndCapture(stream_, &g);
            if (g) cudaGraphDestroy(g);
            throw;
        }
        cudaGraph_t g = nullptr;
        check(cudaStreamEndCapture(stream_, &g), "cudaStreamEndCapture");
        const cudaError_t e = cudaGraphInstantiate(&graph_, g, 0);
        cudaGraphDestroy(g);
        check(e, "cudaGraphInstantiate");
    }

    // The forward pass of n tokens at pos0 (or *pos_dev) on the stream; with
    // head, logits of tokens first.. into logits_. No host synchronisation.
    void enqueue(const int32_t* tokens_dev, int n, int pos0, const int32_t* pos_dev, int first, bool head) {
        const int E = d_.n_embd, F = d_.n_ff, hd = d_.head_dim;
        const int qd = d_.n_head * hd, kvd = d_.n_head_kv * hd;
        cudaStream_t s = stream_;
        check(embed_gather(w_->tok_embd.as<float>(), tokens_dev, n, E, x_.as<float>(), s), "embed");
        const bool half = d_.rope_layout == STARKV_ROPE_HALF_SPLIT;
        const double* inv_freq = inv_freq_.as<double>();
        for (int l = 0; l < d_.n_layer; ++l) {
            const Layer& L = w_->layers[static_cast<size_t>(l)];
            LayerCache& C = caches_[static_cast<size_t>(l)];
            check(rms_norm(x_.as<float>(), L.attn_norm.as<float>(), xn_.as<float>(), n, E, d_.rms_eps, s), "rms_norm");
            const void* xin = gemm_input(xn_, static_cast<size_t>(n) * E, s);
            matmul(L.wq, xin, q_, qd, E, n, s);
            check(rope(q_.as<float>(), n, d_.n_head, hd, qd, d_.rope_n_dims, inv_freq, half, pos0, s, pos_dev),
                  "rope q");
            if (L.latent && C.fused) {
                matmul(L.lat_a, xin, lat_, L.R, E, n, s);
                fused_latent_attention(L, C, n, pos0, pos_dev, s);
            } else if (L.latent) {
                matmul(L.lat_a, xin, lat_, L.R, E, n, s);
                check(latent_store(lat_.as<float>(), C.lat_cache.as<float>(), n, L.R, d_.n_ctx, pos0, pos_dev, s),
                      "latent store");
                check(latent_keys(C.lat_cache.as<float>(), L.R, L.k_u.as<float>(), L.k_off.as<int32_t>(),
                                  L.k_rank.as<int32_t>(), d_.n_head_kv, hd, d_.rope_n_dims, inv_freq, half,
                                  keys_.as<float>(), d_.n_ctx, n, pos0, pos_dev, s),
                      "latent keys");
                check(latent_attention_ref(q_.as<float>(), keys_.as<float>(), C.lat_cache.as<float>(), L.R, L.v_off,
                                           L.v_rank, L.v_u.as<float>(), attn_.as<float>(), n, d_.n_head,
                                           d_.n_head_kv, hd, d_.n_ctx, pos0, pos_dev, s),
                      "latent attention");
            } else {
                matmul(L.wk, xin, k_, kvd, E, n, s);
                matmul(L.wv, xin, v_, kvd, E, n, s);
                check(rope(k_.as<float>(), n, d_.n_head_kv, hd, kvd, d_.rope_n_dims, inv_freq, half, pos0, s, pos_dev),
                      "rope k");
                if (kv_bf16_)
                    plain_attention(C.k_cache.as<__nv_bfloat16>(), C.v_cache.as<__nv_bfloat16>(), n, pos0, pos_dev, s);
                else
                    plain_attention(C.k_cache.as<float>(), C.v_cache.as<float>(), n, pos0, pos_dev, s);
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
        if (!head) return;
        const int n_out = n - first;
        const float* xlast = x_.as<float>() + static_cast<size_t>(first) * E;
        check(rms_norm(xlast, w_->output_norm.as<float>(), xn_.as<float>(), n_out, E, d_.rms_eps, s), "rms_norm");
        matmul(w_->output, gemm_input(xn_, static_cast<size_t>(n_out) * E, s), logits_, d_.n_vocab, E, n_out, s);
    }

    // The tokens' keys and values (k_, v_) into the layer's cache, then their
    // attention: one token (a decode step) by the split-K decode kernel where
    // it takes the shape, else the kernel for any pass.
    template <typename T>
    void plain_attention(T* kc, T* vc, int n, int pos0, const int32_t* pos_dev, cudaStream_t s) {
        const int hd = d_.head_dim;
        check(kv_store(k_.as<float>(), kc, n, d_.n_head_kv, hd, d_.n_ctx, pos0, s, pos_dev), "kv k");
        check(kv_store(v_.as<float>(), vc, n, d_.n_head_kv, hd, d_.n_ctx, pos0, s, pos_dev), "kv v");
        if (n == 1 && decode_ws_bytes_ > 0)
            check(attention_decode(q_.as<float>(), kc, vc, attn_.as<float>(), d_.n_head, d_.n_head_kv, hd, d_.n_ctx,
                                   pos0, pos_dev, decode_ws_.as<void>(), decode_ws_bytes_, s),
                  "attention");
        else
            check(attention(q_.as<float>(), kc, vc, attn_.as<float>(), n, d_.n_head, d_.n_head_kv, hd, d_.n_ctx, pos0,
                            s, pos_dev),
                  "attention");
    }

    // The fused kernels' shape of a layer for m query tokens over a cache of cap
    // positions (one page; kernels/latent_attention.cuh).
    static LatentAttnShape fused_shape(const Layer& L, int m, int cap) {
        LatentAttnShape sh = L.shape;
        sh.n_seq = m;
        sh.max_keys = cap;
        sh.page_rows = cap;
        sh.pages_per_seq = 1;
        return sh;
    }

    // Attention of n tokens at pos0 (or *pos_dev) over a fused layer: their
    // latents go to the fp16 caches, then each query token is one "sequence"
    // of the decode kernels (n_keys = its position + 1: causal), all reading
    // the same cache through a one-page table, kFusedQueries at a time.
    void fused_latent_attention(const Layer& L, LayerCache& C, int n, int pos0, const int32_t* pos_dev,
                                cudaStream_t s) {
        const size_t qd = static_cast<size_t>(d_.n_head) * d_.head_dim;
        check(latent_store_f16(lat_.as<float>(), n, L.R, L.col_head.as<int32_t>(), L.col_in.as<int32_t>(),
                               L.k_roff.as<int32_t>(), L.k_pad.as<int32_t>(), L.v_off, L.v_pad, C.k16.as<__half>(),
                               C.v16.as<__half>(), cap_, pos0, pos_dev, s),
              "latent store");
        LatentAttnArgs a;
        a.k_lat = C.k16.as<void>();
        a.k_u = L.k_u16.as<void>();
        a.v_lat = C.v16.as<void>();
        a.v_u = L.v_u16.as<void>();
        a.n_keys = n_keys_.as<int32_t>();
        a.inv_freq = inv_freq_.as<double>();
        a.page_table = page_table_.as<int32_t>();
        a.scale = 1.0f / std::sqrt(static_cast<float>(d_.head_dim));
        for (int q0 = 0; q0 < n; q0 += kFusedQueries) {
            const int m = std::min(kFusedQueries, n - q0);
            // A captured decode step does not know the position: it covers the whole cache (blocks
            // past a query's keys return at once).
            LatentAttnShape sh = fused_shape(L, m, cap_);
            if (!pos_dev) sh.max_keys = pos0 + q0 + m;
            check(causal_key_counts(n_keys_.as<int32_t>(), m, q0, pos0, pos_dev, s), "key counts");
            a.q = q_.as<float>() + q0 * qd;
            a.out = attn_.as<float>() + q0 * qd;
            check(latent_attention(sh, a, fused_ws_.as<void>(), fused_ws_.bytes(), s), "fused latent attention");
        }
    }

    // The fused kernels' fp16 factors and column maps of a latent layer whose
    // shape they take (else L.fused stays false and the reference path runs).
    void upload_fused(Layer& L, const starkv_backend_layer& s, const std::vector<int32_t>& off,
                      const std::vector<int32_t>& rank) {
        const int n_kv = d_.n_head_kv, hd = d_.head_dim;
        if (n_kv > kLatMaxKvHeads) return;  // LatentAttnShape::k_rank's size; the rest is the kernels' check below
        LatentAttnShape sh;
        sh.n_head = d_.n_head;
        sh.n_kv = n_kv;
        sh.head_dim = hd;
        sh.rope_dims = d_.rope_n_dims;
        sh.rope_half_split = d_.rope_layout == STARKV_ROPE_HALF_SPLIT;
        sh.v_rank = (s.v_rank + 127) / 128 * 128;
        sh.format = LatentFormat::F16;
        // The small-batch single pass (latent_decode_small.cuh) only with STARKV_CUDA_LATENT_SMALL=1
        // until it has run on a GPU (docs/perf/attention.md, v19); otherwise the five-launch kernels
        // at every batch.
        const char* sb = std::getenv("STARKV_CUDA_LATENT_SMALL");
        if (!sb || std::strcmp(sb, "1") != 0) sh.small_batch_max = 0;
        for (int h = 0; h < n_kv; ++h) sh.k_rank[h] = rank[h];
        L.shape = sh;
        if (latent_attention_workspace(fused_shape(L, 1, 64)) == 0) return;  // a limit of the kernels
        L.v_pad = sh.v_rank;
        std::vector<int32_t> roff(n_kv), pad(n_kv), col_head(L.R, -1), col_in(L.R, 0);
        int sum = 0;
        for (int h = 0; h < n_kv; ++h) {
            roff[h] = sum;
            pad[h] = latent_rank_pad(rank[h]);
            sum += pad[h];
            for (int c = 0; c < rank[h]; ++c) col_head[off[h] + c] = h, col_in[off[h] + c] = c;
        }
        std::vector<__half> ku(static_cast<size_t>(sum) * hd, __float2half_rn(0.0f));
        for (int h = 0; h < n_kv; ++h)
            for (int d = 0; d < hd; ++d)
                for (int c = 0; c < rank[h]; ++c)
                    ku[static_cast<size_t>(hd) * roff[h] + static_cast<size_t>(d) * pad[h] + c] =
                        __float2half_rn(s.k_u[h][static_cast<size_t>(d) * rank[h] + c]);
        const size_t vrows = static_cast<size_t>(n_kv) * hd;
        std::vector<__half> vu(vrows * L.v_pad, __float2half_rn(0.0f));
        for (size_t r = 0; r < vrows; ++r)
            for (int c = 0; c < s.v_rank; ++c)
                vu[r * L.v_pad + c] = __float2half_rn(s.v_u[r * s.v_rank + c]);
        auto upload = [&](DeviceBuffer& b, const void* src, size_t bytes) {
            alloc(b, bytes);
            check(cudaMemcpy(b.as<void>(), src, bytes, cudaMemcpyHostToDevice), "upload");
        };
        upload(L.k_u16, ku.data(), ku.size() * 2);
        upload(L.v_u16, vu.data(), vu.size() * 2);
        upload(L.col_head, col_head.data(), col_head.size() * 4);
        upload(L.col_in, col_in.data(), col_in.size() * 4);
        upload(L.k_roff, roff.data(), roff.size() * 4);
        upload(L.k_pad, pad.data(), pad.size() * 4);
        L.fused = true;
    }

    // A STAR-KV layer's factors: A's stacked so one GEMM gives every latent.
    void upload_latent(Layer& L, const starkv_backend_layer& s) {
        const int n_kv = d_.n_head_kv, hd = d_.head_dim;
        const size_t E = static_cast<size_t>(d_.n_embd);
        std::vector<int32_t> off(static_cast<size_t>(n_kv)), rank(s.k_rank, s.k_rank + n_kv);
        int R = 0;
        for (int h = 0; h < n_kv; ++h) {
            if (rank[h] <= 0 || rank[h] > d_.n_embd) throw Fail{STARKV_ERR_INVALID_ARGUMENT, "bad key latent rank"};
            off[h] = R;
            R += rank[h];
        }
        if (s.v_rank <= 0 || s.v_rank > d_.n_embd) throw Fail{STARKV_ERR_INVALID_ARGUMENT, "bad value latent rank"};
        L.latent = true;
        L.v_off = R;
        L.v_rank = s.v_rank;
        L.R = R + s.v_rank;
        std::vector<float> a(static_cast<size_t>(L.R) * E), u(static_cast<size_t>(hd) * R);
        for (int h = 0; h < n_kv; ++h) {
            std::memcpy(&a[off[h] * E], s.k_a[h], rank[h] * E * 4);
            std::memcpy(&u[static_cast<size_t>(hd) * off[h]], s.k_u[h], static_cast<size_t>(hd) * rank[h] * 4);
        }
        std::memcpy(&a[static_cast<size_t>(R) * E], s.v_a, static_cast<size_t>(s.v_rank) * E * 4);
        upload_matrix(L.lat_a, a.data(), a.size());
        upload_f32(L.k_u, u.data(), u.size());
        upload_f32(L.v_u, s.v_u, static_cast<size_t>(n_kv) * hd * s.v_rank);
        *wcount_ += L.k_u.bytes() + L.v_u.bytes();
        alloc(L.k_off, off.size() * 4);
        check(cudaMemcpy(L.k_off.as<void>(), off.data(), off.size() * 4, cudaMemcpyHostToDevice), "upload");
        alloc(L.k_rank, rank.size() * 4);
        check(cudaMemcpy(L.k_rank.as<void>(), rank.data(), rank.size() * 4, cudaMemcpyHostToDevice), "upload");
        upload_fused(L, s, off, rank);
    }

    void alloc(DeviceBuffer& b, size_t bytes) {
        check(b.alloc(bytes), "cudaMalloc");
        *count_ += bytes;
    }
    void upload_f32(DeviceBuffer& b, const float* src, size_t n) {
        alloc(b, n * 4);
        check(cudaMemcpy(b.as<void>(), src, n * 4, cudaMemcpyHostToDevice), "upload");
    }
    // 16-bit conversion of n floats into out (the GEMM's input type).
    cudaError_t to_half_type(const float* x, void* out, size_t n, cudaStream_t s) const {
        return input_ == kGemmBf16 ? to_bf16(x, static_cast<__nv_bfloat16*>(out), n, s)
                                   : to_f16(x, static_cast<__half*>(out), n, s);
    }
    // Matrices in the GEMM's input type: bf16 / fp16 converted on the device.
    void upload_matrix(DeviceBuffer& b, const float* src, size_t n) {
        *wcount_ += n * (input_ == kGemmF32 ? 4 : 2);
        if (input_ == kGemmF32) return upload_f32(b, src, n);
        DeviceBuffer tmp;
        check(tmp.alloc(n * 4), "cudaMalloc");
        check(cudaMemcpy(tmp.as<void>(), src, n * 4, cudaMemcpyHostToDevice), "upload");
        alloc(b, n * 2);
        check(to_half_type(tmp.as<float>(), b.as<void>(), n, stream_), "to 16 bits");
        check(cudaStreamSynchronize(stream_), "to 16 bits");
    }
    const void* gemm_input(const DeviceBuffer& x, size_t n, cudaStream_t s) {
        if (input_ == kGemmF32) return x.as<void>();
        check(to_half_type(x.as<float>(), act16_.as<void>(), n, s), "to 16 bits");
        return act16_.as<void>();
    }
    void matmul(const DeviceBuffer& w, const void* x, DeviceBuffer& y, int rows, int cols, int n, cudaStream_t s) {
        std::string why;
        if (!gemm_.run(w.as<void>(), x, y.as<float>(), rows, cols, n, input_, s, &why))
            throw Fail{STARKV_ERR_INTERNAL, why};
    }

    static constexpr int kFusedQueries = 16;  // query tokens per fused attention call (a prefill's chunk)

    starkv_backend_model d_;
    int cap_ = 0;                 // positions of the fused caches: n_ctx rounded up to the 64-key tile
    size_t fused_ws_bytes_ = 0;   // the fused kernels' workspace (0: no fused layer)
    size_t decode_ws_bytes_ = 0;  // the split-K decode kernel's (0: the shape is not one it takes)
    DeviceBuffer decode_ws_;
    DeviceBuffer fused_ws_, n_keys_, page_table_;
    int input_ = kGemmF32;  // weights' and GEMM activations' type
    bool kv_bf16_ = false, use_graph_ = true;
    cudaStream_t stream_ = nullptr;  // one per context: contexts on one device overlap
    cudaGraphExec_t graph_ = nullptr;
    Gemm gemm_;
    uint64_t bytes_ = 0;                      // this context's own device memory
    uint64_t* count_ = &bytes_;               // where alloc() counts (the weights' total while uploading them)
    uint64_t weight_bytes_unused_ = 0;
    uint64_t* wcount_ = &weight_bytes_unused_;
    std::shared_ptr<const Weights> w_;        // shared with the model's other contexts on this device
    std::vector<LayerCache> caches_;
    DeviceBuffer inv_freq_, tokens_;
    DeviceBuffer x_, xn_, q_, k_, v_, attn_, proj_, gate_, up_, logits_, act16_, keys_, lat_, step_;
    PinnedBuffer step_host_, logits_host_;
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
    g_alloc_count = 0;
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

uint64_t api_weight_bytes(const void* h) { return h ? static_cast<const Model*>(h)->weight_bytes() : 0; }

// 256 MiB copied 10 times between two buffers, timed with events.
int32_t api_copy_bandwidth(int32_t device, double* out, char* msg, size_t cap) {
    if (!out) {
        set_msg(msg, cap, "null output");
        return STARKV_ERR_INVALID_ARGUMENT;
    }
    *out = 0;
    if (int32_t st = api_probe(device, msg, cap); st != STARKV_OK) return st;
    return guarded(msg, cap, [&] {
        check(cudaSetDevice(device), "cudaSetDevice");
        const size_t bytes = 256u << 20;
        const int reps = 10;
        DeviceBuffer a, b;
        check(a.alloc(bytes), "cudaMalloc");
        check(b.alloc(bytes), "cudaMalloc");
        check(cudaMemset(a.as<void>(), 0, bytes), "cudaMemset");
        check(cudaMemcpy(b.as<void>(), a.as<void>(), bytes, cudaMemcpyDeviceToDevice), "warm-up copy");
        cudaEvent_t e0 = nullptr, e1 = nullptr;
        check(cudaEventCreate(&e0), "cudaEventCreate");
        check(cudaEventCreate(&e1), "cudaEventCreate");
        cudaEventRecord(e0);
        for (int i = 0; i < reps; ++i) cudaMemcpyAsync(b.as<void>(), a.as<void>(), bytes, cudaMemcpyDeviceToDevice);
        cudaEventRecord(e1);
        const cudaError_t e = cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
        check(e, "copy");
        *out = 2.0 * bytes * reps / (ms * 1e-3);
    });
}

const starkv_backend_api kApi = {STARKV_BACKEND_ABI_VERSION, sizeof(starkv_backend_api), "cuda", api_probe,
                                 api_create, api_forward, api_device_bytes, api_destroy, api_weight_bytes,
                                 api_copy_bandwidth};

}  // namespace
}  // namespace starkv::cuda

STARKV_CUDA_EXPORT const starkv_backend_api* starkv_cuda_backend_api(void) { return &starkv::cuda::kApi; }
